"""LeNet-5 识别 MNIST 手写数字（路线图：CNN 与 RNN → 经典结构：LeNet）

学什么
- LeNet-5（LeCun 等，1998，"Gradient-Based Learning Applied to Document Recognition"）的结构：
      输入 32×32 -> C1 卷积 5×5，6 个通道 -> S2 池化 2×2 -> C3 卷积 5×5，16 个通道 -> S4 池化 2×2
      -> 展平 16·5·5 = 400 -> F5 全连接 120 -> F6 全连接 84 -> 输出 10 类；
  一共约 6.2 万个参数，而第一阶段的 MLP（784-512-256-10）有 53.5 万个；
- 为什么是 32×32：MNIST 的数字在 28×28 图的中央 20×20 框里，LeNet 再在四周各补 2 像素，
  让笔画端点、拐角这些特征也能落在顶层特征检测器感受野的中间。这里补的是背景值，
  而不是 padding=2 的 0：标准化之后 0 是中间灰度，补 0 会在图像边缘造出一条假的"边"；
- 原版与现代写法（`--style`）：
  * classic：tanh 激活 + 平均池化，接近 1998 年的选择。当年常用 S 形（sigmoid 类）激活；
    原文用缩放的 tanh，1.7159·tanh(2a/3)，它以 0 为中心，收敛比 sigmoid 快。S2/S4 是"下采样层"：
    2×2 求平均，再乘一个可训练系数、加偏置、过 S 形函数；
  * modern：ReLU + 最大池化，是 AlexNet（2012）之后的默认写法。ReLU 在正半轴梯度恒为 1，
    不像 tanh 那样在 |a| 大时饱和、梯度消失，计算也更便宜；最大池化只保留窗口里最强的响应，
    "这里有没有这个特征"比"平均有多强"对小的平移更稳健；
  * 两种写法都做了同样的简化：C3 与 S2 的 6 个通道全连接（原文用一张连接表，每个 C3 通道只连其中
    3 到 6 个，为了省计算、打破对称），池化层没有可训练系数，输出层用线性层 + softmax 交叉熵，
    不用原文的 RBF 单元；
- 训练沿用第一阶段的做法（直接导入 stage1.mnist_classification 的函数）：分层抽样的 10% 验证集、
  ±2 像素随机平移增强、AdamW + OneCycle，验证集挑最佳 epoch，最后在官方 10,000 张测试集上只评估一次。

怎么跑
    roadmap run lenet_mnist --smoke                                   # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run lenet_mnist --max-train-samples 5000
    roadmap run lenet_mnist --style modern                            # 只训练现代写法

真实数据上的结果（训练 5,000 张 = 4,500 训练 + 500 验证，测试官方 10,000 张；2 核 AMD EPYC CPU，
PyTorch 2.13.0，机器与别的任务共用，这次运行时基本空闲）：
    modern（ReLU + 最大池化）测试准确率 98.18%，classic（tanh + 平均池化）97.47%，各 30 个 epoch，
    两个模型一共 41 秒（只跑了一个随机种子，两种写法相差不到 1 个百分点）。
    对照：第一阶段的 MLP 在同样的数据上是 96.92%，参数（535,818 个）是 LeNet-5 的 8.7 倍。
    卷积的局部连接和权重共享就是"图像里相邻像素相关、同一个笔画出现在哪里都一样"这条先验，
    参数少了一个数量级，准确率反而更高。
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.nn import functional as F

from roadmap import cli, metrics, plots, runs, training
from stage1.mnist_classification import add_shift_option, plot_misclassified, prepare_data, train_and_test

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
LENET_INPUT = 32
MLP_TEST_ACCURACY = 0.9682  # 第一阶段 mnist_classification 的 MLP，同样 5,000 张训练图（docs/RESULTS.md）


# ---------------------------------------------------------------- 模型


class LeNet5(nn.Module):
    """LeNet-5：`style="modern"` 用 ReLU 和最大池化，`style="classic"` 用 tanh 和平均池化。"""

    def __init__(self, style: str = "modern", num_classes: int = NUM_CLASSES):
        super().__init__()
        if style not in ("modern", "classic"):
            raise ValueError(f"style 只能是 'modern' 或 'classic'，收到 {style!r}")
        activation = nn.ReLU if style == "modern" else nn.Tanh
        pool = nn.MaxPool2d if style == "modern" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),   # C1: (B, 1, 32, 32) -> (B, 6, 28, 28)
            activation(),
            pool(kernel_size=2),              # S2: -> (B, 6, 14, 14)
            nn.Conv2d(6, 16, kernel_size=5),  # C3: -> (B, 16, 10, 10)
            activation(),
            pool(kernel_size=2),              # S4: -> (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),                     # (B, 16, 5, 5) -> (B, 400)
            nn.Linear(16 * 5 * 5, 120),       # F5（原文叫 C5：在 5×5 输入上做 5×5 卷积，和全连接是一回事）
            activation(),
            nn.Linear(120, 84),               # F6
            activation(),
            nn.Linear(84, num_classes),       # 输出 logits，softmax 在交叉熵里做
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (LENET_INPUT, LENET_INPUT):
            raise ValueError(f"LeNet-5 需要 {LENET_INPUT}×{LENET_INPUT} 的输入，收到 {tuple(images.shape[-2:])}；"
                             "先用 pad_to_lenet_input 补边")
        return self.classifier(self.features(images.unsqueeze(1)))  # (B, 32, 32) -> (B, 1, 32, 32) -> (B, 10)


# ---------------------------------------------------------------- 数据


def pad_to_lenet_input(images: torch.Tensor, background: float) -> torch.Tensor:
    """用背景值把标准化后的 28×28 数字 (N, 28, 28) 四周补边到 (N, 32, 32)。"""
    margin = (LENET_INPUT - images.shape[-1]) // 2
    return F.pad(images, (margin,) * 4, value=background)


def prepare_lenet_data(args) -> dict[str, torch.Tensor]:
    """和第一阶段一样划分、标准化 MNIST，再把每张图用背景值补边到 32×32。"""
    tensors = prepare_data(args)
    # 原始像素 0（黑色背景）标准化后的值：(0 - mean) / std。
    background = float(-tensors["mean"] / tensors["std"])
    for key in ("train_x", "val_x", "test_x"):
        tensors[key] = pad_to_lenet_input(tensors[key], background)
    tensors["background"] = torch.tensor(background)
    return tensors


# ---------------------------------------------------------------- 训练与报告


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=30, batch_size=64, lr=2e-3)
    parser.add_argument("--style", choices=("modern", "classic", "both"), default="both",
                        help="modern = ReLU + 最大池化；classic = tanh + 平均池化；both 两个都训练并对比")
    add_shift_option(parser, " LeNet ")
    args = parser.parse_args(argv)
    cli.apply_smoke(args, epochs=2)
    run_dir = cli.start_run(args, "lenet_mnist")
    started = time.perf_counter()

    tensors = prepare_lenet_data(args)
    logger.info("训练 %d 张、验证 %d 张、测试 %d 张，输入补边到 %s", len(tensors["train_y"]), len(tensors["val_y"]),
                len(tensors["test_y"]), tuple(tensors["train_x"].shape[1:]))
    accelerator = training.create_accelerator(args, run_dir)

    styles = ("modern", "classic") if args.style == "both" else (args.style,)
    results = {}
    for style in styles:
        torch.manual_seed(args.seed)
        model = LeNet5(style)
        # stage1 的 train_and_test：AdamW + OneCycle + roadmap.training.fit，再在测试集上评估最佳检查点。
        result, logits, labels = train_and_test(f"lenet_{style}", model, tensors, args, accelerator, run_dir,
                                                args.augment_shift)
        results[style] = (result, logits, labels, model)

    main_style = styles[0]
    _, logits, labels, _ = results[main_style]
    matrix = metrics.confusion_matrix(logits, labels, NUM_CLASSES)
    plots.plot_confusion_matrix(matrix, [str(digit) for digit in range(NUM_CLASSES)],
                                run_dir / f"lenet_{main_style}_confusion_matrix.png",
                                title=f"LeNet-5 ({main_style}) confusion matrix (test)")
    errors = plot_misclassified(logits, labels, tensors["test_images"], run_dir / f"lenet_{main_style}_misclassified.png")
    plots.plot_curves({f"LeNet-5 {style}": [record["val_accuracy"] for record in results[style][0].history]
                       for style in styles}, run_dir / "val_accuracy_by_style.png", xlabel="epoch",
                      ylabel="validation accuracy", title="LeNet-5: modern vs classic")

    summary = {
        "train_samples": len(tensors["train_y"]),
        "val_samples": len(tensors["val_y"]),
        "test_samples": len(tensors["test_y"]),
        "parameters": sum(parameter.numel() for parameter in results[main_style][3].parameters()),
        "world_size": results[main_style][0].world_size,
        "ranks_agree": all(result.ranks_agree for result, *_ in results.values()),
        f"{main_style}_test_errors": errors,
    }
    for style, (result, logits, labels, _) in results.items():
        summary[f"{style}_test_accuracy"] = metrics.accuracy(logits, labels)
        summary[f"{style}_val_accuracy"] = result.best_metrics["val_accuracy"]
        summary[f"{style}_best_epoch"] = result.best_epoch
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        rows = [{"model": f"LeNet-5 {style}", "parameters": summary["parameters"],
                 "test accuracy": summary[f"{style}_test_accuracy"], "val accuracy": summary[f"{style}_val_accuracy"],
                 "best epoch": summary[f"{style}_best_epoch"]} for style in results]
        rows.append({"model": "stage-1 MLP 784-512-256-10", "parameters": 535_818, "test accuracy": MLP_TEST_ACCURACY})
        print(runs.markdown_table(rows))
        print(f"图和指标在 {run_dir}")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    cli.run_script(main)
