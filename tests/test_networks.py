"""Table 1 network, its configurable variants and the paired model of eq. 3."""

import copy

import pytest
import torch
from torch import nn

from bundle.method.networks import SymmetricRegressor, VGGRegressor3D
from bundle.workflows.setup import autocast_dtype, prepare_network


def n_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_table1_network_parameter_count_and_shape():
    net = VGGRegressor3D()
    assert n_trainable(net) == 14_053_441
    assert net.num_features == 4608
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 50, 50, 20)).shape == (2, 1)


def test_table1_feature_map_sizes():
    net = VGGRegressor3D()
    x = torch.zeros(1, 1, 50, 50, 20)
    sizes = []
    for block in net.blocks:
        x = block(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(64, 25, 25, 10), (128, 12, 12, 5), (256, 6, 6, 2), (512, 3, 3, 1)]


def test_full_network_backpropagates_to_every_parameter():
    net = VGGRegressor3D()
    net(torch.randn(2, 1, 50, 50, 20)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "channels, features",
    [((16, 32, 64, 128), 128 * 3 * 3 * 1), ((32, 64, 128), 128 * 6 * 6 * 2), ((4, 4, 4, 4), 4 * 9)],
)
def test_width_and_depth_presets(channels, features):
    net = VGGRegressor3D(channels=channels).eval()
    assert net.num_features == features
    assert len(net.blocks) == len(channels)
    assert net(torch.randn(3, 1, 50, 50, 20)).shape == (3, 1)


def test_flatten_follows_pytorch_c_d1_d2_d3_order():
    net = VGGRegressor3D(channels=(2, 2, 2, 2), dropout=0.0).eval()
    x = torch.randn(1, 1, 50, 50, 20)
    feats = x
    for block in net.blocks:
        feats = block(feats)  # ends as [1, 2, 3, 3, 1]
    assert torch.equal(net.features(x), feats.reshape(1, -1))
    linear = net.fc
    with torch.no_grad():
        linear.bias.zero_()
        for c, d1, d2, d3 in [(1, 2, 0, 0), (0, 1, 2, 0)]:
            linear.weight.zero_()
            linear.weight[0, ((c * 3 + d1) * 3 + d2) * 1 + d3] = 1.0
            assert torch.allclose(net(x)[0, 0], feats[0, c, d1, d2, d3])


def test_dropout_is_stochastic_in_train_mode_only():
    torch.manual_seed(0)
    net = VGGRegressor3D(channels=(4, 4, 4, 4), dropout=0.5)
    x = torch.randn(1, 1, 50, 50, 20)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_dropout_position():
    x = torch.randn(1, 1, 50, 50, 20)
    head = VGGRegressor3D(channels=(4, 4), dropout=0.3).train()
    everywhere = VGGRegressor3D(channels=(4, 4), dropout=0.3, dropout_position="all").train()
    assert torch.equal(head.features(x), head.features(x))  # no dropout in the blocks
    assert not torch.equal(everywhere.features(x), everywhere.features(x))
    everywhere.eval()
    assert torch.equal(everywhere.features(x), everywhere.features(x))
    assert not torch.equal(everywhere.features(x, sample=True), everywhere.features(x, sample=True))


def test_fast_mc_samples_have_the_exact_moments_of_the_dropout_head():
    """Head-only dropout, y = b + sum_j m_j f_j w_j / k with m_j ~ Bernoulli(k): E[y] is the deterministic output and
    Var[y] = (1 - k) / k * sum_j (f_j w_j)^2; masks independent between samples and between batch elements."""
    net = VGGRegressor3D(channels=(4, 4, 4, 4), dropout=0.3).eval()
    nn.init.normal_(net.fc.weight, 0.0, 1.0)
    x = torch.randn(2, 1, 50, 50, 20)
    torch.manual_seed(7)
    samples = net.mc_forward(x, 20000)
    torch.manual_seed(7)
    assert torch.equal(net.mc_forward(x, 20000), samples)  # reproducible under a seed
    assert samples.shape == (20000, 2) and not net.training
    with torch.no_grad():
        deterministic = net(x)[:, 0]
        contributions = net.features(x) * net.fc.weight[0]
    keep = 0.7
    exact_std = ((1 - keep) / keep * contributions.pow(2).sum(1)).sqrt()
    standard_error = exact_std / 20000**0.5
    assert ((samples.mean(0) - deterministic).abs() < 4 * standard_error).all()
    assert torch.allclose(samples.std(0), exact_std, rtol=0.03)
    assert torch.corrcoef(samples.T)[0, 1].abs() < 0.04  # the two patches have their own masks


def test_mc_with_block_dropout_is_chunked_and_stochastic():
    net = VGGRegressor3D(channels=(4, 4, 4, 4), dropout=0.3, dropout_position="all").eval()
    x = torch.randn(2, 1, 50, 50, 20)
    samples = net.mc_forward(x, 7, chunk_size=3)
    assert samples.shape == (7, 2) and samples.std(0).min() > 0
    no_dropout = VGGRegressor3D(channels=(4, 4, 4, 4), dropout=0.0, dropout_position="all").eval()
    det = no_dropout(x)[:, 0]
    assert torch.allclose(no_dropout.mc_forward(x, 5, chunk_size=2), det.expand(5, 2), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": []}, "channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout_position": "middle"}, "dropout_position"),
        ({"channels": (4, 4, 4, 4, 4, 4)}, "too many"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VGGRegressor3D(**kwargs)


def test_paired_model_shares_one_regressor():
    regressor = VGGRegressor3D(channels=(4, 4, 4, 4)).eval()
    paired = SymmetricRegressor(regressor)
    assert n_trainable(paired) == n_trainable(regressor)
    pair = torch.randn(3, 2, 50, 50, 20)
    out = paired(pair)
    assert out.shape == (3, 2)
    assert torch.allclose(out[:, 0], regressor(pair[:, :1])[:, 0], atol=1e-6)
    assert torch.allclose(out[:, 1], regressor(pair[:, 1:])[:, 0], atol=1e-6)


def test_paired_model_rejects_a_single_patch():
    with pytest.raises(ValueError, match=r"\[B, 2"):
        SymmetricRegressor(VGGRegressor3D(channels=(4,)))(torch.randn(1, 1, 50, 50, 20))


def test_bf16_autocast_returns_float32_close_to_fp32():
    torch.manual_seed(0)
    regressor = VGGRegressor3D(channels=(4, 4, 4, 4)).eval()
    pair = torch.rand(2, 2, 50, 50, 20)
    ref = SymmetricRegressor(regressor)(pair)
    out = SymmetricRegressor(regressor, autocast_dtype=torch.bfloat16)(pair)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=2e-2 * ref.abs().max().item() + 1e-3)


def test_bf16_network_within_1_percent_of_fp32():
    """The amp path (bf16 autocast + channels_last_3d) on patch-like inputs, on Table 1's network at a quarter of its
    width: the same layers and depth, so the same numerics, in seconds where bf16 is only emulated (AVX2 without bf16:
    the full width took 749 s there). The full-width check is ``scripts/benchmark.py``'s ``bf16_max_relative_error``."""
    torch.manual_seed(0)
    regressor = VGGRegressor3D(channels=(16, 32, 64, 128)).eval()
    with torch.no_grad():
        regressor.fc.bias.fill_(0.45)  # a typical normalised SBR, so the tolerance is relative to a real output
    pair = torch.rand(2, 2, 50, 50, 20) * 0.4 + 0.8  # mean-normalised patches
    with torch.no_grad():
        ref = SymmetricRegressor(regressor)(pair)
        fast = SymmetricRegressor(regressor.to(memory_format=torch.channels_last_3d), torch.bfloat16)(pair)
        inference = prepare_network(copy.deepcopy(regressor), "cpu", amp=True, inference=True)  # bf16 conv weights
        stored_bf16 = SymmetricRegressor(inference, autocast_dtype(True, "cpu"))(pair)
    assert torch.all((fast - ref).abs() <= 0.01 * ref.abs())
    assert torch.all((stored_bf16 - ref).abs() <= 0.01 * ref.abs())
    assert inference.fc.weight.dtype == torch.float32


def test_cpu_float32_network_uses_channels_last_and_gives_the_same_outputs():
    """Without amp on a CPU the convolutions still get the channels_last_3d layout (oneDNN's faster one); only the
    layout changes, so forward outputs and gradients equal the contiguous network's to float32 rounding."""
    torch.manual_seed(0)
    regressor = VGGRegressor3D(channels=(4, 8, 8, 8)).eval()  # dropout off; gradients still flow
    nn.init.normal_(regressor.fc.weight, 0.0, 1.0)
    prepared = prepare_network(copy.deepcopy(regressor), "cpu", amp=False)
    conv_weights = [next(m for m in net.modules() if isinstance(m, nn.Conv3d) and m.in_channels > 1).weight
              for net in (regressor, prepared)]  # fmt: skip
    assert conv_weights[1].is_contiguous(memory_format=torch.channels_last_3d)
    assert not conv_weights[0].is_contiguous(memory_format=torch.channels_last_3d)
    pair = torch.rand(2, 2, 50, 50, 20) + 0.5
    outputs = [SymmetricRegressor(net)(pair) for net in (regressor, prepared)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(out.sum(), weight)[0] for out, weight in zip(outputs, conv_weights, strict=True)]
    assert (grads[1] - grads[0]).abs().max() <= 1e-4 * grads[0].abs().max()  # summed over 100 000 voxels


def test_compiled_inference_network_matches_eager():
    """``compile`` (frozen-weight torch.compile of the features) gives eager's predictions and MC samples."""
    torch.manual_seed(0)
    regressor = VGGRegressor3D(channels=(4, 4, 4, 4)).eval()
    pair = torch.rand(2, 2, 50, 50, 20) * 0.4 + 0.8
    eager = SymmetricRegressor(copy.deepcopy(regressor))
    compiled_net = prepare_network(copy.deepcopy(regressor), "cpu", inference=True, compile=True)
    compiled = SymmetricRegressor(compiled_net)
    assert compiled_net.features is not regressor.features  # the compiled function, not the method
    with torch.no_grad():
        torch.testing.assert_close(compiled(pair), eager(pair), rtol=1e-4, atol=1e-5)
        torch.manual_seed(3)
        mc_eager = eager.mc_forward(pair, 20)
        torch.manual_seed(3)
        mc_compiled = compiled.mc_forward(pair, 20)
    torch.testing.assert_close(mc_compiled, mc_eager, rtol=1e-4, atol=1e-5)
    assert mc_compiled.std(dim=1).min() > 0  # dropout stays on in the MC samples


@pytest.mark.parametrize(
    ("cap", "allowed"),
    [
        ("", True),
        ("ALL", True),
        ("AVX2", False),
        ("avx512_core", False),
        ("AVX512_CORE_BF16", True),
        ("AVX512_CORE_AMX", True),
    ],
)
def test_a_oneDNN_isa_cap_below_bf16_means_float32_as_on_such_a_cpu(monkeypatch, cap, allowed):
    """Forcing the AVX2 class on a newer CPU (ONEDNN_MAX_CPU_ISA) must give the float32 path a real AVX2 CPU takes."""
    from bundle.workflows.cpu import bf16_allowed_by_isa_cap, cpu_supports_bf16

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert bf16_allowed_by_isa_cap() is allowed
    if not allowed:
        assert not cpu_supports_bf16() and autocast_dtype(True, "cpu") is None


def test_compiling_under_an_emulated_cpu_class_asks_for_an_inductor_cache_of_its_own(monkeypatch):
    """Forcing a CPU class while inductor's shared cache is in use is warned about (code compiled under the other
    setting was reused and gave wrong features); a cache of its own, or no forcing, needs no warning."""
    from bundle.workflows.cpu import emulated_isa_cache_warning

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert emulated_isa_cache_warning() is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    warning = emulated_isa_cache_warning()
    assert warning is not None and "ATEN_CPU_CAPABILITY=avx2" in warning and "TORCHINDUCTOR_CACHE_DIR" in warning
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/own")
    assert emulated_isa_cache_warning() is None


def test_a_standardised_input_makes_the_prediction_independent_of_the_patch_intensity_scale():
    """``standardise_input``: each patch to zero mean and unit variance, so any positive affine change of its
    intensities gives the same prediction; it adds no weights (checkpoints of either kind keep their keys)."""
    torch.manual_seed(0)
    net = VGGRegressor3D(channels=(4, 4, 4, 4), standardise_input=True).eval()
    x = torch.rand(2, 1, 50, 50, 20) + 0.5
    with torch.no_grad():
        torch.testing.assert_close(net(3.0 * x + 2.0), net(x), rtol=1e-4, atol=1e-5)
        z = (x - x.mean(dim=(2, 3, 4), keepdim=True)) / x.std(dim=(2, 3, 4), unbiased=False, keepdim=True)
        torch.testing.assert_close(net.input_norm(x), z, rtol=1e-4, atol=1e-4)
    plain = VGGRegressor3D(channels=(4, 4, 4, 4))
    assert list(plain.state_dict()) == list(net.state_dict())
    assert net.config()["standardise_input"] is True and plain.config()["standardise_input"] is False
