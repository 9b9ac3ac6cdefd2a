"""A rotation/reflection-equivariant CNN: exact group convolutions over D4 in plain torch.

D4 (the 8 quarter-turn rotations and reflections of the pixel grid) acts exactly on square
images, with no interpolation. ``group='d2'`` uses its subgroup of the identity, the half turn and
the two mirrors instead: the exact symmetry of a lens whose ellipticity and shear lie along the
pixel axes (``model_i``), whose images are not symmetric under quarter turns. Feature maps carry
a group axis, ``(B, C, |G|, H, W)`` (the regular representation, Cohen & Welling 2016, "Group
Equivariant Convolutional Networks"): a lifting convolution correlates the image with the
|G| transformed copies of each filter, and a group
convolution transforms each filter spatially and permutes its group axis. Transforming the input
by ``u`` transforms every feature map by ``u`` and permutes the group axis; spatial mean pooling
followed by pooling over the group axis gives features that are exactly invariant. Exactness
needs odd kernels with 'same' padding and image sizes divisible by 2**(number of 2x2 pools).
Equivariant networks of this kind (C8 and D8 equivariant CNNs) hold the best published
DeepLense substructure-classification results on the Model A and B data sets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deeplense.core.config import ConfigError
from deeplense.data.transforms import dihedral, dihedral_group

__all__ = ["D4_TABLE", "D4_INVERSE", "LiftingConv", "GroupConv", "D4CNN"]


def _cayley() -> tuple[np.ndarray, np.ndarray]:
    """``table[a, b] = c`` with ``act(a, act(b, x)) == act(c, x)``, and inverses."""
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    images = [dihedral(x, e) for e in range(8)]
    table = np.zeros((8, 8), dtype=np.int64)
    for a in range(8):
        for b in range(8):
            composed = dihedral(images[b], a)
            table[a, b] = next(c for c in range(8) if torch.equal(composed, images[c]))
    inverse = np.array([int(np.flatnonzero(table[a] == 0)[0]) for a in range(8)])
    return table, inverse


D4_TABLE, D4_INVERSE = _cayley()


class LiftingConv(nn.Module):
    """Image ``(B, Cin, H, W)`` -> ``(B, Cout, |G|, H, W)``: correlation with the transformed filters."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, group: str = "d4"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd for exact equivariance")
        self.elements = dihedral_group(group)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        kernels = torch.stack([dihedral(self.weight, g) for g in self.elements], dim=1)  # (Cout, |G|, Cin, k, k)
        k = self.weight.shape[-1]
        out = F.conv2d(x, kernels.reshape(-1, *kernels.shape[2:]), padding=k // 2)
        return out.view(x.shape[0], self.out_channels, len(self.elements), *out.shape[-2:])


class GroupConv(nn.Module):
    """``(B, Cin, |G|, H, W)`` -> ``(B, Cout, |G|, H, W)``: ``out[g] = sum_h f[h] * T_g W[g^-1 h]``;
    the group axis is indexed by position in the group's element list."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, group: str = "d4"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd for exact equivariance")
        self.elements = dihedral_group(group)
        n = len(self.elements)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n, kernel_size, kernel_size))
        nn.init.kaiming_normal_(
            self.weight.view(out_channels, in_channels * n, kernel_size, kernel_size), nonlinearity="relu"
        )
        self.out_channels = out_channels
        position = {e: i for i, e in enumerate(self.elements)}
        # perms[i, j] = position of g^-1 h for the i-th element g and the j-th element h
        perms = [[position[D4_TABLE[D4_INVERSE[g], h]] for h in self.elements] for g in self.elements]
        self.register_buffer("perms", torch.as_tensor(perms), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        kernels = torch.stack(
            [dihedral(self.weight[:, :, self.perms[i]], g) for i, g in enumerate(self.elements)],  # type: ignore[index]
            dim=1,
        )
        cout, n, cin, _, k, _ = kernels.shape
        b, _, _, h, w = x.shape
        out = F.conv2d(x.reshape(b, cin * n, h, w), kernels.reshape(cout * n, cin * n, k, k), padding=k // 2)
        return out.view(b, cout, n, *out.shape[-2:])


class _Block(nn.Module):
    def __init__(self, conv: nn.Module, channels: int, pool: bool):
        super().__init__()
        self.conv, self.norm, self.pool = conv, nn.BatchNorm3d(channels), pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        if self.pool:
            b, c, g, h, w = x.shape
            x = F.max_pool2d(x.reshape(b, c * g, h, w), 2).view(b, c, g, h // 2, w // 2)
        return x


class D4CNN(nn.Module):
    """D4- (or D2-) equivariant CNN with invariant output features (``num_features`` = last width).

    ``widths`` are channels per group element (each layer holds ``|G| * width`` maps, |G| = 8 for
    d4 and 4 for d2); each width is a stage of ``depth`` convolutions (the first stage starts with
    the lifting convolution), and every stage but the last ends with a 2x2 max pool. BatchNorm
    statistics are shared over the group axis.
    """

    def __init__(
        self,
        in_chans: int = 1,
        widths: tuple[int, ...] = (8, 16, 24, 32),
        lift_kernel: int = 5,
        kernel: int = 3,
        group: str = "d4",
        depth: int = 1,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if int(depth) < 1:
            raise ConfigError("depth", f"must be >= 1, got {depth}")
        blocks = []
        for stage, width in enumerate(widths):
            pool = stage < len(widths) - 1
            for layer in range(int(depth)):
                conv: nn.Module
                if stage == 0 and layer == 0:
                    conv = LiftingConv(in_chans, width, lift_kernel, group)
                else:
                    conv = GroupConv(widths[stage - 1] if layer == 0 else width, width, kernel, group)
                blocks.append(_Block(conv, width, pool=pool and layer == int(depth) - 1))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = widths[-1]
        self.n_pools = len(widths) - 1

    def forward_features(self, x: Tensor) -> Tensor:
        """Equivariant spatial features ``(B, num_features, |G|, H', W')``, one map per group element."""
        return self.blocks(x)

    def forward_head(self, features: Tensor, pre_logits: bool = True) -> Tensor:
        """Invariant pooled features ``(B, num_features)``: spatial mean, then max over the group."""
        return features.mean(dim=(-2, -1)).amax(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
