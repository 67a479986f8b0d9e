"""RNN 基础：时间步、隐藏状态与梯度消失（路线图：CNN 与 RNN → RNN 概念：时间步、隐藏状态、梯度消失）

学什么
- 时间步（time step）：序列 x_1, ..., x_T 按顺序一次读一个元素；每个时间步用的是同一组权重（参数共享），
  所以同一个 RNN 能处理任意长度的序列；
- 隐藏状态（hidden state）h_t：网络对"到第 t 步为止读过的内容"的压缩总结，
      h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  h_0 = 0（默认）；
  output 是每个时间步最后一层的 h_t 叠起来，h_n 是每一层最后一个时间步的 h_T；
- 手写 RNN：把上面的公式按时间展开（unroll）成一个 for 循环；多层 RNN 里，上一层的输出序列就是下一层的输入序列。
  参数名和 nn.RNN 相同，所以 load_state_dict 就能拷贝权重，拷贝后两者的 output 和 h_n 相差不到 1e-5；
- 梯度消失（vanishing gradient）：损失只依赖最后一个输出时，
      ∂L/∂x_1 = ∂L/∂h_T · (∂h_T/∂h_{T-1}) ··· (∂h_2/∂h_1) · ∂h_1/∂x_1,  ∂h_t/∂h_{t-1} = diag(1 - h_t²) W_hh，
  这是 T-1 个矩阵连乘。PyTorch 默认初始化下 W_hh 的谱半径约 0.6（hidden 32 时实测 0.62），tanh 的导数 1 - h² 不超过 1，
  所以梯度随 T 指数衰减：脚本测出每多一步梯度大约乘以多少（per-step factor）；
- LSTM 为什么好一些：cell state 走加法路径 c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t，沿这条路 ∂c_t/∂c_{t-1} = diag(f_t)，
  遗忘门 f_t 接近 1 时几乎不衰减。PyTorch 默认的偏置在 0 附近，所以 f_t 平均约 σ(0) = 0.5；常见做法是把遗忘门偏置加 1（f_t ≈ 0.73），
  实验同时画出这两种 LSTM；
- 梯度检查（gradient check）：用中心差分 (L(x + εe) - L(x - εe)) / 2ε 验证 autograd 算出的 ∂L/∂x_1。

实验设置：每个长度 T 取 --trials 组随机初始化，每组 --batch-size 条 N(0, 1) 随机输入序列，
计算 ‖∂L/∂x_1‖（L = 最后一个时间步输出各分量之和），对全部 trials × batch 个值取几何平均
（梯度跨越几十个数量级，算术平均会被少数大值主导）。全程用 float64：RNN 在 T = 100 时梯度的几何平均约 1e-27，
不少序列更小，离 float32 能表示的最小正数（约 1e-45）不远；用 float32 试跑时，T = 100 的梯度有的直接下溢成 0。

怎么跑
    roadmap run rnn_basics --smoke        # 几秒
    roadmap run rnn_basics                # 不需要数据（输入是随机序列），T = 5, 10, 20, ..., 100
    roadmap run rnn_basics --lengths 10 50 100 200 --hidden-size 64

本脚本不训练模型：--epochs、--lr 不起作用，--batch-size 是每组初始化的序列条数。

结果（T = 5, 10, 20, ..., 100；10 组初始化 × 32 条序列；hidden 32；2 核 CPU，约 3 秒，与其他任务争用 CPU 时约 12 秒）：
    ‖∂L/∂x_1‖ 从 T = 5 到 T = 100：
    RNN                    1.2e-1 → 4.1e-27（缩小 25.5 个数量级，每多一步约 ×0.54）
    LSTM（默认初始化）      3.4e-2 → 7.4e-21（18.7 个数量级，每步约 ×0.64）
    LSTM（遗忘门偏置 +1）   1.2e-1 → 2.0e-8 （6.8 个数量级，每步约 ×0.85）
    RNN 的 W_hh 谱半径平均 0.62；手写 RNN 与 nn.RNN 最大差 1.2e-7；梯度检查最大差 2.0e-10。
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch
from torch import nn

from roadmap import cli, plots, runs, training  # roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

# 梯度消失实验里比较的三种网络，make_model 按名字构造。
MODEL_KINDS = ("rnn", "lstm", "lstm_forget_bias")
DEFAULT_LENGTHS = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
MODEL_LABELS = {"rnn": "RNN (tanh)", "lstm": "LSTM (PyTorch init)", "lstm_forget_bias": "LSTM (forget-gate bias +1)"}


# ---------------------------------------------------------------- 手写 RNN


def rnn_cell(x_t: torch.Tensor, h_prev: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
             bias_ih: torch.Tensor, bias_hh: torch.Tensor, nonlinearity: str = "tanh") -> torch.Tensor:
    """Compute one time step: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    x_t: (B, input_size), h_prev: (B, H), weight_ih: (H, input_size), weight_hh: (H, H).
    """
    pre_activation = x_t @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh  # (B, H)
    return torch.tanh(pre_activation) if nonlinearity == "tanh" else torch.relu(pre_activation)


class HandRNN(nn.Module):
    """A multi-layer Elman RNN unrolled over time with a Python loop; drop-in for nn.RNN.

    Parameters are named as in nn.RNN (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ..._l1, ...),
    so `hand.load_state_dict(reference.state_dict())` copies the weights of an nn.RNN of the same shape.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 batch_first: bool = False):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity 只能是 'tanh' 或 'relu'，收到 {nonlinearity!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.batch_first = nonlinearity, batch_first
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size  # 第 2 层起，输入是下一层的 h_t
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(hidden_size, layer_input)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # 和 nn.RNN 一样：所有权重和偏置都取 U(-1/√H, 1/√H)。
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, inputs: torch.Tensor, h_0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs: (T, B, input_size), or (B, T, input_size) with batch_first; h_0: (num_layers, B, H).

        Returns (output, h_n) like nn.RNN: output contains the last layer's h_t at every step,
        h_n contains every layer's h_T.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"输入应为三维 (T, B, {self.input_size})（batch_first 时为 (B, T, {self.input_size})），"
                             f"收到 {tuple(inputs.shape)}")
        if self.batch_first:
            inputs = inputs.transpose(0, 1)  # (B, T, D) -> (T, B, D)：下面统一按时间步取第 0 维
        steps, batch = inputs.shape[0], inputs.shape[1]
        if h_0 is None:
            h_0 = inputs.new_zeros(self.num_layers, batch, self.hidden_size)
        layer_input = inputs
        final_states = []
        for layer in range(self.num_layers):
            weights = [getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h_t = h_0[layer]  # (B, H)
            outputs = []
            for t in range(steps):  # 按时间展开：同一组 weights 在每个时间步重复使用
                h_t = rnn_cell(layer_input[t], h_t, *weights, nonlinearity=self.nonlinearity)
                outputs.append(h_t)
            layer_input = torch.stack(outputs)  # (T, B, H)，作为下一层的输入序列
            final_states.append(h_t)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return output, torch.stack(final_states)  # h_n: (num_layers, B, H)


# ---------------------------------------------------------------- 梯度消失


def make_model(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    """Build one of MODEL_KINDS with PyTorch's default initialisation (batch_first=True).

    "lstm_forget_bias" adds 1 to the forget gate's bias. nn.LSTM stacks its gates in the order
    i, f, g, o, so rows hidden_size .. 2*hidden_size of bias_ih_l0 belong to the forget gate.
    """
    if kind == "rnn":
        return nn.RNN(input_size, hidden_size, batch_first=True)
    if kind in ("lstm", "lstm_forget_bias"):
        model = nn.LSTM(input_size, hidden_size, batch_first=True)
        if kind == "lstm_forget_bias":
            with torch.no_grad():
                model.bias_ih_l0[hidden_size:2 * hidden_size] += 1.0
        return model
    raise ValueError(f"未知的模型 {kind!r}；可选：{', '.join(MODEL_KINDS)}")


def last_output_loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """L = sum over the batch and the hidden units of the last time step's output h_T."""
    outputs, _ = model(inputs)  # (B, T, H)
    return outputs[:, -1].sum()


def input_gradient_norms(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Return ‖∂L/∂x_t‖ for every sequence and time step, shape (B, T).

    L adds up the last outputs of all sequences, but the sequences of a batch never interact,
    so row b of ∂L/∂x is exactly the gradient of sequence b's own loss: one backward pass
    measures B sequences at once.
    """
    inputs = inputs.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(last_output_loss(model, inputs), inputs)  # (B, T, D)
    return gradient.norm(dim=-1)


def finite_difference_gradient(model: nn.Module, inputs: torch.Tensor, time_step: int = 0,
                               epsilon: float = 1e-6) -> torch.Tensor:
    """Central differences (L(x + εe) - L(x - εe)) / 2ε for every entry of x_{time_step}, shape (B, D).

    Slow (two forward passes per entry), so only for tiny checks; use float64 inputs and model.
    """
    gradient = torch.zeros(inputs.shape[0], inputs.shape[2], dtype=inputs.dtype)
    with torch.no_grad():
        for b in range(inputs.shape[0]):
            for d in range(inputs.shape[2]):
                shifted = inputs.clone()
                shifted[b, time_step, d] += epsilon
                loss_plus = last_output_loss(model, shifted)
                shifted[b, time_step, d] -= 2 * epsilon
                loss_minus = last_output_loss(model, shifted)
                gradient[b, d] = (loss_plus - loss_minus) / (2 * epsilon)
    return gradient


def gradient_check(seed: int) -> float:
    """Compare autograd's ∂L/∂x_1 with central differences on a tiny float64 RNN; return the max abs difference."""
    torch.manual_seed(seed)
    model = make_model("rnn", input_size=3, hidden_size=4).double()
    inputs = torch.randn(2, 5, 3, dtype=torch.float64)
    inputs_with_grad = inputs.clone().requires_grad_(True)
    (autograd_gradient,) = torch.autograd.grad(last_output_loss(model, inputs_with_grad), inputs_with_grad)
    numeric = finite_difference_gradient(model, inputs, time_step=0)
    return float((autograd_gradient[:, 0] - numeric).abs().max())


def vanishing_gradient_experiment(lengths: list[int], trials: int, batch_size: int, input_size: int,
                                  hidden_size: int, seed: int, device: torch.device) -> dict[str, dict]:
    """For each model kind and sequence length T: ‖∂L/∂x_1‖ over trials × batch_size random sequences.

    Every trial draws a fresh initialisation and fresh N(0, 1) inputs from its own seed, and the same
    seeds are used for every kind, so the kinds see the same inputs.
    Returns {kind: {"early": (len(lengths), trials * batch_size) array, "profile": (T_max,) geometric mean
    of ‖∂L/∂x_t‖ over t at the longest length, "spectral_radius": mean |eigenvalue|_max of W_hh (RNN)}}.
    """
    results: dict[str, dict] = {}
    for kind in MODEL_KINDS:
        early = np.zeros((len(lengths), trials * batch_size))
        profile_logs = []
        radii = []
        for trial in range(trials):
            torch.manual_seed(seed + trial)
            model = make_model(kind, input_size, hidden_size).double().to(device)
            if kind == "rnn":
                radii.append(float(torch.linalg.eigvals(model.weight_hh_l0.detach().cpu()).abs().max()))
            for index, length in enumerate(lengths):
                # 每个 (seed, trial, T) 一个独立的随机流：改动 lengths 不会改变其他长度的输入。
                stream = int(np.random.SeedSequence([seed, trial, length]).generate_state(1)[0])
                generator = torch.Generator().manual_seed(stream)
                inputs = torch.randn(batch_size, length, input_size, dtype=torch.float64, generator=generator).to(device)
                norms = input_gradient_norms(model, inputs).cpu()  # (B, T)
                early[index, trial * batch_size:(trial + 1) * batch_size] = norms[:, 0].numpy()
                if length == lengths[-1]:
                    profile_logs.append(np.log10(norms.numpy() + 1e-300))
        results[kind] = {
            "early": early,
            "profile": 10 ** np.concatenate(profile_logs).mean(axis=0),
            "spectral_radius": float(np.mean(radii)) if radii else float("nan"),
        }
    return results


def geometric_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(mean(log x)); 1e-300 keeps an exact zero from turning into -inf."""
    return 10 ** np.log10(np.asarray(values) + 1e-300).mean(axis=axis)


def per_step_factor(lengths: list[int], norms: np.ndarray) -> float:
    """Fit log10 ‖∂L/∂x_1‖ ≈ a + b T by least squares and return 10^b: the gradient's factor per extra step."""
    slope = np.polyfit(np.asarray(lengths, dtype=float), np.log10(norms + 1e-300), 1)[0]
    return float(10 ** slope)


# ---------------------------------------------------------------- 图


def plot_gradient_vs_length(lengths: list[int], results: dict[str, dict], path) -> None:
    """‖∂L/∂x_1‖ against T on a log scale: the geometric mean, with the 10-90 % band across sequences."""
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for kind, result in results.items():
        logs = np.log10(result["early"] + 1e-300)
        axis.plot(lengths, 10 ** logs.mean(axis=1), marker="o", markersize=3, label=MODEL_LABELS[kind])
        axis.fill_between(lengths, 10 ** np.percentile(logs, 10, axis=1), 10 ** np.percentile(logs, 90, axis=1),
                          alpha=0.2)
    axis.set_yscale("log")
    axis.set(xlabel="sequence length T", ylabel="||dL/dx_1|| (geometric mean)",
             title="gradient reaching the first input (loss on last output)")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=32, lr=1e-3, shared_loop=False)
    parser.epilog = "本脚本不训练模型：--epochs、--lr、--max-train-samples 不起作用；--batch-size 是每组初始化的序列条数。"
    parser.add_argument("--lengths", type=cli.positive_int, nargs="+", default=DEFAULT_LENGTHS, metavar="T",
                        help="要比较的序列长度 T（从小到大）")
    parser.add_argument("--trials", type=cli.positive_int, default=10, help="每个 T 取多少组随机初始化")
    parser.add_argument("--input-size", type=cli.positive_int, default=8, help="每个时间步输入向量的维数")
    parser.add_argument("--hidden-size", type=cli.positive_int, default=32, help="隐藏状态 h_t 的维数")
    args = parser.parse_args(argv)
    if args.precision != "fp32":
        parser.error("本实验全程用 float64（梯度小到 1e-30 量级，半精度和 float32 都会下溢），不接受 --precision bf16/fp16")
    lengths = sorted(set(args.lengths))
    if len(lengths) < 2:
        parser.error("--lengths 至少要给两个不同的长度，才能比较长短序列的梯度")
    if args.smoke:
        short = [length for length in lengths if length <= 20]
        lengths = short if len(short) >= 2 else lengths[:2]
        args.trials = min(args.trials, 2)
        args.batch_size = min(args.batch_size, 4)
    run_dir = cli.start_run(args, "rnn_basics")
    started = time.perf_counter()
    device = training.select_device(args.device)
    if device.type == "mps":
        logger.warning("MPS 不支持 float64，本实验改在 CPU 上运行")
        device = torch.device("cpu")

    # 1) 手写 RNN 与 nn.RNN：拷贝同一组权重，比较两层、batch_first 的输出和最终隐藏状态。
    torch.manual_seed(args.seed)
    reference = nn.RNN(args.input_size, args.hidden_size, num_layers=2, batch_first=True)
    hand = HandRNN(args.input_size, args.hidden_size, num_layers=2, batch_first=True)
    hand.load_state_dict(reference.state_dict())
    sequences = torch.randn(4, 7, args.input_size)  # (B, T, D)
    with torch.no_grad():
        hand_output, hand_state = hand(sequences)
        reference_output, reference_state = reference(sequences)
    hand_difference = max(float((hand_output - reference_output).abs().max()),
                          float((hand_state - reference_state).abs().max()))
    logger.info("手写 RNN 与 nn.RNN 的最大绝对差：%.2e（output %s，h_n %s）", hand_difference,
                tuple(hand_output.shape), tuple(hand_state.shape))

    # 2) 梯度检查：autograd 的 ∂L/∂x_1 与中心差分。
    check_difference = gradient_check(args.seed)
    logger.info("梯度检查：autograd 与中心差分的最大绝对差 %.2e", check_difference)

    # 3) 梯度消失：‖∂L/∂x_1‖ 随 T 的变化。
    logger.info("梯度消失实验：T = %s，每个 T %d 组初始化 × %d 条序列", lengths, args.trials, args.batch_size)
    with training.single_thread() if device.type == "cpu" else contextlib.nullcontext():
        results = vanishing_gradient_experiment(lengths, args.trials, args.batch_size, args.input_size,
                                                args.hidden_size, args.seed, device)

    plot_gradient_vs_length(lengths, results, run_dir / "gradient_vs_length.png")
    plots.plot_curves({MODEL_LABELS[kind]: result["profile"] for kind, result in results.items()},
                      run_dir / "gradient_by_position.png", xlabel=f"input position t (T = {lengths[-1]})",
                      ylabel="||dL/dx_t|| (geometric mean)", log_y=True,
                      title="the further from the loss, the smaller the gradient")

    # 先放三个 log10 比值（rows 循环里填入）：roadmap tour 的汇总表只显示前几个指标。
    summary: dict = {f"{kind}_log10_long_over_short": 0.0 for kind in MODEL_KINDS}
    summary.update({
        "hand_rnn_max_abs_diff": hand_difference,
        "gradient_check_max_abs_diff": check_difference,
        "min_length": lengths[0],
        "max_length": lengths[-1],
        "sequences_per_length": args.trials * args.batch_size,
        "hidden_size": args.hidden_size,
        "rnn_w_hh_spectral_radius": results["rnn"]["spectral_radius"],
    })
    rows = []
    for kind, result in results.items():
        means = geometric_mean(result["early"], axis=1)
        summary[f"{kind}_grad_norm_short"] = float(means[0])
        summary[f"{kind}_grad_norm_long"] = float(means[-1])
        # 长序列与短序列梯度之比的以 10 为底的对数：-20 表示缩小了 20 个数量级。
        summary[f"{kind}_log10_long_over_short"] = float(np.log10(means[-1] + 1e-300) - np.log10(means[0] + 1e-300))
        summary[f"{kind}_per_step_factor"] = per_step_factor(lengths, means)
        rows.append({"model": MODEL_LABELS[kind], f"||dL/dx_1|| T={lengths[0]}": f"{means[0]:.2e}",
                     f"||dL/dx_1|| T={lengths[-1]}": f"{means[-1]:.2e}",
                     "log10(long/short)": summary[f"{kind}_log10_long_over_short"],
                     "per-step factor": summary[f"{kind}_per_step_factor"]})
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table(rows))
    print(f"手写 RNN 与 nn.RNN 最大差 {hand_difference:.1e}；梯度检查最大差 {check_difference:.1e}")
    print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
