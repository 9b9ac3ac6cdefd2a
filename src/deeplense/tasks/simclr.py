"""Contrastive pretraining (SimCLR, Chen et al. 2020) of any backbone, CNNs and the equivariant
``d4_cnn`` included, on unlabelled images.

Two random views of each image pass through the backbone and a projection MLP; the NT-Xent loss
(temperature ``train.temperature``) pulls each image's two views together and pushes them from
the other images of the batch. The views follow the symmetries of a lens image: a random element
of the dihedral group D4 (the sky has no preferred orientation), a shift of up to
``img_size / 16`` pixels, a flux scale between 0.8 and 1.25, and Gaussian noise of up to
``train.view_noise`` times the image's standard deviation. The projection head is discarded after
pretraining; ``model.init_from`` hands the backbone to a later task.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract
from deeplense.models.heads import Network
from deeplense.models.registry import create_backbone
from deeplense.tasks.base import TASKS
from deeplense.tasks.pretraining import Pretraining

__all__ = ["Contrastive", "random_views", "nt_xent"]


def random_views(x: Tensor, noise: float, generator: torch.Generator | None = None) -> Tensor:
    """One random view of each image of ``x`` ``(B, C, H, W)`` (see the module docstring);
    ``generator`` (CPU) makes the views reproducible."""
    b, size = x.shape[0], x.shape[-1]
    element = torch.randint(0, 8, (b,), generator=generator)
    views = x.clone()
    for e in range(8):
        rows = torch.nonzero(element == e).flatten().to(x.device)
        if len(rows):
            turned = torch.rot90(x[rows], e % 4, dims=(-2, -1))
            views[rows] = turned.flip(-1) if e >= 4 else turned
    reach = max(1, size // 16)
    shifts = torch.randint(-reach, reach + 1, (b, 2), generator=generator)
    for i in range(b):
        views[i] = torch.roll(views[i], (int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
    scale = torch.exp(torch.empty(b).uniform_(-0.223, 0.223, generator=generator)).to(x.device)  # 0.8 to 1.25
    sigma = torch.empty(b).uniform_(0.0, noise, generator=generator).to(x.device)
    spread = views.flatten(1).std(1)
    grain = torch.randn(views.shape, generator=generator).to(x.device)
    shape = (b,) + (1,) * (x.dim() - 1)
    return views * scale.view(shape) + grain * (sigma * spread).view(shape)


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Per pair: the normalised-temperature cross-entropy of SimCLR, averaged over its two views
    (``a[i]`` and ``b[i]`` are two views of image ``i``)."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    logits = z @ z.T / temperature
    n = len(a)
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    per_view = F.cross_entropy(logits, partner, reduction="none")
    return (per_view[:n] + per_view[n:]) / 2


class _ProjectionHead(nn.Sequential):
    def __init__(self, width: int, hidden: int, out: int):
        super().__init__(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


@TASKS.register("simclr")
class Contrastive(Pretraining):
    """SimCLR on ``model.name`` (any backbone of ``deeplense models list``)."""

    train_defaults: ClassVar[dict[str, Any]] = {"temperature": 0.2, "projection_dim": 64, "view_noise": 0.1}
    not_exportable = "its loss draws random views; export the run fine-tuned from it (model.init_from)"

    def build_net(self, contract: ModelContract) -> Any:
        backbone: Any = create_backbone(
            contract.model.name,
            in_chans=contract.input.in_chans,
            img_size=contract.input.img_size,
            pretrained=contract.model.pretrained,
            **contract.model.kwargs,
        )
        dim = int(contract.training.get("projection_dim", self.cfg.get("projection_dim", 64)))
        return Network(backbone, _ProjectionHead(int(backbone.num_features), 4 * dim, dim))

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        t = train["temperature"]
        if not isinstance(t, int | float) or isinstance(t, bool) or not 0.01 <= t <= 10:
            raise ConfigError("train.temperature", f"expected a number in [0.01, 10], got {t!r}")
        dim = train["projection_dim"]
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
            raise ConfigError("train.projection_dim", f"expected a whole number >= 2, got {dim!r}")
        noise = train["view_noise"]
        if not isinstance(noise, int | float) or isinstance(noise, bool) or not 0 <= noise <= 1:
            raise ConfigError("train.view_noise", f"expected a number in [0, 1], got {noise!r}")

    @classmethod
    def training_state(cls, config: dict[str, Any], data: Any) -> dict[str, Any]:
        return {key: config["train"][key] for key in ("temperature", "projection_dim", "view_noise")}

    def _pair_loss(self, net: Network, x: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = float(self.contract.training.get("view_noise", 0.1))
        temperature = float(self.contract.training.get("temperature", 0.2))
        a = net.head(net.backbone(self._prepare(random_views(x, noise, generator))))
        b = net.head(net.backbone(self._prepare(random_views(x, noise, generator))))
        return nt_xent(a, b, temperature)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1 + F)``: the loss on two views drawn from a fixed seed (a deterministic
        validation loss), then the backbone's features of the image itself."""
        net = cast(Network, self.inference_net())
        loss = self._pair_loss(net, x, torch.Generator().manual_seed(0))
        return torch.cat([loss[:, None], net.backbone(self._prepare(x)).float()], 1)

    def training_loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        return self._pair_loss(self.net, batch["image"], None).mean()
