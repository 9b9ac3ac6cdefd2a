"""Autoencoders for anomaly detection: a convolutional autoencoder, a variational autoencoder
whose KL term is part of its loss (weight ``beta``), and an adversarial autoencoder whose latent
distribution is pushed to a standard Gaussian by a discriminator.

Every network maps images ``(B, C, H, W)`` to ``(reconstruction, latent, penalty)`` in evaluation
(``penalty``: the per-image part of the loss beyond the reconstruction, e.g. ``beta * KL``) and
has ``training_loss(x) -> (B,)``: the per-image objective it is trained on. The reconstruction
term is the negative log-likelihood of the image under independent Gaussian pixels of standard
deviation ``pixel_sigma`` (in the network's pixel units, i.e. after the transforms), up to a
constant: the sum over bands and pixels of the squared residual over ``2 pixel_sigma**2``. It sets
the balance against the KL and adversarial terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from deeplense.core.registry import Registry

__all__ = [
    "AUTOENCODERS",
    "Autoencoder",
    "ConvAutoencoder",
    "VariationalAutoencoder",
    "AdversarialAutoencoder",
    "build_autoencoder",
]

AUTOENCODERS: Registry[Callable[..., Autoencoder]] = Registry("autoencoder")


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


class Autoencoder(nn.Module):
    """What the anomaly task needs of a network: ``forward(x) -> (reconstruction, latent,
    penalty)``, ``training_loss(x) -> (B,)``, ``encode(x) -> (B, latent_dim)``, the ``encoder``
    module that ``model.init_from`` loads, and the Gaussian pixel likelihood of width
    ``pixel_sigma``."""

    encoder: nn.Module
    latent_dim: int
    pixel_sigma: float

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def training_loss(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def squared_error(x: Tensor, reconstruction: Tensor) -> Tensor:
        """Per image: the sum over bands and pixels of the squared residual."""
        return (reconstruction.float() - x.float()).pow(2).flatten(1).sum(1)

    def reconstruction_nll(self, x: Tensor, reconstruction: Tensor) -> Tensor:
        """Per image: the Gaussian negative log-likelihood (nats, without its constant)."""
        return self.squared_error(x, reconstruction) / (2 * self.pixel_sigma**2)


class ConvAutoencoder(Autoencoder):
    """Stride-2 convolutional encoder (one block per width: a stride-2 3x3 convolution, then
    ``depth - 1`` more) to a ``latent_dim`` vector, and its mirror image as decoder (nearest
    upsampling, then ``depth`` convolutions per block).

    ``img_size`` must be divisible by ``2 ** len(widths)``."""

    def __init__(
        self,
        in_chans: int = 1,
        img_size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        latent_dim: int = 64,
        pixel_sigma: float = 0.1,
        depth: int = 1,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not pixel_sigma > 0:
            raise ValueError(f"pixel_sigma must be > 0, got {pixel_sigma}")
        self.pixel_sigma = float(pixel_sigma)
        factor = 2 ** len(widths)
        if img_size % factor:
            raise ValueError(f"image size {img_size} is not divisible by 2**len(widths) = {factor}")
        self.in_chans, self.img_size, self.latent_dim = in_chans, img_size, int(latent_dim)
        self.grid = img_size // factor
        down: list[nn.Module] = []
        channels = in_chans
        for width in widths:
            down += _block(channels, width, 2)
            for _ in range(depth - 1):
                down += _block(width, width, 1)
            channels = width
        self.encoder = nn.Sequential(*down, nn.Flatten())
        flat = channels * self.grid * self.grid
        self.to_latent = nn.Linear(flat, self.latent_outputs())
        self.from_latent = nn.Sequential(nn.Linear(self.latent_dim, flat), nn.LeakyReLU(0.1))
        up: list[nn.Module] = []
        for width in (*reversed(widths[:-1]), widths[0]):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), *_block(channels, width, 1)]
            for _ in range(depth - 1):
                up += _block(width, width, 1)
            channels = width
        self.decoder = nn.Sequential(*up, nn.Conv2d(channels, in_chans, 3, padding=1))
        self.bottom_channels = widths[-1]

    def latent_outputs(self) -> int:
        return self.latent_dim

    def encode(self, x: Tensor) -> Tensor:
        """Latent vectors ``(B, latent_dim)`` (the mean, for a variational encoder)."""
        return self.to_latent(self.encoder(x))[:, : self.latent_dim]

    def decode(self, z: Tensor) -> Tensor:
        h = self.from_latent(z).view(-1, self.bottom_channels, self.grid, self.grid)
        return self.decoder(h)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.encode(x)
        return self.decode(z), z, torch.zeros_like(z[:, 0])

    def training_loss(self, x: Tensor) -> Tensor:
        reconstruction, _, penalty = self(x)
        return self.reconstruction_nll(x, reconstruction) + penalty


class VariationalAutoencoder(ConvAutoencoder):
    """The autoencoder with a Gaussian encoder ``q(z|x)`` and the loss ``-ELBO`` with the KL
    term weighted by ``beta`` (Higgins et al. 2017; ``beta = 1`` is the plain VAE). Training
    decodes a sample of ``q(z|x)``; evaluation decodes its mean."""

    def __init__(self, *args: Any, beta: float = 1.0, **kwargs: Any):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = float(beta)
        super().__init__(*args, **kwargs)

    def latent_outputs(self) -> int:
        return 2 * self.latent_dim

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (clamped to [-10, 10]) of ``q(z|x)``."""
        h = self.to_latent(self.encoder(x))
        return h[:, : self.latent_dim], h[:, self.latent_dim :].clamp(-10, 10)

    @staticmethod
    def kl_divergence(mean: Tensor, log_var: Tensor) -> Tensor:
        """Per image: KL(q(z|x) || N(0, I)) in nats."""
        return 0.5 * (mean.float().pow(2) + log_var.float().exp() - 1 - log_var.float()).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, log_var = self.posterior(x)
        return self.decode(mean), mean, self.beta * self.kl_divergence(mean, log_var)

    def training_loss(self, x: Tensor) -> Tensor:
        mean, log_var = self.posterior(x)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        return self.reconstruction_nll(x, self.decode(z)) + self.beta * self.kl_divergence(mean, log_var)


class AdversarialAutoencoder(ConvAutoencoder):
    """The autoencoder whose latent codes a discriminator tells from draws of ``N(0, I)``
    (Makhzani et al. 2016), trained with one optimiser in the non-saturating form of Goodfellow
    et al. (2014): the discriminator learns to label prior draws 1 and (detached) codes 0, while
    the encoder, through a frozen copy of the discriminator's weights, learns to make its codes
    labelled 1. The reconstruction term sums over every pixel (hundreds of nats an image) while
    a cross-entropy is about one nat, so the encoder's share is scaled by
    ``adversarial_weight``."""

    def __init__(self, *args: Any, adversarial_weight: float = 100.0, discriminator_width: int = 256, **kwargs: Any):
        if not adversarial_weight >= 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        super().__init__(*args, **kwargs)
        self.adversarial_weight = float(adversarial_weight)
        w = int(discriminator_width)
        self.discriminator = nn.Sequential(
            nn.Linear(self.latent_dim, w), nn.LeakyReLU(0.2), nn.Linear(w, w), nn.LeakyReLU(0.2), nn.Linear(w, 1)
        )

    def discriminator_loss(self, z: Tensor) -> Tensor:
        """Per image: the discriminator's cross-entropy on a prior draw (label 1) and on the
        code (label 0); no gradient reaches the encoder."""
        bce = nn.functional.binary_cross_entropy_with_logits
        real = self.discriminator(torch.randn_like(z)).squeeze(1).float()
        fake = self.discriminator(z.detach()).squeeze(1).float()
        return bce(real, torch.ones_like(real), reduction="none") + bce(fake, torch.zeros_like(fake), reduction="none")

    def encoder_adversarial_loss(self, z: Tensor) -> Tensor:
        """Per image: ``-log D(z)`` (the non-saturating generator loss), with the
        discriminator's weights held fixed so that only the encoder learns from it."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logit = torch.func.functional_call(self.discriminator, frozen, (z,)).squeeze(1).float()
        return nn.functional.binary_cross_entropy_with_logits(logit, torch.ones_like(logit), reduction="none")

    def training_loss(self, x: Tensor) -> Tensor:
        z = self.encode(x)
        return (
            self.reconstruction_nll(x, self.decode(z))
            + self.adversarial_weight * self.encoder_adversarial_loss(z)
            + self.discriminator_loss(z)
        )


AUTOENCODERS.register("conv_ae")(ConvAutoencoder)
AUTOENCODERS.register("conv_vae")(VariationalAutoencoder)
AUTOENCODERS.register("conv_aae")(AdversarialAutoencoder)


@AUTOENCODERS.register("mae")
def _masked_autoencoder(**kwargs: Any) -> Autoencoder:
    """A masked autoencoder on a timm vision transformer (:mod:`deeplense.models.masked_autoencoder`)."""
    from deeplense.models.masked_autoencoder import MaskedAutoencoder

    return MaskedAutoencoder(**kwargs)


def build_autoencoder(name: str, in_chans: int, img_size: int, **kwargs: Any) -> Autoencoder:
    """The registered autoencoder ``name`` (``conv_ae``, ``conv_vae``, ``conv_aae``, ``mae``)."""
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return AUTOENCODERS.create(name, in_chans=in_chans, img_size=img_size, **kwargs)
