"""The Lightning module shared by every supervised task: classification and regression with
uncertainty, with class weights, label smoothing, mixup, EMA of weights and the schedules."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from deeplense.data.transforms import mixup
from deeplense.models.heads import build_network, channels_last

__all__ = ["LensingModule", "monitor_of", "ema_update"]


def ema_update(decay: float):
    """EMA with the usual warm-up: step ``n`` uses ``min(decay, (1 + n) / (10 + n))``, so the
    random initial weights (and BatchNorm statistics) do not linger for ~1/(1 - decay) steps."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    return update


def _default_sigma_scale(state_dict, prefix, *args) -> None:
    """Checkpoints written before sigma scaling existed load with a scale of one."""
    if f"{prefix}target_std" in state_dict and f"{prefix}sigma_scale" not in state_dict:
        state_dict[f"{prefix}sigma_scale"] = torch.ones_like(state_dict[f"{prefix}target_std"])


def monitor_of(task: str) -> tuple[str, str]:
    """(metric, mode) used for checkpoints, early stopping and tuning."""
    return ("val_auc_macro", "max") if task == "classification" else ("val_mae", "min")


class LensingModule(L.LightningModule):
    """Network + loss + optimisation. ``contract`` (model spec, data contract, normalisation) is
    stored in every checkpoint's hyper-parameters, so a checkpoint alone rebuilds the model."""

    def __init__(self, contract: dict[str, Any], train: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.contract, self.cfg = contract, train
        self.task = contract["task"]
        n_out = len(contract["class_names"]) if self.task == "classification" else len(contract["targets"])
        self.net = build_network(contract["model"], self.task, n_out, contract["in_chans"], contract["img_size"])
        if train["channels_last"]:
            self.net = channels_last(self.net)
        weights = contract.get("class_weights")
        self.register_buffer("class_weight", torch.tensor(weights, dtype=torch.float32) if weights else None)
        self.register_buffer("target_mean", torch.tensor(contract.get("target_mean") or [0.0]))
        self.register_buffer("target_std", torch.tensor(contract.get("target_std") or [1.0]))
        # factor on the predicted sigma, fitted on the validation split (see _recalibrate)
        self.register_buffer("sigma_scale", torch.ones_like(self.target_std))
        self._register_load_state_dict_pre_hook(_default_sigma_scale)
        self.ema = None
        if train["ema_decay"] > 0:  # exponential moving average of weights and BatchNorm statistics
            self.ema = AveragedModel(self.net, multi_avg_fn=ema_update(train["ema_decay"]), use_buffers=True)
        self._outputs: dict[str, list] = {"val": [], "test": []}

    # ----------------------------------------------------------------------------- forward
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg["channels_last"] else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.ema.module if (self.ema is not None and not self.training) else self.net
        return net(self._prepare(x))

    def predict_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities, or mean and sigma in target units."""
        return self._decode(self(x))

    def _decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        out = out.float()
        if self.task == "classification":
            return {"probs": out.softmax(-1)}
        mean, var = self.net.split_regression(out)
        sigma = var.sqrt() * self.target_std * self.sigma_scale
        return {"mean": mean * self.target_std + self.target_mean, "sigma": sigma}

    # -------------------------------------------------------------------------------- loss
    def _loss(
        self, out: torch.Tensor, batch: dict[str, torch.Tensor], soft: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.task == "classification":
            if soft is not None:
                logp = out.float().log_softmax(-1)
                w = self.class_weight[None] if self.class_weight is not None else 1.0
                return -(soft * logp * w).sum(-1).mean()
            return F.cross_entropy(
                out.float(), batch["label"], weight=self.class_weight, label_smoothing=self.cfg["label_smoothing"]
            )
        y = (batch["target"] - self.target_mean) / self.target_std
        mean, var = self.net.split_regression(out.float())
        if self.cfg["loss"] == "mse":
            return F.mse_loss(mean, y)
        nll = F.gaussian_nll_loss(mean, y, var, full=True, reduction="none")
        if self.cfg["loss"] == "beta_nll":
            # Seitzer et al. 2022: weighting by var**beta (no gradient) keeps samples the network
            # calls uncertain from being ignored by the mean; beta = 0 is the plain NLL, 1 the MSE
            # gradient for the mean.
            nll = nll * var.detach() ** self.cfg["nll_beta"]
        return nll.mean()

    def training_step(self, batch, batch_idx):
        x, soft = batch["image"], None
        if self.task == "classification" and self.cfg["mixup_alpha"] > 0:
            g = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1_000_003 + int(self.global_step))
            x, soft = mixup(
                x, F.one_hot(batch["label"], len(self.contract["class_names"])).float(), self.cfg["mixup_alpha"], g
            )
        loss = self._loss(self.net(self._prepare(x)), batch, soft)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    # --------------------------------------------------------------------------- evaluate
    def _eval_step(self, batch, stage: str):
        out = self(batch["image"])
        loss = self._loss(out, batch)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(out), sync_dist=True)
        pred = self._decode(out)
        pred.update(label=batch["label"], target=batch["target"], index=batch["index"])
        self._outputs[stage].append({k: v.detach() for k, v in pred.items()})

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def gathered(self, stage: str) -> dict[str, np.ndarray]:
        """Predictions of an evaluation epoch from every process, as numpy arrays."""
        parts = self._outputs[stage]
        if not parts:
            return {}
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if self.trainer is not None and self.trainer.world_size > 1:
            gathered = self.all_gather(merged)
            merged = {k: v.reshape(v.shape[0] * v.shape[1], *v.shape[2:]) for k, v in gathered.items()}
            # a distributed sampler pads the last batches with repeated images: keep each once
            _, first = np.unique(merged["index"].cpu().numpy(), return_index=True)
            keep = torch.as_tensor(first, device=merged["index"].device)
            merged = {k: v[keep] for k, v in merged.items()}
        return {k: v.cpu().numpy() for k, v in merged.items()}

    def _epoch_metrics(self, stage: str) -> dict[str, float]:
        from deeplense.evaluate.metrics import classification_metrics, regression_metrics

        got = self.gathered(stage)
        self._outputs[stage] = []
        if not got:
            return {}
        if self.task == "classification":
            m = classification_metrics(got["probs"], got["label"], self.contract["class_names"])
            out = {f"{stage}_acc": m["accuracy"]}
            if "auc_macro" in m:
                out[f"{stage}_auc_macro"] = m["auc_macro"]
            elif "auc" in m:
                out[f"{stage}_auc_macro"] = m["auc"]
            return out
        if stage == "val" and self.cfg.get("recalibrate", False):
            got["sigma"] = self._recalibrate(got)
        m = regression_metrics(
            got["mean"], got["sigma"], got["target"], self.contract["targets"], self.contract["target_units"]
        )
        first = m[self.contract["targets"][0]]
        return {f"{stage}_mae": first["mae"], f"{stage}_coverage_68": first["coverage_68"]}

    def _recalibrate(self, got: dict[str, np.ndarray]) -> np.ndarray:
        """Sigma scaling (Laves et al. 2020): set ``sigma_scale`` per target to the factor that
        maximises the Gaussian likelihood of these validation predictions, sqrt(mean(z**2)) of the
        unscaled standardised errors; saved with the checkpoint of this epoch. Returns the
        rescaled sigma."""
        current = self.sigma_scale.cpu().numpy()
        raw = got["sigma"] / current
        scale = np.sqrt(np.mean(((got["target"] - got["mean"]) / raw) ** 2, axis=0))
        self.sigma_scale.copy_(torch.as_tensor(scale, dtype=self.sigma_scale.dtype))
        return raw * scale

    def on_validation_epoch_end(self):
        for k, v in self._epoch_metrics("val").items():
            self.log(k, v, prog_bar=True, rank_zero_only=False, sync_dist=False)

    # ------------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg["lr"])
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, cfg["epochs"]))
        if cfg["scheduler"] == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if cfg["scheduler"] == "plateau":
            metric, mode = monitor_of(self.task)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=mode, patience=cfg["plateau_patience"], factor=0.3
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": metric, "interval": "epoch"}}
        if cfg["scheduler"] == "cosine":
            warm = int(cfg["warmup_epochs"] * per_epoch)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm))
            if warm:
                ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm)
                sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
            else:
                sched = cosine
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt
