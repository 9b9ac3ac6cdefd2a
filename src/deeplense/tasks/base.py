"""The Task: one kind of learning, as one registered module.

A task declares what it needs from the data, builds its networks from a
:class:`~deeplense.core.contract.ModelContract`, computes its loss, owns its optimisation, its
metrics, its predictions table and what ``evaluate`` draws and ranks. The Lightning module in
``train`` only drives it, and the predictor in ``infer`` loads it without Lightning.

Adding a task: subclass :class:`Task` in ``tasks/<name>.py``, decorate it with
``@TASKS.register("<name>")`` and import the module in ``tasks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract, OutputSpec
from deeplense.core.registry import Registry
from deeplense.models.heads import Network, build_network, channels_last
from deeplense.tasks.optim import build_optimization

__all__ = ["TASKS", "Task", "class_labels", "ema_update", "task_state_dict"]

TASKS: Registry[type[Task]] = Registry("task")


def ema_update(decay: float) -> Callable[[Sequence[Tensor], Sequence[Tensor], Tensor | int], None]:
    """EMA with the usual warm-up: step ``n`` uses ``min(decay, (1 + n) / (10 + n))``, so the
    random initial weights (and BatchNorm statistics) do not linger for ~1/(1 - decay) steps."""

    @torch.no_grad()
    def update(averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor | int) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    return update


class Task(nn.Module):
    """Base of every task: a network ``net`` (backbone + ``head``), an optional EMA of it, and the
    hooks the trainer, predictor, evaluator and leaderboard call.

    Class attributes a task sets: ``head`` (name in :data:`~deeplense.models.heads.HEADS`),
    ``monitor`` (validation metric and mode for checkpoints, early stopping and tuning),
    ``train_defaults`` (its own ``train.*`` config keys with defaults) and ``train_choices``
    (allowed values of those keys), ``figures`` (figure kinds ``evaluate`` draws) and
    ``ranking`` (the leaderboard columns to rank on, the first present, and whether ascending).
    """

    head: ClassVar[str]
    #: What the task needs from the data: "labels" (a class per image), "targets" (metadata
    #: columns), "images" (images alone) ...; checked by :meth:`check_data` before training.
    needs: ClassVar[frozenset[str]]
    monitor: ClassVar[tuple[str, str]]
    train_defaults: ClassVar[dict[str, Any]] = {}
    train_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    figures: ClassVar[tuple[str, ...]] = ()

    #: The attribute of ``net`` that is its encoder: what ``model.init_from`` hands from one
    #: task to another and ``train.freeze_encoder`` freezes.
    encoder_attribute: ClassVar[str] = "backbone"
    #: Why the task's network cannot be exported (empty: it can).
    not_exportable: ClassVar[str] = ""

    def __init__(self, contract: ModelContract, train: dict[str, Any]):
        super().__init__()
        self.contract, self.cfg = contract, train
        self.net: Network = self.build_net(contract)
        if train.get("channels_last", False):
            self.net = channels_last(self.net)  # type: ignore[assignment]
        self.frozen = bool(train.get("freeze_encoder", False))
        if self.frozen:
            self.encoder().requires_grad_(False)
        self.ema: AveragedModel | None = None
        if train.get("ema_decay", 0) > 0:  # exponential moving average of weights and BatchNorm statistics
            self.ema = AveragedModel(self.net, multi_avg_fn=ema_update(train["ema_decay"]), use_buffers=True)

    def build_net(self, contract: ModelContract) -> Any:
        """The trained network: the contract's backbone with this task's :attr:`head`."""
        return build_network(
            {"name": contract.model.name, "kwargs": contract.model.kwargs, "pretrained": contract.model.pretrained},
            self.head,
            self.n_outputs(contract),
            contract.input.in_chans,
            contract.input.img_size,
        )

    # ------------------------------------------------------------------ declared by each task
    @classmethod
    def training_classes(cls, config: dict[str, Any], class_names: list[str]) -> list[str] | None:
        """The classes the training and validation images are limited to (``None``: all of
        them); the test images keep every class. An anomaly detector learns the normal class only."""
        return None

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        """Ranges of this task's own ``train.*`` keys (checked whatever the task of the run, so a
        bad value is never silently kept); raise :class:`ConfigError`."""

    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        """Checks of a resolved config that this task is the task of; raise :class:`ConfigError`."""

    @classmethod
    def check_data(cls, data: Any) -> None:
        """Whether the training data give what the task :attr:`needs`; raise :class:`ConfigError`."""
        if "labels" in cls.needs and sum(1 for n in data.class_counts if n > 0) < 2:
            present = [c for c, n in zip(data.class_names, data.class_counts) if n > 0]
            raise ConfigError(
                "data",
                f"a {cls.__name__.lower()} task needs images of two classes or more; the training split has {present}",
            )
        if "targets" in cls.needs and not data.targets:
            raise ConfigError("data.targets", f"a {cls.__name__.lower()} task needs at least one target column")

    @classmethod
    def output_spec(cls, data: Any) -> OutputSpec:
        """What the network predicts, from the training data (``deeplense.train.data.TrainingData``)."""
        raise NotImplementedError

    @classmethod
    def training_state(cls, config: dict[str, Any], data: Any) -> dict[str, Any]:
        """What the loss is built with, stored in the contract (e.g. class weights)."""
        return {}

    @staticmethod
    def n_outputs(contract: ModelContract) -> int:
        raise NotImplementedError

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        """Network output -> predictions in physical units."""
        raise NotImplementedError

    def epoch_metrics(self, stage: str, got: dict[str, np.ndarray]) -> dict[str, float]:
        """The few numbers logged after a validation epoch, ``{stage}_<name>``."""
        raise NotImplementedError

    def metrics(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int = 0) -> dict[str, Any]:
        """The full metrics of predictions against the truth (``label``, ``target``)."""
        raise NotImplementedError

    def predictions_table(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None) -> pd.DataFrame:
        """One row per image: the truth where known and the predictions."""
        raise NotImplementedError

    def combine_views(self, views: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Equal-weight mixture of the predictions of several views of the same images (by
        default the mean of every prediction)."""
        return {k: torch.stack([v[k] for v in views]).mean(0) for k in views[0]}

    def truth_from_source(self, source: Any, where: str) -> dict[str, np.ndarray]:
        """``label`` (in this model's class order) and ``target`` of an image source (by
        default the labels, and no targets)."""
        labels = class_labels(source, self.contract.output.class_names, where)
        return {"label": labels, "target": np.zeros((len(source), 0), np.float32)}

    def example_indices(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> np.ndarray:
        """Images whose :meth:`explain` maps ``evaluate`` draws (none by default)."""
        return np.zeros(0, dtype=np.int64)

    def fit_to_validation(self, got: dict[str, np.ndarray]) -> None:
        """Fit what the task estimates from the validation predictions after each validation
        epoch (before the checkpoint is written); nothing by default."""

    def explain(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image maps that show why the task predicted what it did (images after the
        evaluation transforms), e.g. an autoencoder's reconstruction and residual."""
        return {}

    def usable_part(self, source: Any, where: str) -> Any:
        """The part of an image source this task can be evaluated on (all of it by default)."""
        return source

    def combine_members(
        self,
        preds: list[dict[str, np.ndarray]],
        method: str,
        val_preds: list[dict[str, np.ndarray]] | None = None,
        val_truth: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """An ensemble's predictions from its members' (``mean``, or ``stack`` fitted on the
        validation predictions); returns them and what was fitted."""
        raise NotImplementedError

    @staticmethod
    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        """The numbers a command prints and a leaderboard ranks on, first the ranking one."""
        raise NotImplementedError

    ranking: ClassVar[tuple[tuple[str, ...], bool]]  # (leaderboard columns, first present; ascending)

    @staticmethod
    def describe(metrics: dict[str, Any]) -> list[str]:
        """Lines a person reads after ``evaluate``, ``train`` or ``ensemble``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- shared
    def encoder(self) -> nn.Module:
        """The trained network's encoder (:attr:`encoder_attribute`)."""
        return cast(nn.Module, getattr(self.net, self.encoder_attribute))

    def load_encoder(self, state: dict[str, Tensor], where: str) -> None:
        """Start from another run's encoder weights (into the EMA copy too); the architectures
        must match exactly, or a :class:`ConfigError` names the first difference."""
        own = self.encoder().state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or mismatched:
            if mismatched:
                key = mismatched[0]
                detail = f"{key} is {tuple(state[key].shape)} there, {tuple(own[key].shape)} here"
            else:
                detail = f"{'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]}"
            raise ConfigError(
                "model.init_from",
                f"{where}: its encoder does not fit this model ({detail}); give model.name and model.kwargs "
                "as in the run it comes from",
            )
        self.encoder().load_state_dict(state)
        if self.ema is not None:
            getattr(self.ema.module, self.encoder_attribute).load_state_dict(state)

    def features(self, x: Tensor) -> Tensor:
        """The encoder's pooled features ``(B, F)`` (images after the evaluation transforms)."""
        net = self.inference_net()
        return cast(Tensor, getattr(net, self.encoder_attribute)(self._prepare(x)))

    def train(self, mode: bool = True) -> Task:
        """A frozen encoder stays in evaluation mode (its BatchNorm statistics do not move)."""
        super().train(mode)
        if self.frozen:
            self.encoder().eval()
        return self

    def inference_net(self) -> Any:
        """The network that predicts: the EMA of the weights in evaluation, where there is one."""
        return self.ema.module if (self.ema is not None and not self.training) else self.net

    def forward(self, x: Tensor) -> Tensor:
        return self.inference_net()(self._prepare(x))

    def _prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.get("channels_last") else x

    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Images (after the evaluation transforms) -> predictions."""
        return self.decode(self(x))

    def training_loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        """Loss of one training batch (the training network, never the EMA)."""
        return self.loss(self.net(self._prepare(batch["image"])), batch)

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def configure_optimizers(self, total_steps: int) -> Any:
        return build_optimization(self.net, self.cfg, total_steps, self.monitor, self.encoder_attribute)


def class_labels(source: Any, class_names: list[str], where: str) -> np.ndarray:
    """An image source's labels in the order of ``class_names`` (names matched by their
    canonical form: 'non_lens' and 'nonlenses' are one class); a class outside it is an error."""
    from deeplense.data.vocabulary import canonical_class

    canonical = [canonical_class(c) for c in class_names]
    missing = [c for c in source.class_names if canonical_class(c) not in canonical]
    if missing:
        raise ConfigError("data", f"{where}: class {missing[0]!r} is not one the model predicts ({class_names})")
    mapping = np.array([canonical.index(canonical_class(c)) for c in source.class_names])
    return np.asarray(mapping[source.labels], dtype=np.int64)


def task_state_dict(state: dict[str, Tensor], task: Task) -> dict[str, Tensor]:
    """A Lightning checkpoint's ``state_dict`` as ``task``'s own: the ``task.`` prefix is removed;
    checkpoints written before tasks existed (no prefix) keep only the keys this task has."""
    if any(k.startswith("task.") for k in state):
        return {k.removeprefix("task."): v for k, v in state.items() if k.startswith("task.")}
    own = task.state_dict()
    return {k: v for k, v in state.items() if k in own}
