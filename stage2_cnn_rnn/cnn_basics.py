"""卷积、池化、感受野与特征图：手写卷积并对照 PyTorch（路线图：CNN 与 RNN → CNN 概念：卷积核、池化、感受野、特征图）

学什么
- 卷积核（kernel）：二维卷积就是把每个 k×k 窗口里的像素拉成一列（im2col），再和展平的卷积核做矩阵乘法。
  这里手写 im2col 和 conv2d（stride、padding、dilation，groups=1，带 bias），与 F.conv2d 逐元素对照；
- 池化（pooling）：同样的窗口，换成取最大值或平均值，手写后与 F.max_pool2d、F.avg_pool2d 对照；
- 输出尺寸公式：n_out = floor((n + 2p - d(k-1) - 1) / s) + 1；
- 感受野（receptive field）：输出的一个单元"看得见"输入的多大一块。逐层递推
      r_l = r_{l-1} + (k_l - 1) · d_l · j_{l-1}，   j_l = j_{l-1} · s_l，   r_0 = 1，j_0 = 1，
  其中 j 是相邻两个输出单元在输入上相隔的像素数（jump）。再用梯度实测：从一个输出单元反向传播到输入，
  梯度不为零的区域就是它的感受野，与公式逐层对照；
- 特征图（feature map）：在真实 MNIST 上短暂训练一个两层小 CNN，画出第一层的卷积核、
  一张测试数字经过每个卷积层后的特征图，以及一个单元对输入的梯度（训练后的有效感受野）。
  留意 conv1 有几张特征图四周有一圈亮框：padding 补的是 0，而标准化之后背景是 -0.42，
  卷积核在图像边缘看到的是一条"边"。lenet_mnist 因此改用背景值补边。

怎么跑
    roadmap run cnn_basics --smoke                                # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run cnn_basics         # 真实 MNIST

真实数据上的结果（MNIST 训练集 5,000 张 = 4,500 训练 + 500 验证，官方 10,000 张测试；
2 核 AMD EPYC CPU，PyTorch 2.13.0，机器与别的任务共用，这次运行时基本空闲）：
    手写 conv2d 与 F.conv2d 的最大绝对误差 9.5e-7（float32），最大池化完全一致，平均池化误差 1.2e-7；
    5 个层堆叠、20 个前缀的感受野公式与梯度实测全部一致（LeNet-5 的第二个池化层之后是 16×16 像素）；
    小 CNN（conv 16、conv 32，约 2.9 万参数，±2 像素平移增强）训练 8 个 epoch，测试准确率 98.36%；
    整个脚本 15 秒。
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from roadmap import cli, metrics, plots, runs, training
from stage1.mnist_classification import add_shift_option, accuracy_metric, make_shift_collate, prepare_data

logger = logging.getLogger(__name__)

NUM_CLASSES = 10


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# ---------------------------------------------------------------- 输出尺寸


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """卷积层或池化层在一个方向上的输出长度。

    空洞卷积核横跨 d(k-1)+1 个输入像素，补边后的输入有 n+2p 个像素，
    窗口每次移动 s 个像素，能放下 floor((n + 2p - d(k-1) - 1) / s) + 1 次。
    """
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(f"输入长度 {size}（padding {padding}）放不下跨度为 {span} 的卷积核")
    return (size + 2 * padding - span) // stride + 1


# ---------------------------------------------------------------- 手写卷积（im2col）


def extract_patches(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1, pad_value: float = 0.0
                    ) -> torch.Tensor:
    """把 `x` (B, C, H, W) 的所有滑动窗口取出来，返回 (B, C, kh, kw, H_out, W_out)。

    循环的是卷积核内的 kh·kw 个位置，而不是输出像素。核内位置 (i, j) 在所有窗口里碰到的像素，
    恰好是补边后输入的一个带步长的切片，所以每个位置只要一次切片。
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    height, width = x.shape[-2:]
    out_h = output_size(height, kh, sh, ph, dh)
    out_w = output_size(width, kw, sw, pw, dw)
    padded = F.pad(x, (pw, pw, ph, ph), value=pad_value)  # (B, C, H+2ph, W+2pw)
    rows = []
    for i in range(kh):
        columns = []
        for j in range(kw):
            top, left = i * dh, j * dw  # 核内位置 (i, j) 在第一个窗口里对应的像素
            columns.append(padded[:, :, top:top + sh * (out_h - 1) + 1:sh, left:left + sw * (out_w - 1) + 1:sw])
        rows.append(torch.stack(columns, dim=2))  # (B, C, kw, H_out, W_out)
    return torch.stack(rows, dim=2)  # (B, C, kh, kw, H_out, W_out)


def im2col(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """im2col：把 `x` (B, C, H, W) 展开成列 (B, C·kh·kw, H_out·W_out)，行的顺序与 F.unfold 相同。"""
    patches = extract_patches(x, kernel_size, stride, padding, dilation)
    batch, channels, kh, kw, out_h, out_w = patches.shape
    return patches.reshape(batch, channels * kh * kw, out_h * out_w)


def conv2d_manual(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1) -> torch.Tensor:
    """用 im2col 加一次矩阵乘法实现二维卷积（和各深度学习框架一样，实际算的是互相关，核不翻转）。

    out[b, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · x_pad[b, c, y·s + i·d, x·s + j·d]
    """
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels:
        raise ValueError(f"输入有 {x.shape[1]} 个通道，卷积核需要 {in_channels} 个（这里只实现 groups=1）")
    columns = im2col(x, (kh, kw), stride, padding, dilation)  # (B, C·kh·kw, L)
    out = weight.reshape(out_channels, -1) @ columns  # (O, C·kh·kw) @ (B, C·kh·kw, L) -> (B, O, L)
    if bias is not None:
        out = out + bias[:, None]
    out_h = output_size(x.shape[-2], kh, _pair(stride)[0], _pair(padding)[0], _pair(dilation)[0])
    return out.reshape(x.shape[0], out_channels, out_h, -1)  # (B, O, H_out, W_out)


# ---------------------------------------------------------------- 手写池化


def max_pool2d_manual(x: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """最大池化。补边用 -inf，补出来的像素永远不会被选中（与 F.max_pool2d 相同）。"""
    stride = kernel_size if stride is None else stride  # PyTorch 的默认值：步长等于窗口大小，窗口不重叠
    patches = extract_patches(x, kernel_size, stride, padding, pad_value=float("-inf"))
    return patches.amax(dim=(2, 3))  # (B, C, kh, kw, H_out, W_out) -> (B, C, H_out, W_out)


def avg_pool2d_manual(x: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """平均池化。补的 0 也算进平均值（即 F.avg_pool2d 的默认 count_include_pad=True）。"""
    stride = kernel_size if stride is None else stride
    patches = extract_patches(x, kernel_size, stride, padding, pad_value=0.0)
    return patches.mean(dim=(2, 3))


CONV_CASES = (  # (in, out, kernel, stride, padding, dilation, input H, input W)
    (1, 4, 3, 1, 0, 1, 8, 8),
    (3, 8, 3, 1, 1, 1, 9, 7),
    (3, 5, 5, 2, 2, 1, 16, 13),
    (2, 6, (3, 5), (2, 1), (1, 2), 1, 11, 10),
    (4, 4, 3, 1, 2, 2, 10, 10),
    (2, 3, 3, 3, 0, (2, 1), 17, 12),
)
POOL_CASES = (  # (kernel, stride, padding, input H, input W)
    (2, None, 0, 8, 8),
    (3, 2, 1, 9, 9),
    (3, 1, 0, 7, 6),
    ((2, 3), (2, 1), (1, 0), 10, 11),
)


def check_against_pytorch(seed: int) -> dict[str, float]:
    """在随机输入上运行手写的卷积和池化，返回与 PyTorch 结果的最大绝对误差。"""
    generator = torch.Generator().manual_seed(seed)
    conv_diff = 0.0
    for in_ch, out_ch, kernel, stride, padding, dilation, height, width in CONV_CASES:
        x = torch.randn(2, in_ch, height, width, generator=generator)
        fan_in = in_ch * _pair(kernel)[0] * _pair(kernel)[1]
        # 与 nn.Conv2d 初始化同一量级（标准差约 1/sqrt(fan_in)），输出约为 O(1)，float32 误差约 1e-6。
        weight = torch.randn(out_ch, in_ch, *_pair(kernel), generator=generator) / fan_in ** 0.5
        bias = torch.randn(out_ch, generator=generator)
        mine = conv2d_manual(x, weight, bias, stride, padding, dilation)
        reference = F.conv2d(x, weight, bias, stride, padding, dilation)
        conv_diff = max(conv_diff, float((mine - reference).abs().max()))
    max_diff = avg_diff = 0.0
    for kernel, stride, padding, height, width in POOL_CASES:
        x = torch.randn(2, 3, height, width, generator=generator)
        max_diff = max(max_diff, float((max_pool2d_manual(x, kernel, stride, padding)
                                        - F.max_pool2d(x, kernel, stride, padding)).abs().max()))
        avg_diff = max(avg_diff, float((avg_pool2d_manual(x, kernel, stride, padding)
                                        - F.avg_pool2d(x, kernel, stride, padding)).abs().max()))
    return {"conv2d_max_abs_diff": conv_diff, "max_pool_max_abs_diff": max_diff, "avg_pool_max_abs_diff": avg_diff}


# ---------------------------------------------------------------- 感受野：公式


@dataclass(frozen=True)
class LayerSpec:
    """一个卷积层或池化层的几何参数。通道数不影响感受野，所以这里不记录。"""

    kind: str  # "conv"、"maxpool" 或 "avgpool"
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    def __post_init__(self):
        if self.kind not in ("conv", "maxpool", "avgpool"):
            raise ValueError(f"层的类型只能是 conv、maxpool 或 avgpool，收到 {self.kind!r}")
        if self.kind != "conv" and self.dilation != 1:
            raise ValueError("这里的池化层不支持 dilation")


def receptive_field_table(layers: list[LayerSpec], input_size: int) -> list[dict[str, float]]:
    """逐层套用递推公式，返回每一层之后的输出尺寸、jump、感受野大小和 start。

    start 是第 0 个输出单元的感受野中心在输入上的坐标（像素 i 的中心记为 i），
    第 u 个单元的中心在 start + u·jump。
        r_l = r_{l-1} + (k-1)·d·j_{l-1}
        start_l = start_{l-1} + ((k-1)·d/2 - p)·j_{l-1}
        j_l = j_{l-1}·s
    """
    size, jump, field, start = input_size, 1, 1, 0.0
    table = []
    for index, layer in enumerate(layers, start=1):
        size = output_size(size, layer.kernel, layer.stride, layer.padding, layer.dilation)
        field += (layer.kernel - 1) * layer.dilation * jump
        start += ((layer.kernel - 1) * layer.dilation / 2 - layer.padding) * jump
        jump *= layer.stride
        table.append({"layer": index, "kind": layer.kind, "output_size": size, "jump": jump,
                      "receptive_field": field, "start": start})
    return table


def predicted_window(layers: list[LayerSpec], input_size: int, unit: int) -> tuple[int, int]:
    """按公式算出第 `unit` 个输出单元的感受野在输入上的第一个和最后一个像素（含两端）。"""
    last = receptive_field_table(layers, input_size)[-1]
    centre = last["start"] + unit * last["jump"]
    half = (last["receptive_field"] - 1) / 2
    return int(round(centre - half)), int(round(centre + half))


# ---------------------------------------------------------------- 感受野：用梯度实测


def build_probe(layers: list[LayerSpec]) -> nn.Sequential:
    """按给定的几何参数搭一个单通道网络：权重全为 1、没有偏置、float64。

    权重和输入都是正数，各条梯度路径不会互相抵消，所以输入像素的梯度不为零，
    当且仅当它有一条路径连到输出单元。最大池化换成几何参数相同的平均池化，
    因为最大池化的梯度只流向窗口里的最大值。
    """
    modules: list[nn.Module] = []
    for layer in layers:
        if layer.kind == "conv":
            conv = nn.Conv2d(1, 1, layer.kernel, layer.stride, layer.padding, layer.dilation, bias=False)
            nn.init.ones_(conv.weight)
            modules.append(conv)
        else:
            modules.append(nn.AvgPool2d(layer.kernel, layer.stride, layer.padding))
    return nn.Sequential(*modules).double()


def measure_receptive_field(layers: list[LayerSpec], input_size: int, unit: int | None = None) -> tuple[int, int]:
    """从输出单元 (unit, unit) 反向传播到输入，返回梯度不为零的第一行和最后一行。

    `unit` 默认取中心单元。返回的是外接框，所以空洞卷积跳过的像素（"洞"）也算在里面，和公式一致。
    """
    probe = build_probe(layers)
    image = torch.ones(1, 1, input_size, input_size, dtype=torch.float64, requires_grad=True)
    output = probe(image)  # (1, 1, n_out, n_out)
    unit = output.shape[-1] // 2 if unit is None else unit
    output[0, 0, unit, unit].backward()
    rows = (image.grad[0, 0] != 0).any(dim=1).nonzero().flatten()
    return int(rows.min()), int(rows.max())


LAYER_STACKS = {
    # LeNet-5：32×32 输入，5×5 卷积不补零，2×2 池化
    "lenet5": [LayerSpec("conv", 5), LayerSpec("avgpool", 2, 2), LayerSpec("conv", 5), LayerSpec("avgpool", 2, 2)],
    # 本脚本训练的小 CNN
    "small_cnn": [LayerSpec("conv", 5, padding=2), LayerSpec("maxpool", 2, 2),
                  LayerSpec("conv", 5, padding=2), LayerSpec("maxpool", 2, 2)],
    # VGG 风格：两个 3×3 卷积的感受野等于一个 5×5，参数却更少
    "vgg_block": [LayerSpec("conv", 3, padding=1), LayerSpec("conv", 3, padding=1), LayerSpec("maxpool", 2, 2),
                  LayerSpec("conv", 3, padding=1), LayerSpec("conv", 3, padding=1), LayerSpec("maxpool", 2, 2)],
    # ResNet 的入口（stem）：7×7 步长 2 的卷积，再 3×3 步长 2 的最大池化
    "resnet_stem": [LayerSpec("conv", 7, 2, 3), LayerSpec("maxpool", 3, 2, 1), LayerSpec("conv", 3, padding=1)],
    # 空洞卷积（dilation 1、2、4）：感受野按指数增长，分辨率不变
    "dilated": [LayerSpec("conv", 3, padding=1), LayerSpec("conv", 3, padding=2, dilation=2),
                LayerSpec("conv", 3, padding=4, dilation=4)],
}


def check_receptive_fields(input_size: int = 64) -> list[dict]:
    """对每个层堆叠的每个前缀（前 1 层、前 2 层……），比较公式与梯度实测的感受野。"""
    rows = []
    for name, layers in LAYER_STACKS.items():
        for depth in range(1, len(layers) + 1):
            prefix = layers[:depth]
            last = receptive_field_table(prefix, input_size)[-1]
            unit = last["output_size"] // 2
            predicted = predicted_window(prefix, input_size, unit)
            measured = measure_receptive_field(prefix, input_size, unit)
            if predicted[0] < 0 or predicted[1] >= input_size:
                raise ValueError(f"{name} 前 {depth} 层：中心单元的感受野超出了 {input_size}×{input_size} 的输入，请加大输入")
            rows.append({"stack": name, "layer": depth, "kind": prefix[-1].kind, "output_size": last["output_size"],
                         "jump": last["jump"], "rf_formula": last["receptive_field"],
                         "rf_measured": measured[1] - measured[0] + 1, "window_matches": predicted == measured})
    return rows


# ---------------------------------------------------------------- 小 CNN 与特征图


class SmallCNN(nn.Module):
    """conv5×5(16) -> ReLU -> maxpool2 -> conv5×5(32) -> ReLU -> maxpool2 -> Linear(32·7·7, 10)."""

    def __init__(self, channels: tuple[int, int] = (16, 32), num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=5, padding=2)
        self.classifier = nn.Linear(channels[1] * 7 * 7, num_classes)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """返回每个卷积层 ReLU 之后的激活（特征图）和最后一次池化的输出。"""
        x = images.unsqueeze(1)  # (B, 28, 28) -> (B, 1, 28, 28)
        conv1 = F.relu(self.conv1(x))  # (B, 16, 28, 28)：padding=2 让 5×5 卷积保持尺寸
        conv2 = F.relu(self.conv2(F.max_pool2d(conv1, 2)))  # (B, 32, 14, 14)
        pooled = F.max_pool2d(conv2, 2)  # (B, 32, 7, 7)
        return {"conv1": conv1, "conv2": conv2, "pooled": pooled}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_maps(images)["pooled"].flatten(1))


def train_small_cnn(tensors: dict[str, torch.Tensor], args, run_dir):
    """用共享训练循环训练 SmallCNN，返回 (模型, fit 结果, 测试集 logits, 测试集标签)。"""
    torch.manual_seed(args.seed)
    model = SmallCNN()
    # 与第一阶段的 MLP 一样，训练时把每张图随机平移最多 2 个像素（stage1 的 collate 函数）。
    train_loader = DataLoader(TensorDataset(tensors["train_x"], tensors["train_y"]), batch_size=args.batch_size,
                              shuffle=True, collate_fn=make_shift_collate(args.augment_shift))
    val_loader = DataLoader(TensorDataset(tensors["val_x"], tensors["val_y"]), batch_size=512)
    test_loader = DataLoader(TensorDataset(tensors["test_x"], tensors["test_y"]), batch_size=512)
    accelerator = training.create_accelerator(args, run_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    result = training.fit(
        model, optimizer, train_loader, val_loader, accelerator=accelerator, loss_fn=nn.CrossEntropyLoss(),
        metric_fn=accuracy_metric, epochs=args.epochs, seed=args.seed, monitor="accuracy", mode="max",
        patience=args.patience, scheduler=scheduler, checkpoint_dir=run_dir / "checkpoints" / "small_cnn",
        resume=args.resume is not None, name="small_cnn",
    )
    logits, labels = training.predict(model, accelerator.prepare(test_loader), accelerator)
    accelerator.end_training()
    return accelerator.unwrap_model(model).cpu().eval(), result, logits, labels


def save_figure(figure: plt.Figure, path) -> None:
    """保存并关闭图；多进程运行（torchrun）时只有 rank 0 写文件。"""
    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_feature_maps(model: SmallCNN, image: torch.Tensor, label: int, run_dir) -> float:
    """画 conv1 的卷积核和一张测试数字的特征图，返回这张图上手写卷积与 nn.Conv2d 的最大绝对误差。"""
    with torch.no_grad():
        maps = model.feature_maps(image[None])
        # 训练好的第一层也用手写卷积算一遍：和 nn.Conv2d 的结果应当一致。
        manual = F.relu(conv2d_manual(image[None, None], model.conv1.weight, model.conv1.bias, padding=2))
    kernels = model.conv1.weight.detach()[:, 0].numpy()  # (16, 5, 5)
    plots.plot_image_grid(kernels, [f"kernel {i}" for i in range(len(kernels))], run_dir / "conv1_kernels.png",
                          cmap="RdBu", symmetric=True, title="conv1 kernels (5x5, trained)")

    # 第 0 列是输入数字和层名，右边每行 8 张特征图：先 conv1（28×28），再 conv2（14×14）。
    per_row = 8
    layers = [(name, maps[name][0].numpy()) for name in ("conv1", "conv2")]
    row_counts = [math.ceil(len(layer_maps) / per_row) for _, layer_maps in layers]
    figure, axes = plt.subplots(sum(row_counts), per_row + 1, figsize=(1.2 * (per_row + 1), 1.3 * sum(row_counts)),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    first_row = 0
    for (name, layer_maps), row_count in zip(layers, row_counts):
        axes[first_row, 0].imshow(image.numpy(), cmap="gray")
        axes[first_row, 0].set_title(f"input ({label})", fontsize=8)
        axes[first_row + row_count - 1, 0].text(0.5, 0.5, f"{name}\n{layer_maps.shape[1]}x{layer_maps.shape[2]}",
                                                ha="center", va="center")
        for index, feature_map in enumerate(layer_maps):
            axis = axes[first_row + index // per_row, 1 + index % per_row]
            axis.imshow(feature_map, cmap="viridis")
            axis.set_title(f"{name} ch{index}", fontsize=7)
        first_row += row_count
    figure.suptitle("feature maps of one test digit after conv + ReLU")
    save_figure(figure, run_dir / "feature_maps.png")
    return float((manual - maps["conv1"]).abs().max())


def plot_effective_receptive_field(model: SmallCNN, image: torch.Tensor, run_dir) -> dict[str, int]:
    """画 conv2 响应最强的通道里中心单元对输入的梯度 |d unit / d input|，并框出公式给的感受野。

    训练后的网络有 ReLU 和最大池化，有些路径梯度为零，真正起作用的区域（有效感受野）
    落在理论感受野之内。
    """
    layers = LAYER_STACKS["small_cnn"][:3]  # conv1, pool, conv2
    table = receptive_field_table(layers, 28)
    unit = table[-1]["output_size"] // 2
    first, last = predicted_window(layers, 28, unit)
    pixels = image[None].clone().requires_grad_(True)
    conv2 = model.feature_maps(pixels)["conv2"]  # (1, 32, 14, 14)
    channel = int(conv2[0, :, unit, unit].argmax())
    conv2[0, channel, unit, unit].backward()
    gradient = pixels.grad[0].abs()
    rows = (gradient != 0).any(dim=1).nonzero().flatten()
    columns = (gradient != 0).any(dim=0).nonzero().flatten()

    figure, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].imshow(image.numpy(), cmap="gray")
    axes[1].imshow(gradient.numpy(), cmap="magma")
    for axis in axes:
        axis.add_patch(plt.Rectangle((first - 0.5, first - 0.5), last - first + 1, last - first + 1,
                                     fill=False, edgecolor="cyan", linewidth=1.5))
        axis.axis("off")
    axes[0].set_title(f"test digit, conv2 unit ({unit},{unit}) window")
    axes[1].set_title(f"|gradient|, channel {channel} (theory: {table[-1]['receptive_field']}x{table[-1]['receptive_field']})")
    save_figure(figure, run_dir / "receptive_field.png")
    height = int(rows.max() - rows.min() + 1) if len(rows) else 0
    width = int(columns.max() - columns.min() + 1) if len(columns) else 0
    return {"theoretical": table[-1]["receptive_field"], "gradient_height": height, "gradient_width": width}


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=8, batch_size=64, lr=3e-3)
    add_shift_option(parser, "小 CNN ")
    args = parser.parse_args(argv)
    cli.apply_smoke(args, epochs=1)
    run_dir = cli.start_run(args, "cnn_basics")
    started = time.perf_counter()

    # 1) 手写卷积与池化 vs PyTorch
    differences = check_against_pytorch(args.seed)
    logger.info("手写 vs PyTorch：%s", differences)

    # 2) 感受野：公式 vs 梯度实测
    rf_rows = check_receptive_fields()
    mismatches = [row for row in rf_rows if not row["window_matches"]]
    if mismatches:
        logger.warning("感受野公式与实测不一致：%s", mismatches)

    # 3) 在 MNIST 上训练小 CNN，画卷积核与特征图
    tensors = prepare_data(args)
    logger.info("训练 %d 张、验证 %d 张、测试 %d 张", len(tensors["train_y"]), len(tensors["val_y"]), len(tensors["test_y"]))
    model, result, logits, labels = train_small_cnn(tensors, args, run_dir)
    plots.plot_history(result.history, run_dir / "small_cnn_curves.png", title="small CNN")
    first_test = 0
    manual_diff = plot_feature_maps(model, tensors["test_x"][first_test], int(tensors["test_y"][first_test]), run_dir)
    effective = plot_effective_receptive_field(model, tensors["test_x"][first_test], run_dir)
    matrix = metrics.confusion_matrix(logits, labels, NUM_CLASSES)
    plots.plot_confusion_matrix(matrix, [str(digit) for digit in range(NUM_CLASSES)],
                                run_dir / "small_cnn_confusion_matrix.png", title="small CNN confusion matrix (test)")

    summary = {
        **differences,
        "trained_conv1_manual_max_abs_diff": manual_diff,
        "receptive_field_checks": len(rf_rows),
        "receptive_field_mismatches": len(mismatches),
        "lenet5_receptive_field": next(row["rf_formula"] for row in reversed(rf_rows) if row["stack"] == "lenet5"),
        "small_cnn_conv2_receptive_field": effective["theoretical"],
        "small_cnn_conv2_gradient_height": effective["gradient_height"],
        "small_cnn_conv2_gradient_width": effective["gradient_width"],
        "small_cnn_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "world_size": result.world_size,
        "ranks_agree": result.ranks_agree,
        "train_samples": len(tensors["train_y"]),
        "val_samples": len(tensors["val_y"]),
        "test_samples": len(tensors["test_y"]),
        "small_cnn_val_accuracy": result.best_metrics["val_accuracy"],
        "small_cnn_best_epoch": result.best_epoch,
        "small_cnn_test_accuracy": metrics.accuracy(logits, labels),
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table([{"check": key, "max abs diff": f"{value:.2e}"} for key, value in differences.items()]))
        print()
        print(runs.markdown_table(rf_rows, columns=["stack", "layer", "kind", "output_size", "jump", "rf_formula",
                                                    "rf_measured", "window_matches"]))
        print()
        print(runs.markdown_table([{"model": "small CNN", "parameters": summary["small_cnn_parameters"],
                                    "test accuracy": summary["small_cnn_test_accuracy"],
                                    "val accuracy": summary["small_cnn_val_accuracy"]}]))
        print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
