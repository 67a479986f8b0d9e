"""Stage 2 RNN lessons against references: nn.RNN / nn.LSTM / nn.GRU with copied weights,
finite differences, hand-checked scaling, and the drawn LSTM diagram's labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from stage2_cnn_rnn import lstm_cell_diagram, lstm_gru_forecast, rnn_basics

# ---------------------------------------------------------------- rnn_basics


def _max_abs_diff(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first - second).abs().max())


@pytest.mark.parametrize(
    ("input_size", "hidden_size", "num_layers", "batch_first", "nonlinearity", "steps", "batch"),
    [
        (3, 5, 1, False, "tanh", 4, 2),
        (3, 5, 1, True, "tanh", 4, 2),
        (1, 16, 2, True, "tanh", 9, 3),
        (7, 4, 3, False, "tanh", 1, 5),
        (6, 8, 2, False, "relu", 6, 1),
    ],
)
def test_hand_rnn_matches_nn_rnn(input_size, hidden_size, num_layers, batch_first, nonlinearity, steps, batch):
    torch.manual_seed(0)
    reference = nn.RNN(input_size, hidden_size, num_layers=num_layers, nonlinearity=nonlinearity,
                       batch_first=batch_first)
    hand = rnn_basics.HandRNN(input_size, hidden_size, num_layers=num_layers, nonlinearity=nonlinearity,
                              batch_first=batch_first)
    hand.load_state_dict(reference.state_dict())
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    inputs = torch.randn(shape)
    with torch.no_grad():
        output, h_n = hand(inputs)
        expected_output, expected_h_n = reference(inputs)
    assert output.shape == expected_output.shape
    assert h_n.shape == expected_h_n.shape
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5


def test_hand_rnn_initial_state():
    torch.manual_seed(1)
    reference = nn.RNN(4, 6, num_layers=2)
    hand = rnn_basics.HandRNN(4, 6, num_layers=2)
    hand.load_state_dict(reference.state_dict())
    inputs, h_0 = torch.randn(5, 3, 4), torch.randn(2, 3, 6)
    with torch.no_grad():
        output, h_n = hand(inputs, h_0)
        expected_output, expected_h_n = reference(inputs, h_0)
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5


def test_hand_rnn_gradients_match_nn_rnn():
    torch.manual_seed(2)
    reference = nn.RNN(3, 4, batch_first=True)
    hand = rnn_basics.HandRNN(3, 4, batch_first=True)
    hand.load_state_dict(reference.state_dict())
    inputs = torch.randn(2, 6, 3)
    hand(inputs)[0].sum().backward()
    reference(inputs)[0].sum().backward()
    for name, parameter in hand.named_parameters():
        assert _max_abs_diff(parameter.grad, dict(reference.named_parameters())[name].grad) <= 1e-5, name


def test_hand_rnn_rejects_wrong_input_size():
    hand = rnn_basics.HandRNN(3, 4)
    with pytest.raises(ValueError, match="输入应为三维"):
        hand(torch.randn(5, 2, 7))


def test_hand_rnn_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_basics.HandRNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", rnn_basics.MODEL_KINDS)
def test_gradient_norms_match_finite_differences(kind):
    torch.manual_seed(3)
    model = rnn_basics.make_model(kind, input_size=2, hidden_size=3).double()
    inputs = torch.randn(2, 4, 2, dtype=torch.float64)
    measured = rnn_basics.input_gradient_norms(model, inputs)  # (B, T)
    numeric = rnn_basics.finite_difference_gradient(model, inputs, time_step=0)  # (B, D)
    assert measured.shape == (2, 4)
    torch.testing.assert_close(measured[:, 0], numeric.norm(dim=1), rtol=1e-6, atol=1e-9)


def test_gradient_check_is_tight():
    assert rnn_basics.gradient_check(seed=0) < 1e-7


def test_forget_bias_shifts_forget_gate():
    torch.manual_seed(4)
    plain = rnn_basics.make_model("lstm", 2, 3)
    torch.manual_seed(4)
    shifted = rnn_basics.make_model("lstm_forget_bias", 2, 3)
    difference = shifted.bias_ih_l0.detach() - plain.bias_ih_l0.detach()  # gates i, f, g, o
    torch.testing.assert_close(difference, torch.tensor([0.0] * 3 + [1.0] * 3 + [0.0] * 6))


def test_per_step_factor_of_exact_exponential():
    lengths = [5, 10, 20, 40]
    assert rnn_basics.per_step_factor(lengths, 0.5 ** np.asarray(lengths, dtype=float)) == pytest.approx(0.5)


def test_geometric_mean():
    assert rnn_basics.geometric_mean(np.array([1e-2, 1e-6])) == pytest.approx(1e-4)


@pytest.fixture(scope="module")
def vanishing_results():
    lengths = [5, 40]
    results = rnn_basics.vanishing_gradient_experiment(lengths, trials=3, batch_size=8, input_size=4, hidden_size=16,
                                                       seed=0, device=torch.device("cpu"))
    return {kind: rnn_basics.geometric_mean(result["early"], axis=1) for kind, result in results.items()}


def test_rnn_gradient_vanishes_with_length(vanishing_results):
    short, long = vanishing_results["rnn"]
    assert long < short * 1e-4


@pytest.mark.parametrize("kind", ["lstm", "lstm_forget_bias"])
def test_lstm_gradient_decays_less_than_rnn(vanishing_results, kind):
    rnn_short, rnn_long = vanishing_results["rnn"]
    short, long = vanishing_results[kind]
    assert long / short > rnn_long / rnn_short


def test_rnn_basics_rejects_half_precision(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rnn_basics.main(["--smoke", "--precision", "bf16", "--output-dir", str(tmp_path)])
    assert "float64" in capsys.readouterr().err


# ---------------------------------------------------------------- lstm_gru_forecast

RECURRENT_SHAPES = [
    # input_size, hidden_size, num_layers, batch_first, steps, batch
    (1, 8, 1, True, 12, 4),
    (1, 8, 1, False, 12, 4),
    (5, 3, 2, True, 7, 2),
    (4, 16, 3, False, 1, 6),
]


@pytest.mark.parametrize(("input_size", "hidden_size", "num_layers", "batch_first", "steps", "batch"), RECURRENT_SHAPES)
def test_hand_lstm_matches_nn_lstm(input_size, hidden_size, num_layers, batch_first, steps, batch):
    torch.manual_seed(10)
    reference = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first)
    hand = lstm_gru_forecast.HandLSTM(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first)
    hand.load_state_dict(reference.state_dict())
    inputs = torch.randn((batch, steps, input_size) if batch_first else (steps, batch, input_size))
    with torch.no_grad():
        output, (h_n, c_n) = hand(inputs)
        expected_output, (expected_h_n, expected_c_n) = reference(inputs)
    assert output.shape == expected_output.shape
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5
    assert _max_abs_diff(c_n, expected_c_n) <= 1e-5


@pytest.mark.parametrize(("input_size", "hidden_size", "num_layers", "batch_first", "steps", "batch"), RECURRENT_SHAPES)
def test_hand_gru_matches_nn_gru(input_size, hidden_size, num_layers, batch_first, steps, batch):
    torch.manual_seed(11)
    reference = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first)
    hand = lstm_gru_forecast.HandGRU(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first)
    hand.load_state_dict(reference.state_dict())
    inputs = torch.randn((batch, steps, input_size) if batch_first else (steps, batch, input_size))
    with torch.no_grad():
        output, h_n = hand(inputs)
        expected_output, expected_h_n = reference(inputs)
    assert output.shape == expected_output.shape
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5


def test_hand_lstm_initial_state():
    torch.manual_seed(12)
    reference = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    hand = lstm_gru_forecast.HandLSTM(3, 5, num_layers=2, batch_first=True)
    hand.load_state_dict(reference.state_dict())
    inputs, h_0, c_0 = torch.randn(4, 6, 3), torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    with torch.no_grad():
        output, (h_n, c_n) = hand(inputs, (h_0, c_0))
        expected_output, (expected_h_n, expected_c_n) = reference(inputs, (h_0, c_0))
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5
    assert _max_abs_diff(c_n, expected_c_n) <= 1e-5


def test_hand_gru_initial_state():
    torch.manual_seed(13)
    reference = nn.GRU(3, 5, num_layers=2)
    hand = lstm_gru_forecast.HandGRU(3, 5, num_layers=2)
    hand.load_state_dict(reference.state_dict())
    inputs, h_0 = torch.randn(6, 4, 3), torch.randn(2, 4, 5)
    with torch.no_grad():
        output, h_n = hand(inputs, h_0)
        expected_output, expected_h_n = reference(inputs, h_0)
    assert _max_abs_diff(output, expected_output) <= 1e-5
    assert _max_abs_diff(h_n, expected_h_n) <= 1e-5


@pytest.mark.parametrize("cell", lstm_gru_forecast.CELLS)
def test_hand_cell_gradients_match_nn(cell):
    torch.manual_seed(14)
    reference = lstm_gru_forecast.Forecaster(cell, hidden_size=6, impl="nn")
    hand = lstm_gru_forecast.Forecaster(cell, hidden_size=6, impl="hand")
    hand.load_state_dict(reference.state_dict())
    windows = torch.randn(5, 12)
    hand(windows).square().sum().backward()
    reference(windows).square().sum().backward()
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in hand.named_parameters():
        assert _max_abs_diff(parameter.grad, reference_parameters[name].grad) <= 1e-5, name


def test_gru_reset_gate_placement():
    # With W_hn = 2 I and b_hn = 1 the two GRU variants differ: r ⊙ (W_hn h + b_hn) vs W_hn (r ⊙ h) + b_hn.
    hidden = 2
    weight_ih = torch.zeros(3 * hidden, 1)
    weight_hh = torch.cat([torch.zeros(2 * hidden, hidden), 2 * torch.eye(hidden)])
    bias_ih = torch.zeros(3 * hidden)
    bias_hh = torch.cat([torch.zeros(2 * hidden), torch.ones(hidden)])
    h_prev = torch.tensor([[0.5, -1.0]])
    h_t = lstm_gru_forecast.gru_cell(torch.zeros(1, 1), h_prev, weight_ih, weight_hh, bias_ih, bias_hh)
    r = z = torch.tensor(0.5)  # σ(0)
    expected = (1 - z) * torch.tanh(r * (2 * h_prev + 1)) + z * h_prev
    torch.testing.assert_close(h_t, expected)


def test_lstm_cell_by_hand():
    # One unit, all weights 0, biases chosen per gate: i = σ(1), f = σ(-1), g = tanh(0.5), o = σ(2).
    bias_ih = torch.tensor([1.0, -1.0, 0.5, 2.0])
    c_prev = torch.tensor([[0.3]])
    h_t, c_t = lstm_gru_forecast.lstm_cell(torch.zeros(1, 1), (torch.zeros(1, 1), c_prev), torch.zeros(4, 1),
                                           torch.zeros(4, 1), bias_ih, torch.zeros(4))
    sigmoid = torch.sigmoid
    expected_c = sigmoid(torch.tensor(-1.0)) * 0.3 + sigmoid(torch.tensor(1.0)) * torch.tanh(torch.tensor(0.5))
    torch.testing.assert_close(c_t, expected_c.reshape(1, 1))
    torch.testing.assert_close(h_t, (sigmoid(torch.tensor(2.0)) * torch.tanh(expected_c)).reshape(1, 1))


def test_forecaster_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell"):
        lstm_gru_forecast.Forecaster("transformer")


def test_log_differences_by_hand():
    differences = lstm_gru_forecast.log_differences(np.array([100.0, 110.0, 99.0]))
    assert np.isnan(differences[0])
    assert differences[1] == pytest.approx(np.log(1.1))
    assert differences[2] == pytest.approx(np.log(0.9))


def test_log_differences_rejects_non_positive_values():
    with pytest.raises(ValueError, match="正数"):
        lstm_gru_forecast.log_differences(np.array([1.0, 0.0, 2.0]))


def _toy_series(count: int = 144) -> np.ndarray:
    months = np.arange(count)
    return 100 * np.exp(0.01 * months) * (1 + 0.2 * np.sin(2 * np.pi * months / 12))


def test_split_is_chronological_and_complete():
    prepared = lstm_gru_forecast.prepare_data(_toy_series(), window=12)
    months = prepared["months"]
    assert months["test"].tolist() == list(range(120, 144))
    assert months["val"].tolist() == list(range(108, 120))
    assert months["train"][0] == 13
    assert months["train"][-1] == 107
    assert prepared["test_x"].shape == (24, 12)


def test_windows_hold_the_previous_months():
    prepared = lstm_gru_forecast.prepare_data(_toy_series(), window=12)
    scaled = prepared["scaled"]
    first_test = 120
    np.testing.assert_allclose(prepared["test_x"][0].numpy(), scaled[108:120], rtol=1e-6)
    assert prepared["test_y"][0].item() == pytest.approx(scaled[first_test], rel=1e-6)


def test_scaler_never_sees_the_test_part():
    values = _toy_series()
    changed = values.copy()
    changed[120:] *= np.linspace(1.0, 50.0, 24)  # a wild test window
    original = lstm_gru_forecast.prepare_data(values, window=12)
    tampered = lstm_gru_forecast.prepare_data(changed, window=12)
    assert tampered["scaler"] == original["scaler"]
    for split in ("train", "val"):
        torch.testing.assert_close(tampered[f"{split}_x"], original[f"{split}_x"], rtol=0, atol=0)
        torch.testing.assert_close(tampered[f"{split}_y"], original[f"{split}_y"], rtol=0, atol=0)
    assert not torch.equal(tampered["test_y"], original["test_y"])


def test_scaler_fits_pre_test_months():
    values = _toy_series()
    prepared = lstm_gru_forecast.prepare_data(values, window=12)
    differences = np.diff(np.log(values[:120]))  # months 1..119
    assert prepared["scaler"].mean == pytest.approx(differences.mean())
    assert prepared["scaler"].std == pytest.approx(differences.std())


def test_scaler_round_trip():
    scaler = lstm_gru_forecast.Scaler.fit(np.array([1.0, 2.0, 3.0, 6.0]))
    values = np.array([-1.0, 0.5, 10.0])
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values)


def test_prepare_data_rejects_too_short_series():
    with pytest.raises(ValueError, match="--window"):
        lstm_gru_forecast.prepare_data(_toy_series(60), window=12)


def test_seasonal_naive_is_value_one_year_earlier():
    values = np.arange(30, dtype=float)
    assert lstm_gru_forecast.seasonal_naive(values, np.array([12, 29])).tolist() == [0.0, 17.0]


def test_drift_ignores_test_part():
    values = np.exp(0.1 * np.arange(48) / 12)  # exactly 10 % log growth per year
    values[36:] = 1.0  # the test part must not matter
    forecast = lstm_gru_forecast.seasonal_naive_with_drift(values, np.array([36]), fit_end=36)
    assert forecast[0] == pytest.approx(values[24] * np.exp(0.1))


class _ConstantChange(nn.Module):
    """Predicts the same scaled change for every window."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.full((windows.shape[0],), self.value)


def test_zero_change_forecast_is_naive():
    values = _toy_series()
    prepared = lstm_gru_forecast.prepare_data(values, window=12)
    zero_change = _ConstantChange(-prepared["scaler"].mean / prepared["scaler"].std)  # ẑ = 0 after unscaling
    forecast = lstm_gru_forecast.one_step_forecast(zero_change, prepared, values, torch.device("cpu"))
    np.testing.assert_allclose(forecast, values[119:143], rtol=1e-5)


def test_zero_change_recursive_forecast_stays_flat():
    values = _toy_series()
    prepared = lstm_gru_forecast.prepare_data(values, window=12)
    zero_change = _ConstantChange(-prepared["scaler"].mean / prepared["scaler"].std)
    forecast = lstm_gru_forecast.recursive_forecast(zero_change, prepared, values, 12, torch.device("cpu"))
    np.testing.assert_allclose(forecast, np.full(24, values[119]), rtol=1e-5)


def test_single_thread_restores_thread_count():
    from roadmap import training

    before = torch.get_num_threads()
    with training.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_forecast_rejects_max_train_samples(tmp_path):
    with pytest.raises(SystemExit):
        lstm_gru_forecast.main(["--smoke", "--max-train-samples", "10", "--output-dir", str(tmp_path)])


# ---------------------------------------------------------------- lstm_cell_diagram

REQUIRED_CHINESE = ("输入门", "遗忘门", "输出门", "候选记忆", "细胞状态", "隐藏状态")
REQUIRED_ENGLISH = ("input gate", "forget gate", "output gate", "candidate", "cell state", "hidden state")
GLYPH_MISSING = ".*missing from font.*"


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _draw_strictly(path, font) -> list[str]:
    """Draw the diagram with every 'Glyph ... missing from font' warning turned into an error."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=GLYPH_MISSING)
        figure = lstm_cell_diagram.draw_lstm_cell(path, font)
    texts = lstm_cell_diagram.drawn_texts(figure)
    plt.close(figure)
    return texts


def _contains(texts: list[str], label: str) -> bool:
    return any(label in text for text in texts)


def test_missing_glyph_warning_is_detectable(tmp_path):
    # Guards the check below: DejaVu Sans has no Chinese, so drawing Chinese with it must warn.
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.text(0.5, 0.5, "遗忘门", family="DejaVu Sans")
    with pytest.raises(UserWarning, match="missing from font"):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=GLYPH_MISSING)
            figure.savefig(tmp_path / "tofu.png")
    plt.close(figure)


@pytest.fixture(scope="module")
def best_font():
    """The Chinese font when the machine has one, otherwise None (English-only labels)."""
    return lstm_cell_diagram.find_cjk_font()


@pytest.fixture(scope="module")
def cjk_font():
    font = lstm_cell_diagram.find_cjk_font()
    if font is None:
        pytest.skip("no Chinese font on this machine: pip install pylopdf-fonts-zh-cn")
    return font


def test_found_font_covers_every_chinese_label(cjk_font):
    assert lstm_cell_diagram.covers(cjk_font.path, lstm_cell_diagram.required_characters())


def test_diagram_draws_chinese_and_english_labels(cjk_font, tmp_path):
    path = tmp_path / "lstm_cell.png"
    texts = _draw_strictly(path, cjk_font)
    for label in REQUIRED_CHINESE + REQUIRED_ENGLISH:
        assert _contains(texts, label), label
    assert _contains(texts, "遗忘门 forget gate")


def test_diagram_draws_symbols_and_equations(best_font, tmp_path):
    texts = _draw_strictly(tmp_path / "lstm_cell.png", best_font)
    assert texts.count(r"$\sigma$") == 3  # forget, input and output gates
    assert _contains(texts, r"$\tanh$")
    for symbol in (r"$c_{t-1}$", r"$c_t$", r"$h_{t-1}$", r"$h_t$", r"$x_t$", r"\tilde{c}_t"):
        assert _contains(texts, symbol), symbol
    for equation in lstm_cell_diagram.EQUATIONS:
        assert equation in texts


def test_diagram_png_is_written(best_font, tmp_path):
    path = tmp_path / "lstm_cell.png"
    _draw_strictly(path, best_font)
    width, height = _png_size(path)
    assert width >= 1500
    assert height >= 700
    assert path.stat().st_size > 50_000


def test_diagram_main_with_chinese_font(cjk_font, tmp_path):
    result = lstm_cell_diagram.main(["--output-dir", str(tmp_path), "--require-chinese"])
    assert result["chinese_labels"] is True
    assert result["missing_glyphs"] == 0
    assert result["equations_drawn"] == 6
    assert result["labels_drawn"] >= 30
    assert (tmp_path / "lstm_cell.png").is_file()


def test_diagram_english_fallback(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lstm_cell_diagram, "find_cjk_font", lambda: None)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=GLYPH_MISSING)
        result = lstm_cell_diagram.main(["--output-dir", str(tmp_path)])
    assert result["chinese_labels"] is False
    assert result["missing_glyphs"] == 0
    assert "没有找到" in caplog.text
    texts = _draw_strictly(tmp_path / "again.png", None)
    for label in REQUIRED_ENGLISH:
        assert _contains(texts, label), label
    assert not any(ord(char) > 0x2E80 for text in texts for char in text)  # no CJK character left


def test_require_chinese_without_font(tmp_path, monkeypatch):
    monkeypatch.setattr(lstm_cell_diagram, "find_cjk_font", lambda: None)
    with pytest.raises(SystemExit, match="中文字体"):
        lstm_cell_diagram.main(["--output-dir", str(tmp_path), "--require-chinese"])


def test_default_font_does_not_cover_chinese():
    from matplotlib import font_manager
    from matplotlib.font_manager import FontProperties

    dejavu = font_manager.findfont(FontProperties(family="DejaVu Sans"))
    assert lstm_cell_diagram.covers(dejavu, "abc")
    assert not lstm_cell_diagram.covers(dejavu, "遗忘门")


def test_font_env_variable_first(cjk_font, monkeypatch):
    monkeypatch.setenv(lstm_cell_diagram.FONT_ENV, str(cjk_font.path))
    found = lstm_cell_diagram.find_cjk_font()
    assert found.path == cjk_font.path
    assert "ROADMAP_CJK_FONT" in found.source


def test_bad_font_env_variable_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(lstm_cell_diagram.FONT_ENV, str(tmp_path / "no_such_font.otf"))
    found = lstm_cell_diagram.find_cjk_font()
    assert found is None or found.path != tmp_path / "no_such_font.otf"


# ---------------------------------------------------------------- real runs (pytest -m real)


@pytest.mark.real
def test_rnn_basics_full_run(tmp_path):
    # Random inputs only, so this needs no data folder. Measured: log10 ratios -25.5 / -18.7 / -6.8.
    result = rnn_basics.main(["--output-dir", str(tmp_path)])
    assert result["max_length"] == 100
    assert result["hand_rnn_max_abs_diff"] <= 1e-5
    assert result["gradient_check_max_abs_diff"] <= 1e-7
    assert result["rnn_log10_long_over_short"] <= -20
    assert result["lstm_log10_long_over_short"] > result["rnn_log10_long_over_short"]
    assert result["lstm_forget_bias_log10_long_over_short"] >= -9
    assert result["rnn_per_step_factor"] < result["lstm_per_step_factor"] < result["lstm_forget_bias_per_step_factor"]
    for figure in ("gradient_vs_length.png", "gradient_by_position.png"):
        assert (tmp_path / figure).is_file()


@pytest.mark.real
def test_lstm_gru_forecast_beats_seasonal_naive(real_data_dir, tmp_path):
    # Measured: seasonal naive 49.99, LSTM ensemble 19.55 (seeds 19.8-20.1), GRU ensemble 21.67 (seeds 18.5-25.2).
    result = lstm_gru_forecast.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    assert result["months"] == 144
    assert result["test_months"] == 24
    assert result["seasonal_naive_rmse"] == pytest.approx(49.99, abs=0.01)
    for cell in ("lstm", "gru"):
        assert result[f"{cell}_rmse"] < result["seasonal_naive_rmse"]
        assert result[f"{cell}_seed_rmse_max"] < result["seasonal_naive_rmse"]  # every seed, not just the ensemble
    assert result["lstm_rmse"] <= 23.0
    assert result["gru_rmse"] <= 25.0
    assert result["lstm_seed_rmse_max"] <= 30.0
    assert result["gru_seed_rmse_max"] <= 30.0
    for figure in ("forecast.png", "lstm_curves.png", "gru_curves.png"):
        assert (tmp_path / figure).is_file()
