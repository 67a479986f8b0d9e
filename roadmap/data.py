"""数据：找到数据目录、下载（进度条 + 校验和 + 原子写入）、读取官方文件格式、自带样本。

查找顺序：`--data-dir`，然后 `$ROADMAP_DATA_DIR`，然后仓库下的 `data/` 缓存。
在每个根目录下先找 `<根>/<数据集名>/`，再找 `<根>/` 本身（`--data-dir` 直接指向数据集文件夹也行）。
都找不到时，联网的机器从官方地址下载到 `data/<数据集名>/`；离线时报错，错误信息写明期望的路径、
下载地址和 `--smoke`。

`data/samples/` 是本项目自己生成的小样本，格式与官方文件相同，所以同一个读取函数既读样本也读真实数据。
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / "data"
SAMPLES_DIR = CACHE_DIR / "samples"
ENV_VAR = "ROADMAP_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the data roots and could not be downloaded."""


class ChecksumError(ValueError):
    """A downloaded file's checksum differs from the expected one."""


class DataFormatError(ValueError):
    """A file is not in the format its reader expects (wrong magic number, truncated body, ...)."""


# ---------------------------------------------------------------- 数据目录


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the folders to search, in order: `data_dir`, `$ROADMAP_DATA_DIR`, the `data/` cache."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(CACHE_DIR)
    return roots


def _has_files(folder: Path, filenames: Sequence[str]) -> bool:
    return all((folder / name).is_file() for name in filenames)


@dataclass(frozen=True)
class Archive:
    """A compressed archive (.tar.gz or .zip) that contains the dataset's files."""

    url: str
    checksum: str | None = None
    algorithm: str = "md5"


def find_dataset(
    name: str,
    filenames: Sequence[str],
    data_dir: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    urls: Mapping[str, str] | None = None,
    checksums: Mapping[str, str] | None = None,
    checksum_algorithm: str = "sha256",
    archive: Archive | None = None,
    subdir: str = "",
    hint: str = "",
) -> Path:
    """Return the folder that contains every file in `filenames` for dataset `name`.

    Searches `<root>/<name>/<subdir>/` and `<root>/<subdir>/` for each root of `data_roots(data_dir)`.
    When none has the files, downloads them into `data/<name>/`: each missing file from
    `urls[filename]` or `base_url + filename` (checked against `checksums`), or the whole `archive`,
    which is extracted there. Raises DataNotFoundError when the files are not found and cannot be
    downloaded; `hint` is appended to its message (for example the `kaggle` command that fetches
    the data).
    """
    roots = data_roots(data_dir)
    for root in roots:
        for folder in (root / name / subdir, root / subdir):
            if _has_files(folder, filenames):
                return folder

    target = CACHE_DIR / name
    expected = "\n".join(f"  - {root / name / subdir}（或 {root / subdir}）" for root in roots)
    files = ", ".join(filenames)
    sources = [archive.url] if archive else [(urls or {}).get(f) or (base_url or "") + f for f in filenames]
    if archive is None and base_url is None and not urls:
        raise DataNotFoundError(
            f"找不到数据集 {name}（需要文件：{files}）。已查找：\n{expected}\n"
            f"请把数据放到上面任一位置，或用 --data-dir / ${ENV_VAR} 指定；只想先跑通流程请加 --smoke。{hint}"
        )
    target_existed = target.exists()
    try:
        if archive is not None:
            download_and_extract(archive, target)
        else:
            for filename in filenames:
                if not (target / subdir / filename).is_file():
                    url = (urls or {}).get(filename) or f"{base_url}{filename}"
                    expected_hash = (checksums or {}).get(filename)
                    options = {checksum_algorithm: expected_hash} if expected_hash else {}
                    download(url, target / subdir / filename, **options)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        if not target_existed:
            shutil.rmtree(target, ignore_errors=True)  # 不在缓存里留下空文件夹
        raise DataNotFoundError(
            f"找不到数据集 {name}（需要文件：{files}），下载也失败了：{error}。\n已查找：\n{expected}\n"
            f"下载地址：{', '.join(sources)}\n离线时请把文件放到上面任一位置（或用 --data-dir / ${ENV_VAR} 指定），"
            f"只想先跑通流程请加 --smoke。{hint}"
        ) from error
    if not _has_files(target / subdir, filenames):
        raise DataNotFoundError(f"{sources[0]} 下载解压后，{target / subdir} 里仍缺少文件：{files}")
    return target / subdir


# ---------------------------------------------------------------- 下载


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             timeout: float = 30.0) -> Path:
    """Download `url` to `destination` with a progress bar, check its hash, then move it into place.

    The body goes to a temp file in the destination folder, which is renamed to `destination` only
    after the whole body arrived and its hash matched. An interrupted or corrupted download leaves
    neither a partial file nor a temp file behind. Raises ChecksumError on a hash mismatch and
    urllib.error.URLError / OSError when the download fails.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    temp_path = Path(temp_name)
    logger.info("下载 %s -> %s", url, destination)
    try:
        with os.fdopen(descriptor, "wb") as output, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as progress:
                for block in iter(lambda: response.read(1 << 16), b""):
                    output.write(block)
                    progress.update(len(block))
            if total is not None and output.tell() != total:
                raise OSError(f"下载不完整：{url} 只收到 {output.tell()} / {total} 字节")
        for algorithm, expected in (("sha256", sha256), ("md5", md5)):
            if expected is not None:
                actual = file_hash(temp_path, algorithm)
                if actual != expected.lower():
                    raise ChecksumError(
                        f"{destination.name} 的 {algorithm} 校验失败：期望 {expected}，实际 {actual}。"
                        f"文件可能损坏或被篡改，已删除；请重试，或从 {url} 手动下载后核对。"
                    )
        temp_path.replace(destination)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return destination


def download_and_extract(archive: Archive, target: Path) -> None:
    """Download `archive` next to `target`, check it, extract it into `target`, then delete it.

    Extraction goes into a temp folder that is renamed into place, so an interrupted extraction
    leaves no half-filled `target`. Tar members that would land outside the folder are rejected
    (the "data" extraction filter of the standard library).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    archive_name = archive.url.rsplit("/", 1)[-1]
    archive_path = target.parent / archive_name
    options = {archive.algorithm: archive.checksum} if archive.checksum else {}
    download(archive.url, archive_path, **options)
    temp_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        if archive_name.endswith(".zip"):
            with zipfile.ZipFile(archive_path) as zipped:
                for member in zipped.namelist():
                    if Path(member).is_absolute() or ".." in Path(member).parts:
                        raise DataFormatError(f"{archive_name} 里有不安全的路径：{member}")
                zipped.extractall(temp_dir)
        else:
            with tarfile.open(archive_path) as tar:
                tar.extractall(temp_dir, filter="data")
        for item in temp_dir.iterdir():
            destination = target / item.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            target.mkdir(parents=True, exist_ok=True)
            item.rename(destination)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        archive_path.unlink(missing_ok=True)


# ---------------------------------------------------------------- IDX 格式（MNIST）

# IDX 头部第 3 个字节是数据类型，值都按大端序存储。
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in .gz) into a numpy array.

    Layout: 2 zero bytes, a type byte, a byte with the number of dimensions, one big-endian
    uint32 per dimension, then the values. Raises DataFormatError on a wrong magic number, an
    unknown type, or a body shorter or longer than the dimensions give.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as error:  # gzip 截断时抛 EOFError，坏的 gzip 头抛 BadGzipFile(OSError)
        raise DataFormatError(f"{path} 读取失败（文件可能损坏或下载不完整）：{error}") from error

    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in IDX_DTYPES:
        raise DataFormatError(f"{path} 不是 IDX 文件：magic number 为 {content[:4].hex() or '(空)'}，"
                              "应为 0000 + 类型字节 + 维数，例如图片 00000803、标签 00000801")
    dtype = IDX_DTYPES[content[2]]
    ndim = content[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(content) < header_size:
        raise DataFormatError(f"{path} 的 IDX 头部不完整：维数 {ndim}，文件只有 {len(content)} 字节")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(content) - header_size
    if body != expected:
        problem = "被截断" if body < expected else "末尾有多余数据"
        raise DataFormatError(f"{path} {problem}：形状 {shape} 需要 {expected} 字节数据，实际 {body} 字节")
    return np.frombuffer(content, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzip-compressed when the name ends in .gz)."""
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX 不支持的 dtype：{array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as stream:
        stream.write(header + body)


# ---------------------------------------------------------------- MNIST

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# 官方 gzip 文件的 MD5（与 torchvision.datasets.MNIST 使用的校验值相同）。
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, *, smoke: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return MNIST `split` ("train" or "test") as (images uint8 [N, 28, 28], labels int64 [N]).

    With `smoke=True` it reads the project's own digit samples in `data/samples/mnist/`.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split 只能是 'train' 或 'test'，收到 {split!r}")
    filenames = MNIST_FILES[split]
    if smoke:
        folder = SAMPLES_DIR / "mnist"
    else:
        folder = find_dataset("mnist", filenames, data_dir, base_url=MNIST_URL, checksums=MNIST_MD5,
                              checksum_algorithm="md5")
    images = read_idx(folder / filenames[0])
    labels = read_idx(folder / filenames[1]).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(f"MNIST {split} 的格式不对：图片 {images.shape} {images.dtype}，标签 {labels.shape}；"
                              "应为 uint8 (N, 28, 28) 和 (N,)")
    if len(images) != len(labels):
        raise DataFormatError(f"MNIST {split} 的图片数 {len(images)} 与标签数 {len(labels)} 不一致")
    if len(labels) == 0:
        raise DataFormatError(f"MNIST {split} 是空的")
    if labels.min() < 0 or labels.max() > 9:
        raise DataFormatError(f"MNIST {split} 的标签应在 0-9 之间，实际范围 {labels.min()}..{labels.max()}")
    return images, labels


# ---------------------------------------------------------------- CIFAR-10

CIFAR10_ARCHIVE = Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          checksum="c58f30108f718f92721af3b95e74349a")  # 官方 MD5，torchvision 用的也是它
CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pickle

    try:
        with open(path, "rb") as stream:
            batch = pickle.load(stream, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataFormatError(f"{path} 不是 CIFAR-10 的 python 批次文件：{error}") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataFormatError(f"{path} 缺少 b'data' 或 b'labels' 键")
    images = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DataFormatError(f"{path} 的形状不对：data {images.shape}，labels {labels.shape}；应为 (N, 3072) 和 (N,)")
    # 每行 3072 个字节：先 1024 个 R，再 1024 个 G、1024 个 B，每个通道按行优先存 32x32。
    return images.reshape(-1, 3, 32, 32), labels


def load_cifar10(split: str, data_dir: str | os.PathLike | None = None, *, smoke: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return CIFAR-10 `split` as (images uint8 [N, 3, 32, 32], labels int64 [N]) from the python batches.

    "train" concatenates every `data_batch_1..5` that is present (the official download has all
    five, 50,000 images); "test" reads `test_batch`. `smoke=True` reads the project's own samples.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split 只能是 'train' 或 'test'，收到 {split!r}")
    required = ("batches.meta", "data_batch_1", "test_batch")
    if smoke:
        folder = SAMPLES_DIR / "cifar10" / CIFAR10_SUBDIR
    else:
        folder = find_dataset("cifar10", required, data_dir, archive=CIFAR10_ARCHIVE, subdir=CIFAR10_SUBDIR)
    if split == "test":
        return _read_cifar_batch(folder / "test_batch")
    parts = [_read_cifar_batch(folder / f"data_batch_{index}") for index in range(1, 6)
             if (folder / f"data_batch_{index}").is_file()]
    return np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])


# ---------------------------------------------------------------- AG News

AG_NEWS_URLS = {  # torchtext 用过的地址和 MD5
    "train.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/train.csv",
    "test.csv": "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
}
AG_NEWS_MD5 = {"train.csv": "b1a00f826fdfbd249f79597b59e1dc12", "test.csv": "d52ea96a97a2d943681189a97654912d"}
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")


def load_ag_news(split: str, data_dir: str | os.PathLike | None = None, *, smoke: bool = False
                 ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Return AG News `split` as (texts, labels 0-3, class names).

    The official CSV has no header: class index 1-4, title, description. The text is
    "title description" with the escaped line breaks and `#39;`-style entities of the original
    crawl left as they are.
    """
    import csv

    if split not in ("train", "test"):
        raise ValueError(f"split 只能是 'train' 或 'test'，收到 {split!r}")
    filename = f"{split}.csv"
    if smoke:
        folder = SAMPLES_DIR / "ag_news"
    else:
        folder = find_dataset("ag_news", (filename,), data_dir, urls=AG_NEWS_URLS, checksums=AG_NEWS_MD5,
                              checksum_algorithm="md5")
    texts, labels = [], []
    with open(folder / filename, encoding="utf-8", newline="") as stream:
        for line_number, row in enumerate(csv.reader(stream), start=1):
            if len(row) < 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= 4:
                raise DataFormatError(f"{folder / filename} 第 {line_number} 行格式不对：应为 \"类别1-4\",\"标题\",\"正文\"，"
                                      f"实际是 {row[:3]}")
            texts.append(" ".join(part.strip() for part in row[1:] if part.strip()))
            labels.append(int(row[0]) - 1)
    if not texts:
        raise DataFormatError(f"{folder / filename} 是空的")
    classes = AG_NEWS_CLASSES
    if (folder / "classes.txt").is_file():
        classes = tuple(line.strip() for line in (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
                        if line.strip())
    return texts, np.asarray(labels, dtype=np.int64), classes


# ---------------------------------------------------------------- 航空乘客时间序列

AIRLINE_URL = "https://raw.githubusercontent.com/jbrownlee/Datasets/master/airline-passengers.csv"


def load_airline_passengers(data_dir: str | os.PathLike | None = None, *, smoke: bool = False
                            ) -> tuple[list[str], np.ndarray]:
    """Return the monthly airline-passenger totals (Box and Jenkins, 1949-1960) as (months, values)."""
    import csv

    filename = "airline_passengers.csv"
    if smoke:
        folder = SAMPLES_DIR / "timeseries"
    else:
        folder = find_dataset("timeseries", (filename,), data_dir, urls={filename: AIRLINE_URL})
    months, values = [], []
    with open(folder / filename, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header[:2]] != ["Month", "Passengers"]:
            raise DataFormatError(f"{folder / filename} 的表头应为 Month,Passengers，实际是 {header}")
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                values.append(float(row[1]))
            except (IndexError, ValueError):
                raise DataFormatError(f"{folder / filename} 第 {line_number} 行不是 月份,数值：{row}") from None
            months.append(row[0].strip())
    if not values:
        raise DataFormatError(f"{folder / filename} 没有数据行")
    return months, np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------- Tatoeba 英中句对

TRANSLATION_ARCHIVE = Archive("https://www.manythings.org/anki/cmn-eng.zip")


def load_translation_pairs(data_dir: str | os.PathLike | None = None, *, smoke: bool = False
                           ) -> list[tuple[str, str]]:
    """Return the Tatoeba English-Chinese pairs from `cmn.txt` (`english<TAB>chinese[<TAB>attribution]`)."""
    filename = "cmn.txt"
    if smoke:
        folder = SAMPLES_DIR / "translation"
    else:
        folder = find_dataset("translation", (filename,), data_dir, archive=TRANSLATION_ARCHIVE)
    pairs = []
    with open(folder / filename, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            columns = line.split("\t")
            if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
                raise DataFormatError(f"{folder / filename} 第 {line_number} 行应为 英文<TAB>中文，实际是 {line[:80]!r}")
            pairs.append((columns[0].strip(), columns[1].strip()))
    if not pairs:
        raise DataFormatError(f"{folder / filename} 没有句对")
    return pairs
