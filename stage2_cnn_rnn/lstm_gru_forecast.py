"""LSTM 与 GRU：手写门控单元，预测航空乘客数（路线图：CNN 与 RNN → 变体 LSTM（遗忘门）、GRU（简化的 LSTM）；应用：时间序列预测）

学什么
- LSTM 单元（门的顺序与 PyTorch 相同：i, f, g, o）：
      i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)        输入门 input gate：新信息写进多少
      f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)        遗忘门 forget gate：旧记忆保留多少
      g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     候选记忆 candidate cell
      o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)        输出门 output gate：记忆露出多少
      c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,   h_t = o_t ⊙ tanh(c_t)
  cell state c_t 走的是加法路径：f_t 接近 1 时梯度沿 c 几乎不衰减（见 rnn_basics 的梯度消失实验）；
- GRU 单元（顺序 r, z, n）：没有单独的 cell state，只有两个门，参数是 LSTM 的 3/4：
      r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)        重置门 reset gate
      z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)        更新门 update gate
      n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))   注意 r_t 乘在 (W_hn h + b_hn) 上，和 PyTorch 一致
      h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
  z_t 同时扮演 LSTM 的遗忘门（z）和输入门（1 - z）；
- 手写的 HandLSTM / HandGRU 参数名与 nn.LSTM / nn.GRU 相同，load_state_dict 后输出和最终状态相差不到 1e-5；
- 时间序列预测：1949-1960 年每月航空乘客数（144 个月）。最后 24 个月做测试集，之前 12 个月做验证集（挑最佳 epoch），
  再之前的月份做训练集。按时间切分，不打乱：模型只能用过去预测未来；
- 预处理：先取对数（季节波动随水平变大，取对数后近似等幅），再做一阶差分 z_t = log x_t - log x_{t-1}
  （环比增长率，去掉趋势：网络不擅长外推到训练集里没见过的水平），最后标准化。标准化的均值和标准差
  只用测试窗口之前的月份拟合，测试集的信息不会泄漏进训练（测试里检查）；
- 滑动窗口：用前 --window 个月的 z 预测下一个月的 z；预测值还原为 x̂_t = x_{t-1} · exp(ẑ_t)；
- 评估方式：单步预测（one-step-ahead），每个月都用截至上个月的真实历史。这正是模型训练时做的事；
  对照的季节朴素预测（seasonal naive，x̂_t = x_{t-12}）在测试窗口的第二年同样读测试窗口里的真实值。
  另外报告递归预测（recursive）：从测试窗口开头一次预测 24 个月，把自己的预测当作下一步的输入，误差会累积；
- 稳健性：每个模型用 --num-seeds 个种子训练，报告每个种子的 RMSE 和集成（各种子的对数预测取平均）的 RMSE；
  每个种子单独都应胜过季节朴素预测。

怎么跑
    roadmap run lstm_gru_forecast --smoke                      # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run lstm_gru_forecast
    ROADMAP_DATA_DIR=/path/to/data roadmap run lstm_gru_forecast --cell-impl nn   # 换成 nn.LSTM / nn.GRU

真实数据上的结果（144 个月：训练 95 个窗口（目标月 1950-02 到 1957-12）、验证 12 个（1958 年）、
测试 24 个（1959-1960 年）；hidden 32，100 epoch，种子 42、43、44；2 核 CPU，约 20 秒，与其他任务争用 CPU 时约 49 秒）：
    最后 24 个月的 RMSE（千人）：
    季节朴素（去年同月）          50.0
    LSTM（手写，3 个种子集成）    19.6（各种子 19.8、20.1、19.9）；递归预测 24 个月 40.0
    GRU（手写，3 个种子集成）     21.7（各种子 23.4、25.2、18.5）；递归预测 24 个月 28.0
    季节朴素 + 平均年增长率        15.9
    换成 --seed 0 和 --seed 100 再各跑一遍：9 个种子里每个模型的单步 RMSE 都在 17.7 到 25.2 之间，远低于季节朴素的 50.0。
    最后一行值得记住：只用"去年同月 × 训练期平均年增长"这一个数，就比两个网络都准。144 个点的小数据上，
    先试强基线；网络要和它比，而不只是和最朴素的基线比。
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from roadmap import cli, data, metrics, plots, runs, training  # roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

TEST_MONTHS = 24        # 测试：最后 24 个月
VALIDATION_MONTHS = 12  # 验证：测试之前的 12 个月
SEASON = 12             # 季节周期：12 个月
CELLS = ("lstm", "gru")


# ---------------------------------------------------------------- 手写 LSTM 与 GRU


def lstm_cell(x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], weight_ih: torch.Tensor,
              weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute one LSTM step. weight_ih (4H, D) and weight_hh (4H, H) stack the gates in PyTorch's order i, f, g, o."""
    h_prev, c_prev = state  # (B, H), (B, H)
    gates = x_t @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # 各 (B, H)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_t = f * c_prev + i * g  # 遗忘一部分旧记忆，写入一部分候选记忆
    h_t = o * torch.tanh(c_t)
    return h_t, c_t


def gru_cell(x_t: torch.Tensor, h_prev: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
             bias_ih: torch.Tensor, bias_hh: torch.Tensor) -> torch.Tensor:
    """Compute one GRU step. weight_ih (3H, D) and weight_hh (3H, H) stack the gates in PyTorch's order r, z, n."""
    input_r, input_z, input_n = (x_t @ weight_ih.T + bias_ih).chunk(3, dim=1)        # W_i* x_t + b_i*
    hidden_r, hidden_z, hidden_n = (h_prev @ weight_hh.T + bias_hh).chunk(3, dim=1)  # W_h* h_{t-1} + b_h*
    r = torch.sigmoid(input_r + hidden_r)
    z = torch.sigmoid(input_z + hidden_z)
    # r 乘的是 (W_hn h + b_hn) 整体，这是 nn.GRU 文档里的写法。原论文（Cho et al., 2014）是 W_hn (r ⊙ h) + b_hn，
    # 两者不等价，所以拷贝 nn.GRU 的权重时必须用同一种。
    n = torch.tanh(input_n + r * hidden_n)
    return (1 - z) * n + z * h_prev


class _HandRecurrent(nn.Module):
    """Shared plumbing of HandLSTM / HandGRU: nn-style parameter names, layers, time loop, batch_first.

    Parameters are named as in nn.LSTM / nn.GRU (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ...),
    so `hand.load_state_dict(reference.state_dict())` copies the weights of a reference of the same shape.
    """

    gate_count = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.batch_first = input_size, hidden_size, num_layers, batch_first
        rows = self.gate_count * hidden_size  # 所有门的权重叠成一个矩阵，一次矩阵乘法算完所有门
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(rows, layer_input)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(rows, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(rows)))
        bound = 1.0 / math.sqrt(hidden_size)  # 与 PyTorch 相同：全部取 U(-1/√H, 1/√H)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def layer_weights(self, layer: int) -> list[torch.Tensor]:
        return [getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def check_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return the inputs as (T, B, D), whichever layout they came in."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"输入应为三维 (T, B, {self.input_size})（batch_first 时为 (B, T, {self.input_size})），"
                             f"收到 {tuple(inputs.shape)}")
        return inputs.transpose(0, 1) if self.batch_first else inputs

    def finish(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence.transpose(0, 1) if self.batch_first else sequence


class HandLSTM(_HandRecurrent):
    """LSTM unrolled over time with `lstm_cell`; forward returns (output, (h_n, c_n)) like nn.LSTM."""

    gate_count = 4

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        sequence = self.check_input(inputs)  # (T, B, D)
        if state is None:
            zeros = sequence.new_zeros(self.num_layers, sequence.shape[1], self.hidden_size)
            state = (zeros, zeros)
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            h_t, c_t = state[0][layer], state[1][layer]  # (B, H)
            outputs = []
            for x_t in sequence:  # 时间步 t = 1..T
                h_t, c_t = lstm_cell(x_t, (h_t, c_t), *self.layer_weights(layer))
                outputs.append(h_t)
            sequence = torch.stack(outputs)  # (T, B, H)：下一层的输入
            final_h.append(h_t)
            final_c.append(c_t)
        return self.finish(sequence), (torch.stack(final_h), torch.stack(final_c))


class HandGRU(_HandRecurrent):
    """GRU unrolled over time with `gru_cell`; forward returns (output, h_n) like nn.GRU."""

    gate_count = 3

    def forward(self, inputs: torch.Tensor, h_0: torch.Tensor | None = None):
        sequence = self.check_input(inputs)  # (T, B, D)
        if h_0 is None:
            h_0 = sequence.new_zeros(self.num_layers, sequence.shape[1], self.hidden_size)
        final_h = []
        for layer in range(self.num_layers):
            h_t = h_0[layer]
            outputs = []
            for x_t in sequence:
                h_t = gru_cell(x_t, h_t, *self.layer_weights(layer))
                outputs.append(h_t)
            sequence = torch.stack(outputs)
            final_h.append(h_t)
        return self.finish(sequence), torch.stack(final_h)


class Forecaster(nn.Module):
    """Window of past values -> recurrent layer -> last hidden state -> Linear -> next value."""

    def __init__(self, cell: str, hidden_size: int = 32, num_layers: int = 1, impl: str = "hand"):
        super().__init__()
        classes = {("lstm", "hand"): HandLSTM, ("gru", "hand"): HandGRU, ("lstm", "nn"): nn.LSTM, ("gru", "nn"): nn.GRU}
        if (cell, impl) not in classes:
            raise ValueError(f"cell 只能是 {CELLS}，impl 只能是 ('hand', 'nn')；收到 {cell!r}, {impl!r}")
        self.rnn = classes[cell, impl](1, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(windows.unsqueeze(-1))  # (B, W) -> (B, W, 1) -> (B, W, H)
        return self.head(outputs[:, -1]).squeeze(-1)  # 只用最后一个时间步的 h_W：(B,)


# ---------------------------------------------------------------- 数据


@dataclass
class Scaler:
    """Standardisation z -> (z - mean) / std, with mean and std taken from the fitting data only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        values = np.asarray(values, dtype=np.float64)
        if values.size < 2 or not np.all(np.isfinite(values)):
            raise ValueError(f"拟合标准化需要至少 2 个有限数值，收到 {values.size} 个")
        return cls(float(values.mean()), float(values.std()) or 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values) - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values) * self.std + self.mean


def log_differences(values: np.ndarray) -> np.ndarray:
    """z_t = log x_t - log x_{t-1} for t = 1..N-1; z[0] is NaN so that z[t] lines up with month t."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(values <= 0):
        raise ValueError("取对数需要全部为正数；这个序列里有 0 或负数")
    differences = np.full(len(values), np.nan)
    differences[1:] = np.diff(np.log(values))
    return differences


def make_windows(scaled: np.ndarray, months: np.ndarray, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target month t: input scaled[t-window:t], target scaled[t]. Returns (len(months), window), (len(months),)."""
    inputs = np.stack([scaled[t - window:t] for t in months])
    targets = scaled[months]
    return torch.tensor(inputs, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32)


def prepare_data(values: np.ndarray, window: int, test_months: int = TEST_MONTHS,
                 validation_months: int = VALIDATION_MONTHS) -> dict:
    """Split by time, transform, fit the scaler on the months before the test window, build windows.

    Month indices: test = the last `test_months`, validation = the `validation_months` before it,
    train = every earlier month that has a full window of differences behind it (t >= window + 1).
    """
    count = len(values)
    test_start = count - test_months
    validation_start = test_start - validation_months
    first_target = window + 1  # z_1 是第一个差分，窗口 z_{t-window}..z_{t-1} 要求 t - window >= 1
    if validation_start - first_target < 12:
        raise ValueError(f"序列只有 {count} 个月：去掉测试 {test_months} 个月、验证 {validation_months} 个月和"
                         f"窗口 {window} 个月后训练样本不足 12 个；请减小 --window")
    differences = log_differences(values)
    scaler = Scaler.fit(differences[1:test_start])  # 只看测试窗口之前的月份
    scaled = scaler.transform(differences)
    split_months = {
        "train": np.arange(first_target, validation_start),
        "val": np.arange(validation_start, test_start),
        "test": np.arange(test_start, count),
    }
    prepared = {"scaler": scaler, "scaled": scaled, "months": split_months, "test_start": test_start}
    for split, months in split_months.items():
        prepared[f"{split}_x"], prepared[f"{split}_y"] = make_windows(scaled, months, window)
    return prepared


# ---------------------------------------------------------------- 预测与评估


def seasonal_naive(values: np.ndarray, months: np.ndarray, season: int = SEASON) -> np.ndarray:
    """x̂_t = x_{t - season}: the same month one year earlier."""
    return np.asarray(values)[months - season]


def seasonal_naive_with_drift(values: np.ndarray, months: np.ndarray, fit_end: int, season: int = SEASON) -> np.ndarray:
    """x̂_t = x_{t - season} · exp(d), d = mean yearly log growth log x_t - log x_{t-season} over months before `fit_end`."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    drift = float(np.mean(logs[season:fit_end] - logs[:fit_end - season]))
    return np.asarray(values)[months - season] * math.exp(drift)


@torch.no_grad()
def one_step_forecast(model: nn.Module, prepared: dict, values: np.ndarray, device: torch.device) -> np.ndarray:
    """x̂_t = x_{t-1} exp(ẑ_t) for every test month, each from the true history up to month t-1."""
    model.eval()
    predicted = prepared["scaler"].inverse(model(prepared["test_x"].to(device)).float().cpu().numpy())
    months = prepared["months"]["test"]
    return np.asarray(values)[months - 1] * np.exp(predicted)


@torch.no_grad()
def recursive_forecast(model: nn.Module, prepared: dict, values: np.ndarray, window: int,
                       device: torch.device) -> np.ndarray:
    """Forecast the whole test window from its start, feeding each prediction back as the next input."""
    model.eval()
    scaler, test_start = prepared["scaler"], prepared["test_start"]
    scaled = list(prepared["scaled"][:test_start])  # 只用测试窗口之前的真实历史
    level = float(np.log(values[test_start - 1]))
    forecasts = []
    for _ in range(len(values) - test_start):
        inputs = torch.tensor([scaled[-window:]], dtype=torch.float32, device=device)  # (1, W)
        step = float(model(inputs).float().cpu()[0])
        scaled.append(step)  # 自己的预测变成下一步的输入
        level += float(scaler.inverse(step))
        forecasts.append(math.exp(level))
    return np.asarray(forecasts)


@contextlib.contextmanager
def quiet_epoch_logs():
    """Silence roadmap.training's per-epoch INFO lines (hundreds of tiny epochs x several runs) for a while."""
    training_logger = logging.getLogger("roadmap.training")
    previous = training_logger.level
    training_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        training_logger.setLevel(previous)


def train_one(cell: str, seed: int, prepared: dict, args, accelerator, run_dir) -> tuple[nn.Module, training.FitResult]:
    """Train one Forecaster with the shared loop; the best epoch is chosen by validation MSE."""
    torch.manual_seed(seed)
    model = Forecaster(cell, args.hidden_size, args.num_layers, args.cell_impl)
    train_loader = DataLoader(TensorDataset(prepared["train_x"], prepared["train_y"]), batch_size=args.batch_size,
                              shuffle=True)
    val_loader = DataLoader(TensorDataset(prepared["val_x"], prepared["val_y"]), batch_size=256)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(train_loader) / args.grad_accum_steps)
    # 余弦退火：后期学习率变小，验证误差不再随小批量噪声大幅跳动，挑出来的"最佳 epoch"更可靠。
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    name = f"{cell}_seed{seed}"
    with quiet_epoch_logs():
        result = training.fit(
            model, optimizer, train_loader, val_loader, accelerator=accelerator, loss_fn=nn.MSELoss(),
            epochs=args.epochs, seed=seed, monitor="loss", mode="min", patience=args.patience,
            scheduler=scheduler, max_grad_norm=1.0, checkpoint_dir=run_dir / "checkpoints" / name,
            resume=args.resume is not None, name=name,
        )
    logger.info("[%s] 最佳 epoch %d，验证 MSE（标准化后）%.4f", name, result.best_epoch, result.best_metrics["val_loss"])
    return accelerator.unwrap_model(model), result


def train_seeds(cell: str, seeds: list[int], prepared: dict, values: np.ndarray, args, accelerator, run_dir) -> dict:
    """Train one model per seed and collect its one-step and recursive forecasts of the test window."""
    collected: dict = {"one_step": [], "recursive": [], "best_epochs": [], "ranks_agree": True}
    for seed in tqdm(seeds, desc=f"{cell} seeds", disable=not runs.is_main_process()):
        model, result = train_one(cell, seed, prepared, args, accelerator, run_dir)
        collected["one_step"].append(one_step_forecast(model, prepared, values, accelerator.device))
        collected["recursive"].append(recursive_forecast(model, prepared, values, args.window, accelerator.device))
        collected["best_epochs"].append(result.best_epoch)
        collected["ranks_agree"] &= result.ranks_agree
        if seed == seeds[0]:
            plots.plot_history(result.history, run_dir / f"{cell}_curves.png", title=f"{cell.upper()} seed {seed}")
    return collected


# ---------------------------------------------------------------- 图


def plot_forecasts(month_labels: list[str], values: np.ndarray, test_months: np.ndarray, forecasts: dict[str, np.ndarray],
                   path) -> None:
    """Whole series with the test window shaded (left), and the test window up close (right)."""
    figure, (whole, close) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
    positions = np.arange(len(values))
    for axis, panel_months in ((whole, positions), (close, positions[test_months[0] - SEASON:])):
        history = panel_months[panel_months < test_months[0]]
        axis.plot(history, values[history], color="0.5", label="history")
        axis.plot(test_months, values[test_months], color="black", linewidth=2, label="truth")
        for name, forecast in forecasts.items():
            style = {"linestyle": "--", "color": "tab:gray"} if name.startswith("seasonal") else {"marker": "o", "markersize": 3}
            axis.plot(test_months, forecast, label=name, **style)
        axis.axvspan(test_months[0] - 0.5, test_months[-1] + 0.5, color="tab:blue", alpha=0.06)
        ticks = [index for index in panel_months if month_labels[index].endswith("-01")]
        axis.set_xticks(ticks, [month_labels[index][:4] for index in ticks], rotation=45 if axis is close else 0)
        axis.set(xlabel="month", ylabel="passengers (thousands)")
        axis.grid(alpha=0.3)
    whole.set_title("airline passengers: last 24 months held out")
    close.set_title("test window (one-step-ahead forecasts)")
    close.legend(fontsize=8)
    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=100, batch_size=16, lr=5e-3)
    parser.add_argument("--window", type=cli.positive_int, default=12, help="输入窗口：用前多少个月预测下一个月")
    parser.add_argument("--hidden-size", type=cli.positive_int, default=32, help="隐藏状态维数")
    parser.add_argument("--num-layers", type=cli.positive_int, default=1, help="堆叠的循环层数")
    parser.add_argument("--num-seeds", type=cli.positive_int, default=3,
                        help="每个模型用几个种子训练（--seed, --seed+1, ...），报告各自的 RMSE 和集成的 RMSE")
    parser.add_argument("--cell-impl", choices=("hand", "nn"), default="hand",
                        help="hand：本文件手写的 HandLSTM/HandGRU；nn：PyTorch 的 nn.LSTM/nn.GRU（更快）")
    args = parser.parse_args(argv)
    if args.max_train_samples is not None:
        parser.error("时间序列按时间切分，不能随便截掉训练样本；要缩短训练请减小 --epochs")
    cli.apply_smoke(args, epochs=3)
    if args.smoke:
        args.num_seeds = min(args.num_seeds, 2)
    run_dir = cli.start_run(args, "lstm_gru_forecast")
    started = time.perf_counter()

    month_labels, values = data.load_airline_passengers(args.data_dir, smoke=args.smoke)
    try:
        prepared = prepare_data(values, args.window)
    except ValueError as error:
        parser.error(str(error))
    test_months = prepared["months"]["test"]
    truth = values[test_months]
    logger.info("%d 个月（%s 到 %s）：训练 %d 个窗口、验证 %d 个、测试 %d 个；标准化 mean=%.4f std=%.4f（只用测试前的月份）",
                len(values), month_labels[0], month_labels[-1], len(prepared["train_y"]), len(prepared["val_y"]),
                len(test_months), prepared["scaler"].mean, prepared["scaler"].std)
    accelerator = training.create_accelerator(args, run_dir)

    baseline = seasonal_naive(values, test_months)
    drift_baseline = seasonal_naive_with_drift(values, test_months, prepared["test_start"])
    forecasts = {"seasonal naive": baseline}
    seeds = [args.seed + offset for offset in range(args.num_seeds)]
    with training.single_thread() if accelerator.device.type == "cpu" else contextlib.nullcontext():
        trained = {cell: train_seeds(cell, seeds, prepared, values, args, accelerator, run_dir) for cell in CELLS}

    # 先放最重要的几个 RMSE：roadmap tour 的汇总表只显示前几个指标。
    summary: dict = {"seasonal_naive_rmse": metrics.rmse(baseline, truth)}
    details: dict = {}
    rows = [{"model": "seasonal naive", "RMSE (ensemble)": summary["seasonal_naive_rmse"]}]
    for cell, result in trained.items():
        # 集成：各种子的预测在对数空间平均（即几何平均），与模型的对数尺度一致。
        ensemble = np.exp(np.mean(np.log(result["one_step"]), axis=0))
        ensemble_recursive = np.exp(np.mean(np.log(result["recursive"]), axis=0))
        seed_rmse = [metrics.rmse(forecast, truth) for forecast in result["one_step"]]
        forecasts[f"{cell.upper()} (ensemble of {len(seeds)})"] = ensemble
        summary[f"{cell}_rmse"] = metrics.rmse(ensemble, truth)
        details.update({
            f"{cell}_seed_rmse_mean": float(np.mean(seed_rmse)),
            f"{cell}_seed_rmse_std": float(np.std(seed_rmse)),
            f"{cell}_seed_rmse_max": float(np.max(seed_rmse)),
            f"{cell}_seed_rmse": seed_rmse,
            f"{cell}_recursive_rmse": metrics.rmse(ensemble_recursive, truth),
            f"{cell}_best_epochs": result["best_epochs"],
            f"{cell}_ranks_agree": result["ranks_agree"],
        })
        rows.append({"model": f"{cell.upper()} ({args.cell_impl})", "RMSE (ensemble)": summary[f"{cell}_rmse"],
                     "RMSE per seed": ", ".join(f"{value:.1f}" for value in seed_rmse),
                     "recursive 24-month RMSE": details[f"{cell}_recursive_rmse"]})
    summary["seasonal_naive_drift_rmse"] = metrics.rmse(drift_baseline, truth)
    rows.append({"model": "seasonal naive + drift", "RMSE (ensemble)": summary["seasonal_naive_drift_rmse"]})
    summary.update(details)
    summary.update({
        "months": len(values),
        "train_windows": len(prepared["train_y"]),
        "val_windows": len(prepared["val_y"]),
        "test_months": len(test_months),
        "seeds": len(seeds),
    })

    plot_forecasts(month_labels, values, test_months, forecasts, run_dir / "forecast.png")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table(rows))
        print(f"最后 {len(test_months)} 个月的 RMSE（单位同数据：千人）；图和指标在 {run_dir}")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    cli.run_script(main)
