"""ResNet 残差网络分类 CIFAR-10（路线图：CNN 与 RNN → ResNet（残差连接）、视觉应用：CIFAR-10）

学什么
- 残差块（basic block，He 等，2016，"Deep Residual Learning for Image Recognition"）：
      y = ReLU( F(x) + shortcut(x) )，  F = conv3×3 -> BN -> ReLU -> conv3×3 -> BN
  形状不变时 shortcut 就是恒等映射 x；步长 2 降采样、通道翻倍时换成 1×1 卷积 + BN 的投影（projection）；
- 残差连接为什么让梯度好走：对 y = x + F(x) 求导，∂L/∂x = ∂L/∂y · (I + ∂F/∂x)。
  恒等项 I 把上游梯度原样传给下一层；L 个块串起来，梯度里总有一条不经过任何 ∂F/∂x 的直达路径。
  plain 网络（没有 shortcut）的梯度是 L 个雅可比矩阵的连乘，范数随深度指数级地变小（梯度消失）
  或变大（梯度爆炸），前面的层学不动。块只需学"在 x 基础上改多少"（残差），
  学不到东西时 F ≈ 0 就退化成恒等，所以多加的块至少不会让网络更难表示原来那个浅一些的解。
  脚本在初始化时对同一个 batch（32 张训练图）反传一次，量出 56 层的 ResNet 与去掉 shortcut 的
  plain 网络每个卷积层的梯度范数（gradient_flow.png）。带 BatchNorm 的 plain 网络在初始化时
  越靠近输入梯度越大（爆炸）：真实数据上第一层的梯度范数是最后一层的约 1,076 倍，ResNet 只有约 16 倍；
- CIFAR-10 上的 ResNet 结构（同一篇论文为 32×32 图设计的版本）：3×3 卷积入口，三个阶段通道 16-32-64、
  特征图 32-16-8，每阶段 n 个残差块，全局平均池化后接全连接，共 6n+2 层（默认 n=3，即 ResNet-20）；
- 官方 python 批次文件直接读（roadmap.data.load_cifar10，不依赖 torchvision），每个通道用训练部分的
  均值/标准差标准化；训练时的数据增强（四周补 4 像素后随机裁回 32×32、随机水平翻转）
  是对整个 batch 的张量运算，只作用于训练集；
- 评估用 eval 模式：BatchNorm 改用训练时累积的 running mean/var，一张图的预测与同一 batch
  里还有哪些图无关（train 模式下 BN 用当前 batch 的统计量，结果会随 batch 变）；
- 在 GPU 上自动用 bf16 autocast（`--precision auto`）和 channels_last 内存布局，同一个脚本跑得快。

怎么跑
    roadmap run resnet_cifar10 --smoke                                # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run resnet_cifar10         # 真实数据，2 核 CPU 上约 5 分钟
    roadmap run resnet_cifar10 --epochs 30                            # 有官方 50,000 张训练图、时间更多时

真实数据上的结果（数据目录里是 CIFAR-10 的一部分：data_batch_1 的 10,000 张 = 9,000 训练 + 1,000 验证，
测试 2,000 张；2 核 AMD EPYC CPU，PyTorch 2.13.0；机器与别的任务共用，这次运行时基本空闲）：
    ResNet-20（16-32-64，272,474 个参数），SGD + Nesterov 动量，OneCycle 最大学习率 0.2，batch 128，
    label smoothing 0.1，10 个 epoch：验证准确率 70.8%，测试准确率 68.55%，整个脚本 4 分 39 秒。
    最难的类是 cat（41%），最容易的是 ship（87%）和 automobile（85%）。
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from roadmap import cli, data, metrics, plots, runs, training

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
VALIDATION_FRACTION = 0.1
CROP_PADDING = 4
PROBE_BATCH = 32  # 梯度流对比只反传一个 batch，32 张就够看出趋势


# ---------------------------------------------------------------- 数据


def stratified_split(labels: np.ndarray, fraction: float, seed: int, max_samples: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """打乱顺序、最多保留 `max_samples` 个样本，每个类留出 `fraction` 做验证集；返回 (训练下标, 验证下标)。"""
    order = np.random.default_rng(seed).permutation(len(labels))
    if max_samples is not None:
        order = order[:max_samples]
    validation = []
    for label in np.unique(labels[order]):
        members = order[labels[order] == label]
        validation.append(members[:max(1, int(round(fraction * len(members))))])
    validation_index = np.sort(np.concatenate(validation))
    return np.setdiff1d(order, validation_index), validation_index


def prepare_data(args) -> dict[str, torch.Tensor]:
    """读 CIFAR-10，分层留出验证集，每个通道用训练部分的均值和标准差标准化。"""
    train_images, train_labels = data.load_cifar10("train", args.data_dir, smoke=args.smoke)
    test_images, test_labels = data.load_cifar10("test", args.data_dir, smoke=args.smoke)
    train_index, validation_index = stratified_split(train_labels, VALIDATION_FRACTION, args.seed, args.max_train_samples)

    pixels = torch.from_numpy(train_images).float() / 255.0  # (N, 3, 32, 32)，0-1
    mean = pixels[train_index].mean(dim=(0, 2, 3))  # (3,)：每个通道一个均值
    std = pixels[train_index].std(dim=(0, 2, 3))

    def normalise(images: torch.Tensor) -> torch.Tensor:
        return (images - mean[:, None, None]) / std[:, None, None]

    return {
        "train_x": normalise(pixels[train_index]),
        "train_y": torch.from_numpy(train_labels[train_index]),
        "val_x": normalise(pixels[validation_index]),
        "val_y": torch.from_numpy(train_labels[validation_index]),
        "test_x": normalise(torch.from_numpy(test_images).float() / 255.0),
        "test_y": torch.from_numpy(test_labels),
        "test_images": torch.from_numpy(test_images),  # uint8，画图用
        "mean": mean,
        "std": std,
    }


def random_crop_flip(images: torch.Tensor, padding: int = CROP_PADDING) -> torch.Tensor:
    """对一个 batch (B, C, H, W) 做增强：四周补 `padding` 像素，每张图随机裁一个 H×W 窗口，约一半水平翻转。

    图已经标准化过，所以补的 0 就是各通道的平均颜色。裁剪位置和翻转用 torch 的全局随机数生成器，
    共享训练循环每个 epoch 都会重设它的种子，所以结果可以复现。
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
    top = torch.randint(0, 2 * padding + 1, (batch,))
    left = torch.randint(0, 2 * padding + 1, (batch,))
    rows = top[:, None] + torch.arange(height)  # (B, H)：每张图自己的行号
    columns = left[:, None] + torch.arange(width)  # (B, W)
    # 高级索引：四个索引张量广播成 (B, C, H, W)，一次取出所有图的裁剪窗口，没有 Python 循环。
    cropped = padded[torch.arange(batch)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                     rows[:, None, :, None], columns[:, None, None, :]]
    flip = torch.rand(batch) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


def augment_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """训练集 DataLoader 的 collate 函数：先把样本拼成 batch，再对整个 batch 一次性做增强。"""
    images = torch.stack([image for image, _ in batch])
    labels = torch.stack([label for _, label in batch])
    return random_crop_flip(images), labels


# ---------------------------------------------------------------- 模型


class BasicBlock(nn.Module):
    """残差块 y = ReLU(F(x) + shortcut(x))，F = conv3×3-BN-ReLU-conv3×3-BN。

    形状不变时 shortcut 是恒等映射；块把分辨率减半（步长 2）或改变通道数时，换成 1×1 卷积 + BN 的投影。
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.residual = residual  # False：去掉 shortcut 的 plain 块，只用来对比梯度
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)  # 相加要求形状一致：这就是投影 shortcut 存在的原因
        return F.relu(out)


class ResNetCifar(nn.Module):
    """32×32 图像的 ResNet：conv3×3 入口，每个宽度一个阶段（第一个之后的每个阶段把 H、W 减半），全局平均池化，全连接。"""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 2,
                 num_classes: int = NUM_CLASSES, residual: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks = []
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, residual))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, num_classes)
        self.channels_last = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.blocks(self.stem(images))  # (B, 3, 32, 32) -> (B, 64, 8, 8)
        return self.head(features.mean(dim=(2, 3)))  # 全局平均池化 (B, 64)，再到 (B, 10)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def conv_gradient_norms(model: ResNetCifar, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """对一个 batch 的损失反向传播，按从输入到输出的顺序返回主路径上每个卷积层权重的梯度范数。"""
    model.train()
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    convs = [model.stem[0]] + [conv for block in model.blocks for conv in (block.conv1, block.conv2)]
    norms = [float(conv.weight.grad.norm()) for conv in convs]
    model.zero_grad()
    return norms


# ---------------------------------------------------------------- 训练


def resolve_precision(args: argparse.Namespace) -> torch.device:
    """把 `--precision auto` 换成具体精度（CUDA 上 bf16，其他设备 fp32），返回所用设备。"""
    device = training.select_device(args.device)
    if args.precision == "auto":
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    return device


def accuracy_metric(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"accuracy": metrics.accuracy(logits, labels)}


def train_resnet(model: ResNetCifar, tensors: dict[str, torch.Tensor], args, accelerator, run_dir):
    """用 SGD（Nesterov 动量）、OneCycle 学习率和 label smoothing 训练，返回 fit 的结果。"""
    train_loader = DataLoader(TensorDataset(tensors["train_x"], tensors["train_y"]), batch_size=args.batch_size,
                              shuffle=True, collate_fn=augment_collate)
    val_loader = DataLoader(TensorDataset(tensors["val_x"], tensors["val_y"]), batch_size=512)
    # BN 层的 γ、β 和偏置不做权重衰减：它们只是缩放和平移，衰减它们不起正则作用。
    decay = [parameter for parameter in model.parameters() if parameter.ndim > 1]
    no_decay = [parameter for parameter in model.parameters() if parameter.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                    pct_start=0.25)
    return training.fit(
        model, optimizer, train_loader, val_loader, accelerator=accelerator,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), metric_fn=accuracy_metric,
        epochs=args.epochs, seed=args.seed, monitor="accuracy", mode="max", patience=args.patience,
        scheduler=scheduler, checkpoint_dir=run_dir / "checkpoints" / "resnet", resume=args.resume is not None,
        name="resnet",
    )


# ---------------------------------------------------------------- 评估与图


@torch.no_grad()
def batch_independence_gap(model: nn.Module, images: torch.Tensor) -> float:
    """eval 模式下，比较每张图单独推理与放在 batch 里推理的 logits，返回最大绝对差。"""
    model.eval()
    together = model(images)
    alone = torch.cat([model(image[None]) for image in images])
    return float((together - alone).abs().max())


def plot_gradient_flow(norms: dict[str, list[float]], path, depth: int) -> None:
    plots.plot_curves(norms, path, xlabel="conv layer (input -> output)", ylabel="gradient norm at init",
                      title=f"gradient flow at init, {depth} layers: residual vs plain", log_y=True)


def plot_predictions_grid(images: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor, path,
                          limit: int = 32) -> None:
    names = data.CIFAR10_CLASSES
    display_images = images[:limit].permute(0, 2, 3, 1).numpy()  # (N, 3, 32, 32) -> (N, 32, 32, 3) 给 imshow
    titles = [f"{names[p]}" + ("" if p == t else f"\n(true {names[t]})")
              for p, t in zip(predictions[:limit].tolist(), labels[:limit].tolist())]
    plots.plot_image_grid(display_images, titles, path, title="test images: prediction (true class when wrong)")


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=10, batch_size=128, lr=0.2)
    # 默认精度 auto：CUDA 上 bf16，其他设备 fp32。通用选项里没有 auto，这里给 --precision 补上；
    # argparse 没有修改已有选项的公开接口，所以直接改 parser._actions 里的那个 Action。
    precision = next(action for action in parser._actions if action.dest == "precision")
    precision.choices = ("auto", *precision.choices)
    precision.default = "auto"
    precision.help = "训练精度；auto = CUDA 上 bf16，其他设备 fp32；bf16/fp16 用 autocast 混合精度（fp16 需要 CUDA）"
    parser.add_argument("--widths", type=cli.positive_int, nargs=3, default=(16, 32, 64), metavar=("C1", "C2", "C3"),
                        help="三个阶段的通道数")
    parser.add_argument("--blocks-per-stage", type=cli.positive_int, default=3,
                        help="每个阶段的残差块数 n（网络共 6n+2 层：2 是 ResNet-14，3 是 ResNet-20）")
    parser.add_argument("--probe-blocks-per-stage", type=cli.positive_int, default=9,
                        help="梯度流对比用的网络每阶段块数（只在初始化时反传一次，不训练；9 = 56 层）")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="卷积和全连接权重的 L2 权重衰减")
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="交叉熵的 label smoothing 系数")
    args = parser.parse_args(argv)
    if args.weight_decay < 0:
        parser.error(f"--weight-decay 不能是负数，收到 {args.weight_decay}")
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing 应在 [0, 1) 之间，收到 {args.label_smoothing}")
    if args.smoke:
        cli.apply_smoke(args, epochs=2)
        args.widths, args.blocks_per_stage, args.probe_blocks_per_stage = (8, 16, 32), 1, 3
    device = resolve_precision(args)
    run_dir = cli.start_run(args, "resnet_cifar10")
    started = time.perf_counter()

    tensors = prepare_data(args)
    logger.info("训练 %d 张、验证 %d 张、测试 %d 张；通道均值 %s，标准差 %s", len(tensors["train_y"]), len(tensors["val_y"]),
                len(tensors["test_y"]), tensors["mean"].numpy().round(3), tensors["std"].numpy().round(3))

    # 梯度流：同样的初始化，有 / 没有 shortcut，在同一个训练 batch 上各反传一次。
    probe_images, probe_labels = tensors["train_x"][:PROBE_BATCH], tensors["train_y"][:PROBE_BATCH]
    gradient_norms = {}
    for name, residual in (("residual", True), ("plain", False)):
        torch.manual_seed(args.seed)
        probe = ResNetCifar(tuple(args.widths), args.probe_blocks_per_stage, residual=residual)
        gradient_norms[name] = conv_gradient_norms(probe, probe_images, probe_labels)
    plot_gradient_flow(gradient_norms, run_dir / "gradient_flow.png", 6 * args.probe_blocks_per_stage + 2)

    torch.manual_seed(args.seed)
    model = ResNetCifar(tuple(args.widths), args.blocks_per_stage)
    if device.type == "cuda":
        # NOTE: 这条 GPU 路径（channels_last + bf16 autocast）没有在 GPU 上运行过，只在 CPU 上验证过结果一致。
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    accelerator = training.create_accelerator(args, run_dir)
    logger.info("ResNet-%d：%d 个参数，设备 %s，精度 %s", 6 * args.blocks_per_stage + 2, count_parameters(model),
                accelerator.device, args.precision)
    result = train_resnet(model, tensors, args, accelerator, run_dir)

    test_loader = accelerator.prepare(DataLoader(TensorDataset(tensors["test_x"], tensors["test_y"]), batch_size=512))
    logits, labels = training.predict(model, test_loader, accelerator)
    predictions = logits.argmax(dim=1)
    trained_model = accelerator.unwrap_model(model)
    gap = batch_independence_gap(trained_model, tensors["test_x"][:8].to(accelerator.device))

    plots.plot_history(result.history, run_dir / "resnet_curves.png", title="ResNet")
    matrix = metrics.confusion_matrix(logits, labels, NUM_CLASSES)
    plots.plot_confusion_matrix(matrix, list(data.CIFAR10_CLASSES), run_dir / "resnet_confusion_matrix.png",
                                title="ResNet confusion matrix (test)")
    plot_predictions_grid(tensors["test_images"], predictions, labels, run_dir / "test_predictions.png")

    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    summary = {
        "train_samples": len(tensors["train_y"]),
        "val_samples": len(tensors["val_y"]),
        "test_samples": len(tensors["test_y"]),
        "depth": 6 * args.blocks_per_stage + 2,
        "parameters": count_parameters(trained_model),
        "precision": args.precision,
        "world_size": result.world_size,
        "ranks_agree": result.ranks_agree,
        "test_accuracy": metrics.accuracy(logits, labels),
        "val_accuracy": result.best_metrics["val_accuracy"],
        "best_epoch": result.best_epoch,
        "eval_batch_independence_max_abs_diff": gap,
        "probe_depth": 6 * args.probe_blocks_per_stage + 2,
        # 初始化时第一个卷积层与最后一个卷积层的梯度范数之比：1 附近说明梯度在各层量级相近
        "gradient_norm_ratio_first_to_last_residual": gradient_norms["residual"][0] / gradient_norms["residual"][-1],
        "gradient_norm_ratio_first_to_last_plain": gradient_norms["plain"][0] / gradient_norms["plain"][-1],
        "per_class_test_accuracy": {name: float(value) for name, value in zip(data.CIFAR10_CLASSES, per_class)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table([{"model": f"ResNet-{summary['depth']} {tuple(args.widths)}",
                                    "parameters": summary["parameters"], "test accuracy": summary["test_accuracy"],
                                    "val accuracy": summary["val_accuracy"], "best epoch": summary["best_epoch"],
                                    "seconds": summary["seconds"]}]))
        print()
        print(runs.markdown_table([{"class": name, "test accuracy": value}
                                   for name, value in summary["per_class_test_accuracy"].items()]))
        print(f"图和指标在 {run_dir}")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    cli.run_script(main)
