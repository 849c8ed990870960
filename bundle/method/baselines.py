"""The baselines of Table 3 as single-side regressors F: 3D ResNet-18, 3D ViT, 3D VGG-16 and 3D MobileNetV3.

Each is a backbone giving a feature vector, followed by the same head as :class:`VGGRegressor3D` (dropout, then one
float32 linear layer to the normalised SBR), so the paired model (eq. 3), the losses, head-only Monte-Carlo dropout
and the explain maps work unchanged. ResNet-18 and ViT are MONAI's networks; VGG-16 and MobileNetV3 are written
here (no maintained 3D version exists).

- ``resnet18``: MONAI ``resnet18`` (3D, one input channel), global-average-pooled 512 features.
- ``vit``: MONAI ``ViT`` on 10 x 10 x 10 voxel patches (5 x 5 x 2 tokens of a 50 x 50 x 20 patch), hidden size 192,
  6 layers, 6 heads, MLP 768; the tokens' mean is the feature vector. It has no convolution after the patch
  embedding, so HiResCAM has no spatial layer to use (LRP is not defined for attention here); full-gradient works.
- ``vgg16``: Simonyan & Zisserman configuration D: 13 convolutions (3 x 3 x 3, ReLU) in blocks of 2-2-3-3-3 with
  64-128-256-512-512 channels. Adapted to 50 x 50 x 20: the 20-slice axis is pooled only after the first three
  blocks (2 x 2 x 2 there, 2 x 2 x 1 after blocks 4 and 5), leaving 512 x 1 x 1 x 2; the three fully connected
  layers (4096-4096-1000) become the bundle's head on the 1024 flattened features.
- ``mobilenetv3``: MobileNetV3-Small of Howard et al. (ICCV 2019, Table 2) with every 2D operation made 3D: a
  3 x 3 x 3 stride-2 stem (16, h-swish), eleven inverted-residual bottlenecks (expansion, depth-wise conv,
  squeeze-and-excitation where the table says so, projection; residual when shape is kept), a 1 x 1 x 1 conv to 576
  and global pooling; the table's 1024-unit layer is left out (the head is the bundle's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bundle.constants import PATCH_SIZE
from bundle.method.networks import VGGRegressor3D

__all__ = ["BaselineRegressor", "ARCHITECTURES"]


def _vgg16(in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    blocks = ((64, 2, 2), (128, 2, 2), (256, 3, 2), (512, 3, (2, 2, 1)), (512, 3, (2, 2, 1)))
    for out_channels, convs, pool in blocks:
        for _ in range(convs):
            layers += [nn.Conv3d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.MaxPool3d(pool))
    return nn.Sequential(*layers, nn.Flatten())


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = max(8, channels // 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(channels, reduced, 1), nn.ReLU(),
                                  nn.Conv3d(reduced, channels, 1), nn.Hardsigmoid())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class _Bottleneck(nn.Module):
    """MobileNetV3 inverted residual: 1x1x1 expansion, k^3 depth-wise conv, optional SE, 1x1x1 projection."""

    def __init__(self, cin: int, kernel: int, expand: int, cout: int, se: bool, hswish: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [nn.Conv3d(cin, expand, 1, bias=False), nn.BatchNorm3d(expand), act()]
        layers += [nn.Conv3d(expand, expand, kernel, stride, kernel // 2, groups=expand, bias=False),
                   nn.BatchNorm3d(expand), act()]  # fmt: skip
        if se:
            layers.append(_SqueezeExcite(expand))
        layers += [nn.Conv3d(expand, cout, 1, bias=False), nn.BatchNorm3d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


MOBILENETV3_SMALL = (  # kernel, expansion, output, SE, h-swish, stride (Howard et al. 2019, Table 2)
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
)  # fmt: skip


def _mobilenetv3(in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(in_channels, 16, 3, 2, 1, bias=False), nn.BatchNorm3d(16), nn.Hardswish()]
    cin = 16
    for kernel, expand, cout, se, hswish, stride in MOBILENETV3_SMALL:
        layers.append(_Bottleneck(cin, kernel, expand, cout, se, hswish, stride))
        cin = cout
    layers += [nn.Conv3d(cin, 576, 1, bias=False), nn.BatchNorm3d(576), nn.Hardswish(), nn.AdaptiveAvgPool3d(1),
               nn.Flatten()]  # fmt: skip
    return nn.Sequential(*layers)


class _TokenMean(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0].mean(dim=1)


def _backbone(arch: str, in_channels: int, patch_size: Sequence[int]) -> nn.Module:
    if arch == "resnet18":
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=3, n_input_channels=in_channels, feed_forward=False)
    if arch == "vit":
        from monai.networks.nets import ViT

        return _TokenMean(ViT(in_channels, tuple(patch_size), (10, 10, 10), hidden_size=192, mlp_dim=768,
                              num_layers=6, num_heads=6, spatial_dims=3))  # fmt: skip
    if arch == "vgg16":
        return _vgg16(in_channels)
    if arch == "mobilenetv3":
        return _mobilenetv3(in_channels)
    raise ValueError(f"unknown baseline {arch!r}; choose from {ARCHITECTURES}")


ARCHITECTURES = ("resnet18", "vit", "vgg16", "mobilenetv3")


class BaselineRegressor(nn.Module):
    """A Table 3 baseline as the single-side regressor F: ``backbone`` features -> dropout -> linear (float32).

    Args:
        arch: one of :data:`ARCHITECTURES`.
        in_channels: input channels (1 for an SMWI patch).
        patch_size: spatial input size.
        dropout: dropout before the linear head (> 0 for Monte-Carlo dropout).
    """

    block_dropout = 0.0  # head-only dropout: MC samples reuse the features

    def __init__(
        self, arch: str = "resnet18", in_channels: int = 1, patch_size: Sequence[int] = PATCH_SIZE, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.arch, self.in_channels, self.dropout = arch, int(in_channels), float(dropout)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.backbone = _backbone(arch, self.in_channels, self.patch_size)
        with torch.no_grad():
            self.num_features = int(self.backbone.eval()(torch.zeros(1, self.in_channels, *self.patch_size)).shape[1])
        self.fc = nn.Linear(self.num_features, 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, recorded in the checkpoint."""
        return {"arch": self.arch, "in_channels": self.in_channels, "patch_size": list(self.patch_size),
                "dropout": self.dropout}  # fmt: skip

    def features(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """The backbone's feature vector [B, num_features]."""
        return torch.flatten(self.backbone(x), 1)

    # the same head, forward and Monte-Carlo sampling as the Table 1 regressor
    head = VGGRegressor3D.head
    _linear = VGGRegressor3D._linear
    forward = VGGRegressor3D.forward
    mc_forward = VGGRegressor3D.mc_forward
