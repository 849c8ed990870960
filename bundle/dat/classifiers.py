"""The two companion networks: the DaT-SPECT classifier of Nazari et al. 2021 (Methods, Fig. 7) and DAT-Net
(Zhao et al., DAT PET; Fig. 2 and its supplement), both for single-channel 3D volumes."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets.resnet import ResNetBlock
from torch import nn

__all__ = ["DaTSpectCNN", "DATNet"]


class DaTSpectCNN(nn.Sequential):
    """Four 3x3x3 convolutions of ``filters`` (stride 1, no pooling: inputs are in template space), three fully
    connected layers of ``hidden`` with dropout in the first only, and a ``classes``-way output (logits; softmax in
    the loss). ReLU everywhere. ``in_shape``: the spatial shape of the input (the first FC layer depends on it)."""

    def __init__(self, in_shape: Sequence[int], filters: int = 16, convs: int = 4, hidden: int = 16,
                 fc_layers: int = 3, dropout: float = 0.2, classes: int = 2) -> None:  # fmt: skip
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(convs):
            layers += [nn.Conv3d(channels, filters, 3, padding=1), nn.ReLU()]
            channels = filters
        features = filters
        for size in in_shape:
            features *= int(size)
        layers.append(nn.Flatten())
        for index in range(fc_layers):
            layers += [nn.Linear(features if index == 0 else hidden, hidden), nn.ReLU()]
            if index == 0 and dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, classes))
        super().__init__(*layers)


class DATNet(nn.Module):
    """A 5x5x5 stride-2 convolution and a stride-2 max-pool, four encoder stacks of MONAI ``ResNetBlock`` (two 3x3x3
    convolutions with a skip connection; the 2nd to 4th stack halve the resolution), global average pooling and a
    fully connected layer to ``classes`` logits."""

    def __init__(self, classes: int = 4, channels: Sequence[int] = (32, 64, 128, 256), blocks: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(1, channels[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm3d(channels[0]),
            nn.ReLU(),
            nn.MaxPool3d(3, stride=2, padding=1),
        )
        stacks: list[nn.Module] = []
        previous = channels[0]
        for index, width in enumerate(channels):
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                downsample = None
                if stride != 1 or previous != width:
                    downsample = nn.Sequential(nn.Conv3d(previous, width, 1, stride=stride, bias=False),
                                               nn.BatchNorm3d(width))  # fmt: skip
                stacks.append(ResNetBlock(previous, width, spatial_dims=3, stride=stride, downsample=downsample,
                                          act=("relu", {"inplace": False})))  # fmt: skip
                previous = width
        self.stacks = nn.Sequential(*stacks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(previous, classes)

    def forward(self, x):  # noqa: D102
        return self.fc(self.pool(self.stacks(self.stem(x))).flatten(1))
