"""Explainability maps: HiResCAM for regression, full-gradient completeness, LRP conservation and rule layout."""

import pytest
import torch
from torch import nn

from bundle.explain.fullgrad import full_gradients, fullgrad_saliency
from bundle.explain.hirescam import hirescam, regression_class_score
from bundle.explain.layers import sequential_layers
from bundle.explain.lrp import AlphaBeta, Epsilon, Flat, lrp, paper_layout
from bundle.method.networks import VGGRegressor3D


class Toy(nn.Module):
    """conv (1 -> 2 channels, same size) -> ReLU -> flatten -> linear: the hand-sized case."""

    def __init__(self, shape=(4, 4, 3), bias: float = 0.3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())])
        self.fc = nn.Linear(2 * shape[0] * shape[1] * shape[2], 1)
        with torch.no_grad():
            self.fc.bias.fill_(bias)

    def forward(self, x):
        return self.fc(torch.flatten(self.blocks[0](x), 1))


def test_regression_class_score_is_the_high_or_low_sbr_probability():
    score = regression_class_score(torch.tensor([0.8, 0.5, 0.2]))
    assert torch.allclose(score, torch.tensor([0.8, 0.5, 0.8]))


@pytest.mark.parametrize("bias", [0.3, 0.9])  # low-SBR (score 1 - F) and high-SBR (score F) branches
def test_hirescam_equals_gradient_times_activation_by_hand(bias):
    net = Toy(bias=bias)
    x = torch.rand(2, 1, 4, 4, 3)
    conv, fc = net.blocks[0][0], net.fc
    with torch.no_grad():
        activation = conv(x)  # the layer's output, [B, 2, 4, 4, 3]
        f = net(x).reshape(-1)
        d_f = fc.weight.reshape(1, 2, 4, 4, 3) * (activation > 0)  # dF/dA through the ReLU
        sign = torch.where(f >= 0.5, 1.0, -1.0).reshape(-1, 1, 1, 1, 1)
        expected = (sign * d_f * activation).sum(1, keepdim=True)
    assert (f >= 0.5).any() if bias > 0.5 else (f < 0.5).any()
    cam = hirescam(net, x)
    assert cam.shape == (2, 1, 4, 4, 3)
    assert torch.allclose(cam, expected, atol=1e-6)


def test_hirescam_upsamples_the_last_conv_to_the_patch():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    cam = hirescam(net, torch.rand(1, 1, 50, 50, 20))
    assert cam.shape == (1, 1, 50, 50, 20) and torch.isfinite(cam).all()


def test_full_gradient_completeness_on_a_toy_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(3, 2, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 1))  # fmt: skip
    for module in net.modules():
        if hasattr(module, "bias") and module.bias is not None:
            nn.init.uniform_(module.bias, -0.5, 0.5)
    x = torch.randn(3, 1, 4, 4, 4)
    parts = full_gradients(net, x)
    assert torch.allclose(parts.output, net(x).reshape(-1), atol=1e-6)
    assert len(parts.bias_terms) == 3
    assert parts.completeness_gap().max() < 1e-4
    assert fullgrad_saliency(net, x).shape == (3, 1, 4, 4, 4)


def test_full_gradient_completeness_on_the_regressor():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    for module in net.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            nn.init.uniform_(module.bias, -0.1, 0.1)
    parts = full_gradients(net, torch.rand(2, 1, 50, 50, 20))
    assert parts.completeness_gap().max() < 1e-4 * max(1.0, parts.output.abs().max().item())


def test_lrp_epsilon_conserves_relevance_layer_to_layer():
    net = Toy(bias=0.0)
    with torch.no_grad():
        net.blocks[0][0].bias.zero_()

    def epsilon_everywhere(layers):
        return [Epsilon() if isinstance(layer, (nn.Conv3d, nn.Linear)) else None for layer in layers]

    x = torch.rand(2, 1, 4, 4, 3) + 0.1
    relevance, per_layer = lrp(net, x, layout=epsilon_everywhere, return_layers=True)
    output = net(x).reshape(-1).detach()
    assert relevance.shape == x.shape
    for entering in per_layer:
        assert torch.allclose(entering.flatten(1).sum(1), output, atol=1e-3), entering.shape


def test_lrp_paper_layout_and_maps_on_the_regressor():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    layers = sequential_layers(net)
    rules = paper_layout(layers)
    convs = [r for layer, r in zip(layers, rules, strict=True) if isinstance(layer, nn.Conv3d)]
    assert [type(r) for r in convs] == [Flat, Flat] + [AlphaBeta] * 6
    assert all(r.alpha == 2 and r.beta == 1 for r in convs[2:])
    assert isinstance(rules[-1], Epsilon) and rules[-1].epsilon == 1e-4
    relevance = lrp(net, torch.rand(1, 1, 50, 50, 20))
    assert relevance.shape == (1, 1, 50, 50, 20) and torch.isfinite(relevance).all()


def test_alpha_beta_follows_its_equation_by_hand():
    """R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j, a term with z-_j = 0 taken as 0."""
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.2, 0.1, 3.0]]))
    a = torch.tensor([[1.0, 0.5, 2.0]])
    relevance = torch.tensor([[1.0, 2.0]])
    z = a * layer.weight  # [2, 3] contributions z_ij (output j, input i)
    z_pos, z_neg = z.clamp(min=0), z.clamp(max=0)
    share_neg = torch.nan_to_num(z_neg / z_neg.sum(1, keepdim=True))
    expected = ((2 * z_pos / z_pos.sum(1, keepdim=True) - share_neg) * relevance.T).sum(0, keepdim=True)
    assert torch.allclose(AlphaBeta()(layer, a, relevance), expected, atol=1e-5)
