"""Masked autoencoder (He et al. 2022) on a timm vision transformer.

The image is cut into ``patch_size`` patches; the encoder (any timm ViT with absolute position
embeddings) sees a random ``1 - mask_ratio`` of them, and a light transformer decoder predicts the
pixels of the others. Targets are normalised pixels: each patch minus its mean, over its standard
deviation (``norm_pix``), and the loss is their mean squared error over the masked patches only.

In evaluation, reconstructions are deterministic: the patches are dealt, in a fixed random order
drawn once from ``mask_seed``, into ``G = round(1 / (1 - mask_ratio))`` groups; the image is encoded
``G`` times, each time seeing one group, and every patch's reconstruction is the mean of its
``G - 1`` predictions while masked, brought back to pixel units with the patch's own mean and
standard deviation. Its error, the masked reconstruction error averaged over several random masks,
is what the anomaly task scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deeplense.models.autoencoders import Autoencoder
from deeplense.models.registry import create_backbone

__all__ = ["MaskedAutoencoder"]

_VIT_PARTS = ("patch_embed", "_pos_embed", "norm_pre", "blocks", "norm", "num_prefix_tokens")


class MaskedAutoencoder(Autoencoder):
    """``encoder``: a timm ViT name with ``encoder_kwargs`` (e.g. ``{patch_size: 8, depth: 6}``);
    ``decoder_width``/``decoder_depth``/``decoder_heads``: the decoder transformer."""

    def __init__(
        self,
        in_chans: int = 1,
        img_size: int = 64,
        encoder: str = "vit_tiny_patch16_224",
        encoder_kwargs: dict[str, Any] | None = None,
        mask_ratio: float = 0.75,
        decoder_width: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix: bool = True,
        pixel_sigma: float = 0.1,
        mask_seed: int = 0,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if not 0.5 <= mask_ratio <= 0.95:
            raise ValueError(f"mask_ratio must be in [0.5, 0.95], got {mask_ratio}")
        if not pixel_sigma > 0:
            raise ValueError(f"pixel_sigma must be > 0, got {pixel_sigma}")
        vit: Any = create_backbone(encoder, in_chans=in_chans, img_size=img_size, **(encoder_kwargs or {}))
        missing = [part for part in _VIT_PARTS if not hasattr(vit, part)]
        if missing or getattr(vit, "dynamic_img_size", False) or getattr(vit, "pos_embed", None) is None:
            raise ValueError(f"{encoder}: a masked autoencoder needs a timm ViT with absolute position embeddings")
        self.encoder = vit
        patch = vit.patch_embed.patch_size
        patch = patch[0] if isinstance(patch, tuple | list) else int(patch)
        if img_size % patch:
            raise ValueError(f"image size {img_size} is not divisible by the patch size {patch}")
        self.in_chans, self.patch, self.grid = in_chans, patch, img_size // patch
        self.n_patches = self.grid * self.grid
        self.n_prefix = int(vit.num_prefix_tokens)
        self.mask_ratio, self.norm_pix, self.pixel_sigma = float(mask_ratio), bool(norm_pix), float(pixel_sigma)
        self.n_visible = max(1, round(self.n_patches * (1 - self.mask_ratio)))
        self.n_groups = max(2, round(1 / (1 - self.mask_ratio)))
        width = int(vit.embed_dim)
        self.latent_dim = int(vit.num_features)
        self.decoder_embed = nn.Linear(width, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.decoder_pos = nn.Parameter(torch.zeros(1, self.n_patches, decoder_width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_width, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth))
        )
        self.decoder_norm = nn.LayerNorm(decoder_width)
        self.decoder_pred = nn.Linear(decoder_width, patch * patch * in_chans)
        order = torch.randperm(self.n_patches, generator=torch.Generator().manual_seed(int(mask_seed)))
        self.register_buffer("eval_order", order)

    # ----------------------------------------------------------------------------- patches
    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, n_patches, patch * patch * C)``, patches in row-major order."""
        p, g = self.patch, self.grid
        x = x.reshape(-1, self.in_chans, g, p, g, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, g * g, p * p * self.in_chans)

    def unpatchify(self, patches: Tensor) -> Tensor:
        p, g = self.patch, self.grid
        x = patches.reshape(-1, g, g, p, p, self.in_chans)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, self.in_chans, g * p, g * p)

    def targets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The regression targets per patch, and each patch's mean and standard deviation."""
        patches = self.patchify(x.float())
        if not self.norm_pix:
            return patches, torch.zeros_like(patches[..., :1]), torch.ones_like(patches[..., :1])
        mean = patches.mean(-1, keepdim=True)
        std = (patches.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
        return (patches - mean) / std, mean, std

    # -------------------------------------------------------------------- encoder, decoder
    def encode_visible(self, x: Tensor, visible: Tensor) -> Tensor:
        """Tokens ``(B, n_prefix + K, width)`` of the encoder that saw only the patches
        ``visible`` ``(B, K)``."""
        vit: Any = self.encoder
        tokens = vit._pos_embed(vit.patch_embed(x))
        prefix, patches = tokens[:, : self.n_prefix], tokens[:, self.n_prefix :]
        kept = torch.gather(patches, 1, visible[..., None].expand(-1, -1, patches.shape[-1]))
        return vit.norm(vit.blocks(vit.norm_pre(torch.cat([prefix, kept], 1))))  # type: ignore[no-any-return]

    def decode_tokens(self, h: Tensor, visible: Tensor) -> Tensor:
        """Predicted targets ``(B, n_patches, patch * patch * C)`` of every patch."""
        d = self.decoder_embed(h)
        prefix, kept = d[:, : self.n_prefix], d[:, self.n_prefix :]
        full = self.mask_token.expand(kept.shape[0], self.n_patches, -1)
        full = full.scatter(1, visible[..., None].expand(-1, -1, kept.shape[-1]), kept) + self.decoder_pos
        y = self.decoder_norm(self.decoder_blocks(torch.cat([prefix, full], 1)))
        return self.decoder_pred(y[:, self.n_prefix :])  # type: ignore[no-any-return]

    def encode(self, x: Tensor) -> Tensor:
        """Pooled encoder features ``(B, latent_dim)`` of the whole (unmasked) image."""
        return self.encoder(x)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------- losses
    def training_loss(self, x: Tensor) -> Tensor:
        """Per image: the mean squared error of the targets over a random mask's masked patches."""
        noise = torch.rand(x.shape[0], self.n_patches, device=x.device)
        visible = noise.argsort(1)[:, : self.n_visible]
        pred = self.decode_tokens(self.encode_visible(x, visible), visible)
        target, _, _ = self.targets(x)
        masked = torch.ones_like(noise).scatter(1, visible, 0.0)
        error = (pred.float() - target).pow(2).mean(-1)
        return (error * masked).sum(1) / masked.sum(1)

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The deterministic reconstruction ``(B, C, H, W)`` (pixel units) from the ``G`` fixed
        masks, and per image the mean squared target error over every (mask, masked patch)."""
        target, mean, std = self.targets(x)
        total = torch.zeros_like(target)
        count = torch.zeros(self.n_patches, 1, device=x.device)
        error = torch.zeros_like(target[..., 0])
        for g in range(self.n_groups):
            visible_patches = self.eval_order[g :: self.n_groups]  # type: ignore[index]
            masked = torch.ones(self.n_patches, 1, device=x.device).index_fill(0, visible_patches, 0.0)
            visible = visible_patches.expand(x.shape[0], -1)
            pred = self.decode_tokens(self.encode_visible(x, visible), visible).float()
            total = total + pred * masked
            count = count + masked
            error = error + (pred - target).pow(2).mean(-1) * masked[:, 0]
        mean_pred = total / count.clamp_min(1)
        return self.unpatchify(mean_pred * std + mean), error.sum(1) / count.sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        reconstruction, _ = self.reconstruct(x)
        z = self.encode(x)
        return reconstruction.to(x.dtype), z, torch.zeros_like(z[:, 0])
