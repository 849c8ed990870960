"""Networks: the 3D VGG regressor F (Table 1), the paired symmetric model F_sym (eq. 3) and the single-side
regressor of the ablation (Table 3, "VGG-small")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bundle.constants import PATCH_SIZE, side_index

__all__ = ["InputStandardisation", "VGGRegressor3D", "SymmetricRegressor", "SingleSideRegressor"]

DropoutPosition = Literal["head", "all"]


class InputStandardisation(nn.Module):
    """Each input patch (and channel) to zero mean and unit variance over its voxels, in float32:
    (x - mean) / sqrt(var + eps), the biased variance as ``nn.InstanceNorm3d`` without parameters computes it.
    Written out rather than taken from ``InstanceNorm3d`` because PyTorch's ONNX exporter refuses instance norm on
    the symmetric model's reshaped batch ("unknown channel size"); these are plain reductions everywhere."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.float()
        dims = list(range(2, x.dim()))
        centred = x - x.mean(dim=dims, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(dim=dims, keepdim=True) + self.eps)


def _vgg_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """``convs`` x (3x3x3 conv, zero padding 1, ReLU) followed by 2x2x2 max-pooling."""
    layers: list[nn.Module] = []
    for i in range(convs):
        conv = nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
        layers += [conv, nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool3d(2))
    return nn.Sequential(*layers)


class VGGRegressor3D(nn.Module):
    """The single-side SBR regressor F of Table 1: a small 3D VGG mapping one nigral patch to one value.

    Default arguments reproduce Table 1 exactly: 4 blocks of two 3x3x3 convolutions (zero padding, ReLU) and a
    2x2x2 max-pool with 64-128-256-512 channels; a [B, 1, 50, 50, 20] input shrinks to 512 x 3 x 3 x 1, is
    flattened in PyTorch's (C, D1, D2, D3) order to 4608 features and mapped by one linear layer to the
    normalised SBR ([B, 1]). That network has 14,053,441 trainable parameters.

    Args:
        channels: output channels of each block; its length is the number of blocks. ``(16, 32, 64, 128)``
            is the width of the original public release, a 3-entry list the 3-block VGG of Bae et al. 2023.
        in_channels: input channels (1 for an SMWI patch).
        patch_size: spatial input size; fixes the flattened feature size.
        convs_per_block: convolutions per block (2 in Table 1).
        dropout: dropout probability. Must be > 0 for Monte-Carlo dropout uncertainty.
        dropout_position: ``"head"`` puts a single dropout on the flattened features before the linear layer
            (default, which also allows the fast MC path: features are computed once, only the head is
            resampled); ``"all"`` additionally applies channel dropout (Dropout3d) after every block.
        standardise_input: scale each input patch to zero mean and unit variance (:class:`InputStandardisation`,
            float32) before the first convolution. Not in Table 1 (whose input is the mean-normalised patch, values
            around 1); the training recipe's cure for the predict-the-mean plateau (docs/performance.md). It adds no
            weights, so it is recorded in the network's config, not its state.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        patch_size: Sequence[int] = PATCH_SIZE,
        convs_per_block: int = 2,
        dropout: float = 0.2,
        dropout_position: DropoutPosition = "head",
        standardise_input: bool = False,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive integers, got {channels}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if dropout_position not in ("head", "all"):
            raise ValueError(f"dropout_position must be 'head' or 'all', got {dropout_position!r}.")
        spatial = [int(s) for s in patch_size]
        for _ in channels:
            spatial = [s // 2 for s in spatial]
        if min(spatial) < 1:
            raise ValueError(f"{len(channels)} pooling blocks are too many for a patch of size {tuple(patch_size)}.")

        self.channels = tuple(channels)
        self.in_channels = int(in_channels)
        self.convs_per_block = int(convs_per_block)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.dropout_position = dropout_position
        self.dropout = float(dropout)
        self.block_dropout = float(dropout) if dropout_position == "all" else 0.0
        self.standardise_input = bool(standardise_input)
        self.input_norm = InputStandardisation() if standardise_input else nn.Identity()
        in_ch = [in_channels, *channels[:-1]]
        self.blocks = nn.ModuleList(_vgg_block(i, o, convs_per_block) for i, o in zip(in_ch, channels, strict=True))
        self.num_features = channels[-1] * spatial[0] * spatial[1] * spatial[2]
        self.fc = nn.Linear(self.num_features, 1)
        self.reset_parameters()

    @torch.jit.unused
    def config(self) -> dict[str, Any]:
        """Constructor arguments, e.g. to record in a checkpoint what the weights belong to."""
        return {
            "channels": list(self.channels), "in_channels": self.in_channels, "patch_size": list(self.patch_size),
            "convs_per_block": self.convs_per_block, "dropout": self.dropout, "dropout_position": self.dropout_position,
            "standardise_input": self.standardise_input,
        }  # fmt: skip

    def reset_parameters(self) -> None:
        """He (fan-out) initialisation of the convolutions, as torchvision's VGG: without batch norm, PyTorch's
        default initialisation shrinks the signal through 8 ReLU convolutions so that training stalls."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Flattened convolutional features [B, num_features], in PyTorch's (C, D1, D2, D3) order.

        Block dropout (``dropout_position="all"``) is active in training mode or when ``sample`` is true.
        """
        x = self.input_norm(x)
        for block in self.blocks:
            x = block(x)
            if self.block_dropout > 0:
                x = F.dropout3d(x, self.block_dropout, self.training or sample)
        return torch.flatten(x, 1)

    def head(self, features: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Dropout (active in training mode or when ``sample``) and the linear layer, always in float32:
        bf16 autocast would quantise the normalised SBR to ~0.4 %."""
        return self._linear(F.dropout(features.float(), self.dropout, self.training or sample))

    def _linear(self, features: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.fc(features.float())
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.fc(features.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, *patch_size] -> [B, 1] normalised SBR (dropout only in training mode)."""
        return self.head(self.features(x))

    @torch.jit.export
    def mc_forward(self, x: torch.Tensor, n_samples: int, chunk_size: int = 16) -> torch.Tensor:
        """``n_samples`` Monte-Carlo-dropout predictions [n_samples, B] with dropout on, whatever the mode.

        Head-only dropout: the convolutional features are computed once and only the head is resampled, with an
        independent Bernoulli(1 - dropout) mask per sample and feature, scaled by 1 / (1 - dropout) as
        ``F.dropout`` does (same distribution as ``n_samples`` full passes in training mode; the masks come from
        one uniform draw, about 3× faster than ``F.dropout``'s per-element Bernoulli kernel on CPU). Dropout in
        the blocks: the input is replicated ``chunk_size`` times per batched pass (memory-bounded chunks).
        """
        if n_samples < 1:
            raise ValueError("n_samples must be >= 1")
        batch = x.shape[0]
        samples: list[torch.Tensor] = []
        if self.block_dropout == 0.0:
            features = self.features(x).float()
            if self.dropout == 0.0:  # F.dropout with p = 0 returns its input and draws nothing
                return self._linear(features.expand(n_samples, -1, -1)).reshape(n_samples, batch)
            keep = 1.0 - self.dropout
            shape = [n_samples, features.shape[0], features.shape[1]]
            uniform = torch.rand(shape, dtype=features.dtype, device=features.device)
            dropped = uniform.lt_(keep).mul_(features / keep)  # in place: mask (1 with probability keep) * scaled
            return self._linear(dropped).reshape(n_samples, batch)  # [n, B, F] -> [n, B]
        start = 0
        while start < n_samples:
            k = min(chunk_size, n_samples - start)
            replicated = x.repeat(k, 1, 1, 1, 1)  # sample-major: [k * B, C, ...]
            samples.append(self.head(self.features(replicated, True), True).reshape(k, batch))
            start += k
        return torch.cat(samples)


class SymmetricRegressor(nn.Module):
    """Paired model F_sym(x_r, x_l) = (F(x_r), F(x_l)) of eq. 3, one shared regressor F.

    The input carries the pair as two channels, ``[B, 2, *patch]`` = (mirrored right patch, left patch); both
    patches go through the same F in one batch of 2B and the output is ``[B, 2]`` = (right, left). The module
    owns no parameters besides F, so its ``regressor`` state dict is the model weights.

    Args:
        regressor: the shared single-side network F ([N, 1, *patch] -> [N, 1]).
        autocast_dtype: if given, run F under ``torch.autocast`` with this dtype on the input's device (used for
            bf16 on CPU, where MONAI's engines offer no mixed precision); the output is returned in float32.
    """

    def __init__(self, regressor: nn.Module, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.regressor = regressor
        self.autocast_dtype = autocast_dtype

    @staticmethod
    def _patches(pair: torch.Tensor) -> torch.Tensor:
        """[B, 2, *spatial] pair -> [2B, 1, *spatial] patches (right and left of a patient next to each other)."""
        if pair.ndim < 3 or pair.shape[1] != 2:
            raise ValueError(f"expected a patch pair [B, 2, *spatial] (right, left), got shape {tuple(pair.shape)}.")
        return pair.reshape(pair.shape[0] * 2, 1, *pair.shape[2:])

    def _run(self, fn: Callable[..., torch.Tensor], patches: torch.Tensor, *args: Any) -> torch.Tensor:
        """``fn(patches, *args)`` under this model's autocast (if any), as float32."""
        if self.autocast_dtype is None:
            return fn(patches, *args).float()
        with torch.autocast(device_type=patches.device.type, dtype=self.autocast_dtype):
            return fn(patches, *args).float()

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Eq. 3: [B, 2, *patch] -> [B, 2] = (F(x_r), F(x_l)), normalised SBR."""
        return self._run(self.regressor, self._patches(pair)).reshape(pair.shape[0], 2)

    def mc_forward(self, pair: torch.Tensor, n_samples: int, chunk_size: int = 16) -> torch.Tensor:
        """Monte-Carlo-dropout samples [B, n_samples, 2] of the pair (see ``VGGRegressor3D.mc_forward``)."""
        out = self._run(self.regressor.mc_forward, self._patches(pair), n_samples, chunk_size)
        return out.reshape(n_samples, pair.shape[0], 2).permute(1, 0, 2)


class SingleSideRegressor(SymmetricRegressor):
    """F trained on one side only (the standard regressor of the ablation, Table 3 "VGG-small", eq. 1).

    In training mode only that side's patch goes through F (one patch per patient, as a standard single-side
    regressor sees) and its prediction fills both output columns, of which the loss uses only ``side``; in eval
    mode it behaves like :class:`SymmetricRegressor` (F applied to both patches), so the validation metrics of the
    trained side are those of that model at inference. Its checkpoint is an ordinary F state dict.
    """

    def __init__(self, regressor: nn.Module, side: int | str, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__(regressor, autocast_dtype)
        self.side = side_index(side)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(pair)
        self._patches(pair)  # checks the pair's shape
        return self._run(self.regressor, pair[:, self.side : self.side + 1]).reshape(-1, 1).expand(-1, 2)
