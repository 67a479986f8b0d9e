"""线性回归：从零用 autograd 手动更新参数，再用 nn.Linear + 优化器（路线图：PyTorch 基础 → 线性回归）

学什么
- 模型 y_hat = X w + b，损失是均方误差 MSE = mean((y_hat - y)^2)；
- 从零实现：参数是 requires_grad=True 的张量，loss.backward() 算出梯度，
  在 torch.no_grad() 里手动做 w <- w - lr * dL/dw，再把梯度清零（否则会累加）；
- 标准写法：nn.Linear 管参数，DataLoader 出小批量，torch.optim.SGD 做更新；
- 对照答案：最小二乘的闭式解（normal equation），两种训练方法的测试 MSE 都应与它相差不到 2%；
- 特征标准化只用训练集的均值和标准差，否则测试集的信息会泄漏进训练。

数据：scikit-learn 自带的 diabetes 数据集（442 个病人，10 个特征，目标是一年后的病情指标），
随 scikit-learn 安装，无需下载。固定划分：80% 训练 / 20% 测试（random_state = --seed）。

怎么跑
    roadmap run linear_regression            # 真实数据就在 scikit-learn 里，几秒
    roadmap run linear_regression --smoke    # 更少的 epoch

结果（真实数据，2 核 CPU）：见 docs/RESULTS.md。
"""

from __future__ import annotations

import logging
import math
import time

import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from roadmap import cli, metrics, plots, runs, training

logger = logging.getLogger(__name__)


def load_data(seed: int, max_train_samples: int | None = None) -> dict[str, torch.Tensor]:
    """Split diabetes 80/20 and standardize the features with the training part's statistics."""
    features, targets = load_diabetes(return_X_y=True, scaled=False)
    train_x, test_x, train_y, test_y = train_test_split(features, targets, test_size=0.2, random_state=seed)
    if max_train_samples is not None:
        train_x, train_y = train_x[:max_train_samples], train_y[:max_train_samples]
    if len(train_y) < 20:
        raise SystemExit(f"训练样本只有 {len(train_y)} 条；10 个特征加偏置需要远多于 11 条样本，请把 --max-train-samples 设到 20 以上")
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    to_tensor = lambda array: torch.tensor(array, dtype=torch.float32)  # noqa: E731
    return {
        "train_x": to_tensor((train_x - mean) / std), "train_y": to_tensor(train_y),
        "test_x": to_tensor((test_x - mean) / std), "test_y": to_tensor(test_y),
    }


def closed_form(train_x: torch.Tensor, train_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares: append a column of ones for the bias, then solve min ||[X 1] theta - y||^2."""
    design = torch.cat([train_x, torch.ones(len(train_x), 1, device=train_x.device)], dim=1).double()
    theta = torch.linalg.lstsq(design, train_y.double().unsqueeze(1)).solution.squeeze(1)
    return theta[:-1].float(), theta[-1:].float()


def train_from_scratch(train_x: torch.Tensor, train_y: torch.Tensor, epochs: int, lr: float):
    """Full-batch gradient descent with autograd and hand-written parameter updates."""
    weight = torch.zeros(train_x.shape[1], device=train_x.device, requires_grad=True)
    bias = torch.zeros(1, device=train_x.device, requires_grad=True)
    losses = []
    for _ in range(epochs):
        predictions = train_x @ weight + bias          # (N, 10) @ (10,) -> (N,)
        loss = ((predictions - train_y) ** 2).mean()
        loss.backward()                                # 填好 weight.grad 和 bias.grad
        with torch.no_grad():                          # 更新本身不能被记进计算图
            weight -= lr * weight.grad
            bias -= lr * bias.grad
        weight.grad.zero_()
        bias.grad.zero_()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"梯度下降发散了（loss = {loss.item()}）：学习率 {lr} 太大，试试 --scratch-lr 0.05")
        losses.append(loss.item())
    return weight.detach(), bias.detach(), losses


def train_with_nn_linear(train_x: torch.Tensor, train_y: torch.Tensor, epochs: int, lr: float, batch_size: int):
    """Mini-batch SGD with momentum on nn.Linear; the learning rate decays linearly to 0."""
    model = nn.Linear(train_x.shape[1], 1).to(train_x.device)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    # 小批量梯度有噪声：学习率不降，参数会一直在最优解附近抖动，到不了闭式解的精度。
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=epochs * len(loader))
    loss_fn = nn.MSELoss()
    losses = []
    for _ in range(epochs):
        total = 0.0
        for features, targets in loader:
            loss = loss_fn(model(features).squeeze(1), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(targets)
        if not math.isfinite(total):
            raise FloatingPointError(f"nn.Linear + SGD 发散了（训练 MSE = {total}）：学习率 {lr} 太大，试试 --lr 0.01")
        losses.append(total / len(train_y))
    return model, losses


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=800, batch_size=32, lr=0.01, shared_loop=False)
    parser.add_argument("--scratch-lr", type=cli.positive_float, default=0.1,
                        help="从零实现（全批量梯度下降）的学习率；--lr 用于 nn.Linear + SGD")
    parser.add_argument("--scratch-epochs", type=cli.positive_int, default=3000,
                        help="从零实现的梯度下降步数（每步用全部训练样本）")
    args = parser.parse_args(argv)
    if args.precision != "fp32":
        parser.error("线性回归只用 fp32：442 条样本、11 个参数，混合精度只会损失精度")
    if args.smoke:
        args.epochs = min(args.epochs, 30)
        args.scratch_epochs = min(args.scratch_epochs, 300)
    run_dir = cli.start_run(args, "linear_regression")
    started = time.perf_counter()

    device = training.select_device(args.device)
    tensors = {key: value.to(device) for key, value in load_data(args.seed, args.max_train_samples).items()}
    train_x, train_y, test_x, test_y = tensors["train_x"], tensors["train_y"], tensors["test_x"], tensors["test_y"]
    logger.info("diabetes：训练 %d 条、测试 %d 条、%d 个特征", len(train_y), len(test_y), train_x.shape[1])

    exact_weight, exact_bias = closed_form(train_x, train_y)
    scratch_weight, scratch_bias, scratch_losses = train_from_scratch(train_x, train_y, args.scratch_epochs, args.scratch_lr)
    model, linear_losses = train_with_nn_linear(train_x, train_y, args.epochs, args.lr, args.batch_size)

    with torch.no_grad():
        predictions = {
            "closed_form": test_x @ exact_weight + exact_bias,
            "scratch": test_x @ scratch_weight + scratch_bias,
            "nn_linear": model(test_x).squeeze(1),
        }
    test_mse = {name: metrics.mse(values, test_y) for name, values in predictions.items()}
    summary = {
        "train_samples": len(train_y),
        "test_samples": len(test_y),
        "closed_form_test_mse": test_mse["closed_form"],
        "scratch_test_mse": test_mse["scratch"],
        "nn_linear_test_mse": test_mse["nn_linear"],
        "scratch_vs_closed_form": test_mse["scratch"] / test_mse["closed_form"] - 1,
        "nn_linear_vs_closed_form": test_mse["nn_linear"] / test_mse["closed_form"] - 1,
        # 特征之间高度相关（s1、s2 等血清指标），损失面在某些方向上很平坦：
        # 测试 MSE 已经接近闭式解时，权重本身可能还差得不少。
        "scratch_weight_distance": float((scratch_weight - exact_weight).norm()),
        "nn_linear_weight_distance": float((model.weight.detach().squeeze(0) - exact_weight).norm()),
        "nn_linear_test_r2": 1 - test_mse["nn_linear"] / float(test_y.var(unbiased=False)),
        "device": device.type,
        "seconds": round(time.perf_counter() - started, 1),
    }

    plots.plot_curves({"scratch (full-batch GD)": scratch_losses}, run_dir / "scratch_loss.png",
                      xlabel="step", ylabel="train MSE", log_y=True, title="from scratch")
    plots.plot_curves({"nn.Linear + SGD": linear_losses}, run_dir / "nn_linear_loss.png",
                      xlabel="epoch", ylabel="train MSE", log_y=True, title="nn.Linear")
    plots.plot_predictions(predictions["nn_linear"].cpu(), test_y.cpu(), run_dir / "predicted_vs_true.png",
                           title="nn.Linear: predicted vs true (test)")
    runs.save_metrics(run_dir, summary)

    rows = [{"method": name, "test MSE": value, "vs closed form": f"{value / test_mse['closed_form'] - 1:+.2%}"}
            for name, value in test_mse.items()]
    print(runs.markdown_table(rows))
    print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
