"""一个训练/评估循环，建立在 Hugging Face Accelerate 之上，所有纯 PyTorch 练习共用。

它负责练习之外的杂事，让脚本只写模型和数据：
- 设备选择（cuda → mps → cpu）、`--precision` 混合精度（bf16/fp16 autocast）、梯度累积；
- tqdm 进度条、每个 epoch 的指标历史、早停（early stopping）；
- 最佳模型存成 safetensors，每个 epoch 末尾保存可续训的检查点，`--resume` 从中继续；
- 不改代码就能在 `torchrun --nproc_per_node=2` 下运行（CPU 上用 gloo）：各进程梯度同步，
  只有 rank 0 写文件。

续训的结果与不中断时完全相同：每个 epoch 开始时用 `seed + epoch` 重设随机种子，
数据顺序也由 `seed + epoch` 决定，所以从第 k 个 epoch 的检查点继续，和一口气跑下来走的是同一条路。

一个 batch 约定为元组 `(*inputs, target)`：模型调用 `model(*inputs)`，损失是 `loss_fn(outputs, target)`。
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

MetricFn = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.json"


@contextlib.contextmanager
def single_thread():
    """Run PyTorch's CPU ops on one thread inside the block, then restore the previous thread count.

    Tiny models (a (32, 32) matrix product per step) spend longer synchronising threads than
    computing. On a busy 2-core machine one thread measured 5-10x faster for the RNN lessons.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def select_device(name: str = "auto") -> torch.device:
    """Return the torch.device for `--device`: auto picks cuda, then mps, then cpu.

    Raises SystemExit with a Chinese message when the requested device is not available.
    """
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda：这台机器没有可用的 CUDA GPU；改用 --device auto 或 --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("--device mps：这台机器没有可用的 Apple MPS；改用 --device auto 或 --device cpu")
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device_options(args: argparse.Namespace) -> torch.device:
    """Return the device for `--device`, or raise SystemExit when it or `--precision` cannot run here."""
    device = select_device(getattr(args, "device", "auto"))
    if getattr(args, "precision", "fp32") == "fp16" and device.type != "cuda":
        raise SystemExit("--precision fp16 需要 CUDA GPU；在 CPU 或 MPS 上请用 --precision bf16 或 fp32")
    return device


def create_accelerator(args: argparse.Namespace, run_dir: Path | None = None) -> Accelerator:
    """Create the Accelerator for `--device`, `--precision`, `--grad-accum-steps`, `--seed` and `--track`.

    Raises SystemExit with a Chinese message when the requested device or precision is not available.
    """
    device = check_device_options(args)
    precision = getattr(args, "precision", "fp32")
    use_cpu = device.type == "cpu"

    track = getattr(args, "track", "none")
    log_with = None if track == "none" else track
    # AcceleratorState is a process-wide singleton that rejects a second Accelerator with another
    # precision. One process may run several scripts (the test suite, `roadmap run` in a notebook),
    # so the precision part is cleared here; the distributed setup (PartialState) is kept.
    # NOTE: _reset_state is private API of accelerate (checked with 1.16.0, the pinned version).
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision],
        gradient_accumulation_steps=getattr(args, "grad_accum_steps", 1),
        # 每个进程按同一个种子、同一个 epoch 号打乱数据，再各取自己那一份。
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        log_with=log_with,
        project_dir=str(run_dir) if run_dir is not None else None,
    )
    if log_with is not None:
        config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        init_kwargs = {"wandb": {"dir": str(run_dir)}} if log_with == "wandb" and run_dir is not None else {}
        accelerator.init_trackers("nlp-roadmap", config=config, init_kwargs=init_kwargs)
    return accelerator


@dataclass
class FitResult:
    """Result of `fit`: the metric history and the best epoch's numbers."""

    history: list[dict[str, float]]
    best_epoch: int
    best_metrics: dict[str, float]
    stopped_early: bool
    world_size: int
    ranks_agree: bool
    checkpoint_dir: Path | None


def _split_batch(batch: Sequence[torch.Tensor]) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise TypeError("一个 batch 应当是元组 (*inputs, target)，例如 (images, labels)")
    return batch[:-1], batch[-1]


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> tuple[Any, torch.Tensor]:
    """Run the model in eval mode over `loader` and return (outputs, targets) from all ranks, on CPU.

    `gather_for_metrics` drops the samples that the distributed sampler repeats to even out the
    last batch, so every sample is counted exactly once.
    """
    model.eval()
    outputs_list, targets_list = [], []
    for batch in loader:
        inputs, target = _split_batch(batch)
        outputs = model(*inputs)
        outputs, target = accelerator.gather_for_metrics((outputs, target))
        outputs_list.append(outputs.float().cpu())
        targets_list.append(target.cpu())
    return torch.cat(outputs_list), torch.cat(targets_list)


def evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator, loss_fn: LossFn,
             metric_fn: MetricFn | None = None) -> dict[str, float]:
    """Return `{"loss": ..., **metric_fn(outputs, targets)}` over the whole loader."""
    outputs, targets = predict(model, loader, accelerator)
    metrics = {"loss": float(loss_fn(outputs, targets))}
    if metric_fn is not None:
        metrics.update({key: float(value) for key, value in metric_fn(outputs, targets).items()})
    return metrics


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _save_checkpoint(directory: Path, accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, state: Mapping[str, Any]) -> None:
    """Write a resumable checkpoint into `directory` through a temp folder renamed into place."""
    if not accelerator.is_main_process:
        return
    temp_dir = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir(parents=True)
    save_model(accelerator.unwrap_model(model), str(temp_dir / MODEL_FILE))
    torch.save(optimizer.state_dict(), temp_dir / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), temp_dir / "scheduler.pt")
    (temp_dir / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False, indent=2), encoding="utf-8")
    # 先把旧检查点挪开、再把新的换进来：任何时刻被杀掉，磁盘上都至少有一份完整的检查点。
    old_dir = directory.with_name(directory.name + ".old")
    shutil.rmtree(old_dir, ignore_errors=True)
    if directory.exists():
        directory.rename(old_dir)
    temp_dir.rename(directory)
    shutil.rmtree(old_dir, ignore_errors=True)


def _save_best(directory: Path, accelerator: Accelerator, model: nn.Module, state: Mapping[str, Any]) -> None:
    if not accelerator.is_main_process:
        return
    directory.mkdir(parents=True, exist_ok=True)
    temp_file = directory / (MODEL_FILE + ".tmp")
    save_model(accelerator.unwrap_model(model), str(temp_file))
    temp_file.replace(directory / MODEL_FILE)
    (directory / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False, indent=2), encoding="utf-8")


def _parameter_checksum(model: nn.Module) -> float:
    return float(sum(parameter.detach().double().sum() for parameter in model.parameters()))


def _ranks_agree(model: nn.Module, accelerator: Accelerator) -> bool:
    """Gather a checksum of the parameters from every rank and check that all are equal."""
    checksum = torch.tensor([_parameter_checksum(accelerator.unwrap_model(model))], dtype=torch.float64,
                            device=accelerator.device)
    gathered = accelerator.gather(checksum)
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=1e-9))


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    eval_loader: DataLoader,
    *,
    accelerator: Accelerator,
    loss_fn: LossFn,
    epochs: int,
    seed: int,
    metric_fn: MetricFn | None = None,
    monitor: str = "loss",
    mode: str = "min",
    patience: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_grad_norm: float | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    name: str = "model",
    restore_best: bool = True,
) -> FitResult:
    """Train `model` for up to `epochs` epochs, evaluating on `eval_loader` after each one.

    `monitor` names a key of the evaluation metrics (`"loss"` or one returned by `metric_fn`);
    `mode` tells whether larger (`"max"`) or smaller (`"min"`) is better. It picks the best
    checkpoint and drives early stopping after `patience` epochs without improvement.
    `scheduler` is stepped once per optimizer step. With `checkpoint_dir`, the best weights go to
    `best/model.safetensors` and a resumable checkpoint to `last/` after every epoch; `resume=True`
    continues from `last/` when it exists. With `restore_best`, the model ends with the best weights.

    The model, optimizer and loaders must not have been passed to `accelerator.prepare` yet.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode 只能是 'min' 或 'max'，收到 {mode!r}")
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    if scheduler is not None:
        scheduler = accelerator.prepare(scheduler)

    history: list[dict[str, float]] = []
    best_value: float | None = None
    best_epoch = 0
    epochs_without_improvement = 0
    start_epoch = 0
    last_dir = checkpoint_dir / "last" if checkpoint_dir is not None else None
    best_dir = checkpoint_dir / "best" if checkpoint_dir is not None else None

    if resume and last_dir is not None and not last_dir.is_dir() and last_dir.with_name("last.old").is_dir():
        last_dir = last_dir.with_name("last.old")  # 上次保存时恰好在两次改名之间被中断
    if resume and last_dir is not None and last_dir.is_dir():
        try:
            state = json.loads((last_dir / STATE_FILE).read_text(encoding="utf-8"))
            load_model(accelerator.unwrap_model(model), str(last_dir / MODEL_FILE), device="cpu")
            optimizer.load_state_dict(torch.load(last_dir / "optimizer.pt", weights_only=True))
            if scheduler is not None:
                scheduler.load_state_dict(torch.load(last_dir / "scheduler.pt", weights_only=True))
            start_epoch = state["epoch"]
            history = state["history"]
            best_value, best_epoch = state["best_value"], state["best_epoch"]
            epochs_without_improvement = state["epochs_without_improvement"]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
            # JSONDecodeError 是 ValueError；load_state_dict 形状不符时抛 RuntimeError
            raise SystemExit(f"[{name}] 检查点 {last_dir} 损坏或不完整（{type(error).__name__}: {error}）。"
                             "请换一个运行目录，或删除这个检查点后重新训练。") from None
        if state.get("epochs", epochs) != epochs:
            logger.warning("[%s] 续训时 --epochs 从 %d 改成了 %d：按总步数设定的学习率调度（例如 OneCycle）"
                           "已经按原来的步数走完或即将走完，多出的 epoch 会用接近 0 的学习率。"
                           "想训练更久请开一个新的运行。", name, state["epochs"], epochs)
        logger.info("[%s] 从 %s 继续：已完成 %d 个 epoch", name, last_dir, start_epoch)
    elif resume:
        logger.info("[%s] 没有找到可续训的检查点（%s），从头开始训练", name, last_dir)

    stopped_early = patience is not None and epochs_without_improvement >= patience
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            if stopped_early:
                break
            set_seed(seed + epoch)
            train_loader.set_epoch(epoch)
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            sample_count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            progress = tqdm(train_loader, desc=f"[{name}] epoch {epoch + 1}/{epochs}", leave=False,
                            disable=not accelerator.is_local_main_process)
            for batch in progress:
                inputs, target = _split_batch(batch)
                with accelerator.accumulate(model):
                    outputs = model(*inputs)
                    loss = loss_fn(outputs, target)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"[{name}] epoch {epoch + 1} 的 loss 变成了 {loss.item()}；试试更小的 --lr")
                    accelerator.backward(loss)
                    if max_grad_norm is not None and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    optimizer.zero_grad()
                batch_size = target.shape[0]
                loss_sum += loss.detach().double() * batch_size
                sample_count += batch_size
                progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

            totals = accelerator.reduce(torch.stack([loss_sum, sample_count]), reduction="sum")
            eval_metrics = evaluate(model, eval_loader, accelerator, loss_fn, metric_fn)
            record = {"epoch": epoch + 1, "train_loss": float(totals[0] / totals[1])}
            record.update({f"val_{key}": value for key, value in eval_metrics.items()})
            history.append(record)
            if monitor not in eval_metrics:
                raise KeyError(f"monitor={monitor!r} 不在评估指标 {sorted(eval_metrics)} 中")
            value = eval_metrics[monitor]
            improved = _is_better(value, best_value, mode)
            if improved:
                best_value, best_epoch, epochs_without_improvement = value, epoch + 1, 0
                if best_dir is not None:
                    _save_best(best_dir, accelerator, model, {"epoch": epoch + 1, "metrics": record})
            else:
                epochs_without_improvement += 1
            stopped_early = patience is not None and epochs_without_improvement >= patience

            shown = "  ".join(f"{key}={value:.4f}" for key, value in record.items() if key != "epoch")
            logger.info("[%s] epoch %d/%d  %s%s", name, epoch + 1, epochs, shown, "  *最佳*" if improved else "")
            if accelerator.trackers:
                # 不传 step：同一个运行里会先后训练几个模型，wandb 要求 step 单调递增，epoch 号作为普通指标记下。
                accelerator.log({f"{name}/{key}": value for key, value in record.items()})
            if last_dir is not None:
                _save_checkpoint(last_dir, accelerator, model, optimizer, scheduler, {
                    "epoch": epoch + 1, "epochs": epochs, "history": history, "best_value": best_value, "best_epoch": best_epoch,
                    "epochs_without_improvement": epochs_without_improvement,
                })
            accelerator.wait_for_everyone()
            if stopped_early:
                logger.info("[%s] 早停：%s 已连续 %d 个 epoch 没有变好", name, monitor, patience)
    except KeyboardInterrupt:
        if last_dir is not None and accelerator.is_main_process:
            if last_dir.is_dir():
                logger.warning("[%s] 训练在第 %d 个 epoch 被中断。最近一个完整 epoch 的检查点在 %s；"
                               "用同样的选项加上 --resume <运行目录> 可以从那里继续。", name, epoch + 1, last_dir)
            else:
                logger.warning("[%s] 训练在第 1 个 epoch 完成前被中断，还没有可以续训的检查点。", name)
        raise

    if not history:
        raise ValueError(f"[{name}] 没有训练任何 epoch（epochs={epochs}）")
    # 屏障放在判断之外：每个进程都必须到达，否则 rank 0 会在这里永远等下去。
    accelerator.wait_for_everyone()
    if restore_best and best_dir is not None and (best_dir / MODEL_FILE).is_file():
        load_model(accelerator.unwrap_model(model), str(best_dir / MODEL_FILE), device="cpu")

    best_metrics = next(record for record in history if record["epoch"] == best_epoch)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        stopped_early=stopped_early,
        world_size=accelerator.num_processes,
        ranks_agree=_ranks_agree(model, accelerator),
        checkpoint_dir=checkpoint_dir,
    )
