"""Stage 2 CNN lessons against references: F.conv2d / F.unfold / F.*_pool2d, gradient-measured receptive fields,
hand-counted LeNet-5 and ResNet shapes, and BatchNorm's eval-mode behaviour."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from stage2_cnn_rnn import cnn_basics, lenet_mnist, resnet_cifar10
from stage2_cnn_rnn.cnn_basics import LayerSpec

# ---------------------------------------------------------------- cnn_basics: convolution and pooling by hand

CONV_CASES = [  # (in, out, kernel, stride, padding, dilation, H, W)
    (1, 1, 1, 1, 0, 1, 5, 5),
    (1, 4, 3, 1, 0, 1, 8, 8),
    (3, 8, 3, 1, 1, 1, 9, 7),
    (3, 5, 5, 2, 2, 1, 16, 13),
    (2, 6, (3, 5), (2, 1), (1, 2), 1, 11, 10),
    (4, 4, 3, 1, 2, 2, 10, 10),
    (2, 3, 3, 3, 0, (2, 1), 17, 12),
    (3, 2, 4, 2, 3, 3, 12, 15),
    (5, 7, 7, 1, 3, 1, 7, 7),
]


def _random_conv(case, dtype=torch.float32, seed=0):
    in_ch, out_ch, kernel, stride, padding, dilation, height, width = case
    generator = torch.Generator().manual_seed(seed)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(2, in_ch, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(out_ch, in_ch, kh, kw, generator=generator, dtype=dtype) / (in_ch * kh * kw) ** 0.5
    bias = torch.randn(out_ch, generator=generator, dtype=dtype)
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_manual_matches_pytorch(case):
    x, weight, bias, options = _random_conv(case)
    mine = cnn_basics.conv2d_manual(x, weight, bias, **options)
    reference = F.conv2d(x, weight, bias, **options)
    assert mine.shape == reference.shape
    assert (mine - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_conv2d_manual_without_bias(case):
    x, weight, _, options = _random_conv(case, dtype=torch.float64)
    mine = cnn_basics.conv2d_manual(x, weight, None, **options)
    reference = F.conv2d(x, weight, None, **options)
    assert (mine - reference).abs().max().item() <= 1e-12


def test_conv2d_manual_gradients_match_pytorch():
    x, weight, bias, options = _random_conv(CONV_CASES[3], dtype=torch.float64)
    inputs = [tensor.clone().requires_grad_(True) for tensor in (x, weight, bias)]
    references = [tensor.clone().requires_grad_(True) for tensor in (x, weight, bias)]
    cnn_basics.conv2d_manual(*inputs, **options).square().sum().backward()
    F.conv2d(*references, **options).square().sum().backward()
    for mine, reference in zip(inputs, references):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-10, atol=1e-10)


def test_conv2d_manual_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="通道"):
        cnn_basics.conv2d_manual(torch.zeros(1, 3, 8, 8), torch.zeros(4, 2, 3, 3))


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_matches_unfold(case):
    x, weight, _, options = _random_conv(case)
    kernel = tuple(weight.shape[-2:])
    torch.testing.assert_close(cnn_basics.im2col(x, kernel, **options), F.unfold(x, kernel, **options), rtol=0, atol=0)


def test_output_size_matches_conv2d_brute_force():
    x = torch.zeros(1, 1, 1, 1)
    for size, kernel, stride, padding, dilation in itertools.product((5, 8, 13), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2),
                                                                       (1, 2)):
        if size + 2 * padding < dilation * (kernel - 1) + 1:
            continue
        x = torch.zeros(1, 1, size, size)
        shape = F.conv2d(x, torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding, dilation=dilation).shape
        assert cnn_basics.output_size(size, kernel, stride, padding, dilation) == shape[-1], (size, kernel, stride,
                                                                                              padding, dilation)


def test_output_size_rejects_too_small_input():
    with pytest.raises(ValueError, match="放不下"):
        cnn_basics.output_size(3, 5)


POOL_CASES = [  # (kernel, stride, padding, H, W)
    (2, None, 0, 8, 8),
    (2, 2, 1, 7, 9),
    (3, 2, 1, 9, 9),
    (3, 1, 0, 7, 6),
    (3, 3, 1, 10, 10),
    ((2, 3), (2, 1), (1, 0), 10, 11),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches_pytorch(case):
    kernel, stride, padding, height, width = case
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    reference = F.max_pool2d(x, kernel, stride, padding)
    mine = cnn_basics.max_pool2d_manual(x, kernel, stride, padding)
    assert mine.shape == reference.shape
    assert torch.equal(mine, reference)


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool_matches_pytorch(case):
    kernel, stride, padding, height, width = case
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(2))
    reference = F.avg_pool2d(x, kernel, stride, padding)
    mine = cnn_basics.avg_pool2d_manual(x, kernel, stride, padding)
    assert mine.shape == reference.shape
    assert (mine - reference).abs().max().item() <= 1e-6


def test_max_pool_ignores_padding_on_negative_input():
    x = -torch.ones(1, 1, 4, 4)
    assert cnn_basics.max_pool2d_manual(x, 3, 2, 1).max().item() == -1.0


def test_check_against_pytorch_within_tolerance():
    differences = cnn_basics.check_against_pytorch(seed=0)
    assert differences["conv2d_max_abs_diff"] <= 1e-5
    assert differences["max_pool_max_abs_diff"] == 0.0
    assert differences["avg_pool_max_abs_diff"] <= 1e-6


# ---------------------------------------------------------------- cnn_basics: receptive field


def test_receptive_field_lenet_hand_values():
    table = cnn_basics.receptive_field_table(cnn_basics.LAYER_STACKS["lenet5"], 32)
    assert [row["output_size"] for row in table] == [28, 14, 10, 5]
    assert [row["jump"] for row in table] == [1, 2, 2, 4]
    assert [row["receptive_field"] for row in table] == [5, 6, 14, 16]


def test_receptive_field_resnet_stem_and_dilated():
    stem = cnn_basics.receptive_field_table(cnn_basics.LAYER_STACKS["resnet_stem"], 224)
    assert [row["receptive_field"] for row in stem] == [7, 11, 19]
    assert [row["output_size"] for row in stem] == [112, 56, 56]
    dilated = cnn_basics.receptive_field_table(cnn_basics.LAYER_STACKS["dilated"], 32)
    assert [row["receptive_field"] for row in dilated] == [3, 7, 15]
    assert [row["output_size"] for row in dilated] == [32, 32, 32]


EXTRA_STACKS = {
    "strided_dilated": [LayerSpec("conv", 3, 2, 1), LayerSpec("conv", 3, 1, 2, 2), LayerSpec("maxpool", 3, 2, 1),
                        LayerSpec("conv", 5, 1, 0, 3)],
    "big_kernels": [LayerSpec("conv", 11, 4, 2), LayerSpec("maxpool", 3, 2), LayerSpec("conv", 5, 1, 2)],
    "even_kernel": [LayerSpec("conv", 4, 2, 1), LayerSpec("avgpool", 2, 2), LayerSpec("conv", 2)],
}


@pytest.mark.parametrize("name", [*cnn_basics.LAYER_STACKS, *EXTRA_STACKS])
def test_receptive_field_formula_matches_gradient(name):
    layers = {**cnn_basics.LAYER_STACKS, **EXTRA_STACKS}[name]
    input_size = 96
    for depth in range(1, len(layers) + 1):
        prefix = layers[:depth]
        last = cnn_basics.receptive_field_table(prefix, input_size)[-1]
        for unit in (last["output_size"] // 2, last["output_size"] // 2 + 1):
            first, final = cnn_basics.measure_receptive_field(prefix, input_size, unit)
            assert final - first + 1 == last["receptive_field"], (name, depth, unit)
            assert (first, final) == cnn_basics.predicted_window(prefix, input_size, unit), (name, depth, unit)


def test_measured_window_skips_dilation_holes():
    probe = cnn_basics.build_probe([LayerSpec("conv", 3, padding=2, dilation=2)])
    image = torch.ones(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    probe(image)[0, 0, 4, 4].backward()
    nonzero_rows = (image.grad[0, 0] != 0).any(dim=1).nonzero().flatten().tolist()
    assert nonzero_rows == [2, 4, 6]
    assert cnn_basics.measure_receptive_field([LayerSpec("conv", 3, padding=2, dilation=2)], 9) == (2, 6)


def test_check_receptive_fields_all_match():
    rows = cnn_basics.check_receptive_fields()
    assert len(rows) == sum(len(layers) for layers in cnn_basics.LAYER_STACKS.values())
    assert all(row["window_matches"] for row in rows)
    assert all(row["rf_formula"] == row["rf_measured"] for row in rows)


def test_layer_spec_rejects_unknown_kind():
    with pytest.raises(ValueError, match="conv"):
        LayerSpec("dense", 3)


def test_small_cnn_feature_map_shapes():
    model = cnn_basics.SmallCNN()
    maps = model.feature_maps(torch.zeros(2, 28, 28))
    assert maps["conv1"].shape == (2, 16, 28, 28)
    assert maps["conv2"].shape == (2, 32, 14, 14)
    assert maps["pooled"].shape == (2, 32, 7, 7)
    assert model(torch.zeros(2, 28, 28)).shape == (2, 10)


# ---------------------------------------------------------------- lenet_mnist


def test_lenet_parameter_count_and_output():
    model = lenet_mnist.LeNet5("modern")
    # C1 6·(25+1) + C3 16·(6·25+1) + F5 120·(400+1) + F6 84·(120+1) + out 10·(84+1)
    assert sum(parameter.numel() for parameter in model.parameters()) == 156 + 2416 + 48120 + 10164 + 850
    assert model(torch.zeros(3, 32, 32)).shape == (3, 10)
    assert model.features(torch.zeros(3, 1, 32, 32)).shape == (3, 16, 5, 5)


def test_lenet_styles_use_expected_layers():
    modern = [type(module) for module in lenet_mnist.LeNet5("modern").modules()]
    classic = [type(module) for module in lenet_mnist.LeNet5("classic").modules()]
    assert nn.ReLU in modern
    assert nn.MaxPool2d in modern
    assert nn.Tanh in classic
    assert nn.AvgPool2d in classic
    assert nn.ReLU not in classic


def test_lenet_rejects_unpadded_input():
    with pytest.raises(ValueError, match="32"):
        lenet_mnist.LeNet5()(torch.zeros(1, 28, 28))


def test_lenet_rejects_unknown_style():
    with pytest.raises(ValueError, match="style"):
        lenet_mnist.LeNet5("fancy")


def test_pad_to_lenet_input_uses_background():
    images = torch.ones(2, 28, 28)
    padded = lenet_mnist.pad_to_lenet_input(images, background=-0.5)
    assert padded.shape == (2, 32, 32)
    assert torch.equal(padded[:, 2:30, 2:30], images)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(padded[:, border] == -0.5)


def test_prepare_lenet_data_pads_with_raw_black():
    args = SimpleNamespace(data_dir=None, smoke=True, seed=0, max_train_samples=None)
    tensors = lenet_mnist.prepare_lenet_data(args)
    background = float(tensors["background"])
    assert tensors["train_x"].shape[1:] == (32, 32)
    assert tensors["test_x"].shape[1:] == (32, 32)
    assert background == pytest.approx(float(-tensors["mean"] / tensors["std"]))
    assert torch.all(tensors["train_x"][:, 0, :] == background)
    # 原始像素 0 标准化后就是背景值，所以它也是训练图里的最小值。
    assert tensors["train_x"].min().item() == pytest.approx(background)


# ---------------------------------------------------------------- resnet_cifar10: data


def test_stratified_split_is_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 50)
    train_index, validation_index = resnet_cifar10.stratified_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(train_index, validation_index)) == 0
    assert len(train_index) + len(validation_index) == 500
    assert np.bincount(labels[validation_index], minlength=10).tolist() == [5] * 10


def test_stratified_split_respects_max_samples():
    labels = np.repeat(np.arange(10), 50)
    train_index, validation_index = resnet_cifar10.stratified_split(labels, 0.1, seed=3, max_samples=200)
    assert len(train_index) + len(validation_index) == 200


def test_prepare_cifar_normalises_with_train_statistics():
    args = SimpleNamespace(data_dir=None, smoke=True, seed=0, max_train_samples=None)
    tensors = resnet_cifar10.prepare_data(args)
    assert tensors["train_x"].shape[1:] == (3, 32, 32)
    assert len(tensors["train_y"]) + len(tensors["val_y"]) == 300
    torch.testing.assert_close(tensors["train_x"].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(tensors["train_x"].std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert tensors["mean"].shape == (3,)


def test_random_crop_flip_output_is_padded_window():
    torch.manual_seed(0)
    images = torch.arange(6 * 2 * 8 * 8, dtype=torch.float32).reshape(6, 2, 8, 8) + 1  # 每个像素值都不同
    augmented = resnet_cifar10.random_crop_flip(images, padding=2)
    assert augmented.shape == images.shape
    padded = F.pad(images, (2,) * 4)
    for index in range(len(images)):
        candidates = [window.flip(-1) if flip else window
                      for top in range(5) for left in range(5) for flip in (False, True)
                      for window in [padded[index, :, top:top + 8, left:left + 8]]]
        assert any(torch.equal(augmented[index], candidate) for candidate in candidates), index


def test_random_crop_flip_varies_across_batch():
    torch.manual_seed(1)
    images = torch.randn(1, 3, 16, 16).repeat(64, 1, 1, 1)
    augmented = resnet_cifar10.random_crop_flip(images)
    distinct = {augmented[index].numpy().tobytes() for index in range(64)}
    assert len(distinct) > 20


def test_augment_collate_stacks_and_keeps_labels():
    batch = [(torch.randn(3, 32, 32), torch.tensor(label)) for label in range(5)]
    images, labels = resnet_cifar10.augment_collate(batch)
    assert images.shape == (5, 3, 32, 32)
    assert labels.tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- resnet_cifar10: model


def test_basic_block_shortcuts():
    same = resnet_cifar10.BasicBlock(16, 16)
    down = resnet_cifar10.BasicBlock(16, 32, stride=2)
    assert isinstance(same.shortcut, nn.Identity)
    assert isinstance(down.shortcut[0], nn.Conv2d)
    assert down.shortcut[0].kernel_size == (1, 1)
    assert down.shortcut[0].stride == (2, 2)
    assert same(torch.randn(2, 16, 8, 8)).shape == (2, 16, 8, 8)
    assert down(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_basic_block_with_zero_residual_is_relu_identity():
    block = resnet_cifar10.BasicBlock(8, 8).eval()
    nn.init.zeros_(block.bn2.weight)  # γ = 0, β = 0：残差分支 F(x) 恒为 0
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(block(x), F.relu(x))


def test_resnet_parameter_counts():
    resnet20 = resnet_cifar10.ResNetCifar((16, 32, 64), blocks_per_stage=3)
    # 原文 ResNet-20 约 0.27M 参数（零填充 shortcut）；这里两个 1×1 投影 shortcut 多出约 3 千个。
    assert 0.26e6 < resnet_cifar10.count_parameters(resnet20) < 0.28e6
    resnet14 = resnet_cifar10.ResNetCifar((16, 32, 64), blocks_per_stage=2)
    assert resnet_cifar10.count_parameters(resnet14) == 175_258
    assert resnet14(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _trained_small_resnet():
    torch.manual_seed(0)
    model = resnet_cifar10.ResNetCifar((8, 16, 32), blocks_per_stage=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(3):  # 几步训练，让 BN 的 running mean/var 离开初始值 0/1
        images, labels = torch.randn(16, 3, 32, 32) * 2 + 0.5, torch.randint(0, 10, (16,))
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_eval_prediction_independent_of_batch():
    model = _trained_small_resnet().eval()
    torch.manual_seed(1)
    target = torch.randn(1, 3, 32, 32)
    others = torch.randn(15, 3, 32, 32) * 3
    with torch.no_grad():
        alone = model(target)
        inside = model(torch.cat([others[:7], target, others[7:]]))[7:8]
    assert (alone - inside).abs().max().item() <= 1e-5
    assert resnet_cifar10.batch_independence_gap(model, torch.cat([target, others])) <= 1e-5


def test_train_mode_prediction_depends_on_batch():
    model = _trained_small_resnet().train()
    torch.manual_seed(1)
    target = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        with_small = model(torch.cat([target, torch.randn(7, 3, 32, 32) * 0.1]))[0]
        with_large = model(torch.cat([target, torch.randn(7, 3, 32, 32) * 5]))[0]
    assert (with_small - with_large).abs().max().item() > 1e-3


def test_channels_last_gives_same_logits():
    model = _trained_small_resnet().eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
        actual = model(images)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_gradient_norms_cover_every_conv():
    torch.manual_seed(0)
    model = resnet_cifar10.ResNetCifar((8, 16, 32), blocks_per_stage=2)
    norms = resnet_cifar10.conv_gradient_norms(model, torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert len(norms) == 1 + 2 * 6
    assert all(norm > 0 for norm in norms)
    assert all(parameter.grad is None or parameter.grad.abs().sum() == 0 for parameter in model.parameters())


def test_plain_network_gradients_vary_more_than_residual():
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    ratios = {}
    for residual in (True, False):
        torch.manual_seed(0)
        norms = resnet_cifar10.conv_gradient_norms(resnet_cifar10.ResNetCifar((8, 16, 32), 6, residual=residual),
                                                   images, labels)
        ratios[residual] = max(norms) / min(norms)
    assert ratios[False] > 10 * ratios[True]


def test_precision_auto_is_fp32_on_cpu():
    args = SimpleNamespace(device="cpu", precision="auto")
    device = resnet_cifar10.resolve_precision(args)
    assert device.type == "cpu"
    assert args.precision == "fp32"


def test_precision_explicit_is_kept():
    args = SimpleNamespace(device="cpu", precision="bf16")
    resnet_cifar10.resolve_precision(args)
    assert args.precision == "bf16"


def test_resnet_help_lists_auto_precision(capsys):
    with pytest.raises(SystemExit):
        resnet_cifar10.main(["--help"])
    assert "auto" in capsys.readouterr().out


@pytest.mark.parametrize("option, value", [("--weight-decay", "-0.1"), ("--label-smoothing", "1.0")])
def test_resnet_rejects_invalid_regularisation(option, value, capsys):
    with pytest.raises(SystemExit):
        resnet_cifar10.main(["--smoke", option, value])
    assert option in capsys.readouterr().err


# ---------------------------------------------------------------- real data


@pytest.mark.real
def test_cnn_basics_real(real_data_dir, tmp_path):
    result = cnn_basics.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    assert result["conv2d_max_abs_diff"] <= 1e-5
    assert result["max_pool_max_abs_diff"] == 0.0
    assert result["avg_pool_max_abs_diff"] <= 1e-6
    assert result["receptive_field_mismatches"] == 0
    assert result["test_samples"] == 10_000
    assert result["small_cnn_test_accuracy"] >= 0.975  # 实测 98.36%
    for figure in ("conv1_kernels.png", "feature_maps.png", "receptive_field.png", "small_cnn_curves.png",
                   "small_cnn_confusion_matrix.png"):
        assert (tmp_path / figure).is_file()


@pytest.mark.real
def test_lenet_real(real_data_dir, tmp_path):
    result = lenet_mnist.main(["--data-dir", str(real_data_dir), "--max-train-samples", "5000",
                               "--output-dir", str(tmp_path)])
    assert result["test_samples"] == 10_000
    assert result["train_samples"] + result["val_samples"] == 5_000
    assert result["modern_test_accuracy"] >= 0.975  # 实测 98.18%
    assert result["classic_test_accuracy"] >= 0.965  # 实测 97.47%
    for figure in ("lenet_modern_curves.png", "lenet_classic_curves.png", "lenet_modern_confusion_matrix.png",
                   "lenet_modern_misclassified.png", "val_accuracy_by_style.png"):
        assert (tmp_path / figure).is_file()


@pytest.mark.real
def test_resnet_real(real_data_dir, tmp_path):
    # 默认命令只跑一次（2 核 CPU 上约 5 分钟），所有断言都用这一次的结果。
    result = resnet_cifar10.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    assert result["test_samples"] == 2_000
    assert result["depth"] == 20
    assert result["train_samples"] + result["val_samples"] == 10_000
    assert result["test_accuracy"] >= 0.65  # 实测 68.55%
    assert result["eval_batch_independence_max_abs_diff"] <= 1e-4
    assert result["gradient_norm_ratio_first_to_last_plain"] > result["gradient_norm_ratio_first_to_last_residual"]
    for figure in ("resnet_curves.png", "resnet_confusion_matrix.png", "test_predictions.png", "gradient_flow.png"):
        assert (tmp_path / figure).is_file()
