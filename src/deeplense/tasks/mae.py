"""Masked-autoencoder pretraining of a vision transformer on unlabelled images
(:class:`~deeplense.models.masked_autoencoder.MaskedAutoencoder`).

``model.name`` and ``model.kwargs`` name the timm ViT, the encoder a later task takes over with
``model.init_from``; ``train.mask_ratio``, ``train.decoder_width``, ``train.decoder_depth`` and
``train.decoder_heads`` shape the masking and the light decoder, which is discarded after
pretraining. The validation loss uses the fixed evaluation masks, so it is deterministic.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract
from deeplense.models.masked_autoencoder import MaskedAutoencoder
from deeplense.tasks.base import TASKS
from deeplense.tasks.pretraining import Pretraining

__all__ = ["MaskedImageModelling"]

_DECODER_KEYS = ("mask_ratio", "decoder_width", "decoder_depth", "decoder_heads")


@TASKS.register("mae")
class MaskedImageModelling(Pretraining):
    """Reconstruct the masked patches of unlabelled images (normalised-pixel targets)."""

    encoder_attribute = "encoder"
    train_defaults: ClassVar[dict[str, Any]] = {
        "mask_ratio": 0.75,
        "decoder_width": 128,
        "decoder_depth": 2,
        "decoder_heads": 4,
    }

    def build_net(self, contract: ModelContract) -> Any:
        spec = {k: contract.training.get(k, self.cfg.get(k, self.train_defaults[k])) for k in _DECODER_KEYS}
        return MaskedAutoencoder(
            in_chans=contract.input.in_chans,
            img_size=contract.input.img_size,
            encoder=contract.model.name,
            encoder_kwargs=dict(contract.model.kwargs),
            **spec,
        )

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        ratio = train["mask_ratio"]
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.5 <= ratio <= 0.95:
            raise ConfigError("train.mask_ratio", f"expected a fraction in [0.5, 0.95], got {ratio!r}")
        for key in _DECODER_KEYS[1:]:
            value = train[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"train.{key}", f"expected a whole number >= 1, got {value!r}")

    @classmethod
    def training_state(cls, config: dict[str, Any], data: Any) -> dict[str, Any]:
        return {key: config["train"][key] for key in _DECODER_KEYS}

    @property
    def autoencoder(self) -> MaskedAutoencoder:
        return cast(MaskedAutoencoder, self.net)

    def forward(self, x: Tensor) -> Tensor:
        net = cast(MaskedAutoencoder, self.inference_net())
        x = self._prepare(x)
        _, loss = net.reconstruct(x)
        return torch.cat([loss[:, None], net.encode(x).float()], 1)

    def training_loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        return self.autoencoder.training_loss(self._prepare(batch["image"])).mean()

    def explain(self, x: Tensor) -> dict[str, Tensor]:
        """The input, its reconstruction from the fixed masks, and the residual."""
        reconstruction, _ = cast(MaskedAutoencoder, self.inference_net()).reconstruct(self._prepare(x))
        return {"input": x, "reconstruction": reconstruction, "residual": x - reconstruction}
