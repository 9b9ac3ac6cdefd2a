"""A small CNN that trains fast on a 2-core CPU."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Blocks of ``depth`` Conv(3x3)-BN-ReLU layers with 2x2 max pooling between blocks, then global
    average pooling.

    ``widths`` are the channels of the blocks; ``num_features`` is the last one.
    """

    def __init__(
        self,
        in_chans: int = 1,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        dropout: float = 0.0,
        depth: int = 1,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        channels = in_chans
        for i, width in enumerate(widths):
            for _ in range(depth):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_features = channels

    def forward_features(self, x: Tensor) -> Tensor:
        """Spatial features ``(B, num_features, H / 2**(len(widths) - 1), W / ...)``."""
        return self.features(x)

    def forward_head(self, features: Tensor, pre_logits: bool = True) -> Tensor:
        """Pooled features ``(B, num_features)``: global average, then dropout."""
        return self.dropout(features.mean(dim=(-2, -1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
