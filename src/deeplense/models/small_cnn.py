"""A small CNN that trains fast on a 2-core CPU."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Conv(3x3)-BN-ReLU blocks with 2x2 max pooling between them, then global average pooling.

    ``widths`` are the channels of the blocks; ``num_features`` is the last one.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.features(x).mean(dim=(-2, -1)))
