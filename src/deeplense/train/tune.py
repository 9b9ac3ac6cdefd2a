"""Hyper-parameter search with Optuna over ranges given in the config's ``tune.space``.

    tune:
      trials: 20
      space:
        train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
        train.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}
        model.kwargs.widths: {choices: [[16, 32, 64], [16, 32, 64, 128]]}

Each trial is a full training run (``OUT/trials/trial-N``) with its overrides; the study lives in
an SQLite database (``OUT/optuna.db`` by default), so an interrupted search continues where it
stopped; bad trials are pruned (median rule) after each validation epoch.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from deeplense.core.config import ConfigError, apply_overrides, dump_yaml
from deeplense.core.locks import locked

__all__ = ["tune"]


def _suggest(trial, key: str, spec: dict[str, Any]):
    if not isinstance(spec, dict):
        raise ConfigError(f"tune.space.{key}", "expected {low, high[, log, int]} or {choices: [...]}")
    if "choices" in spec:
        choices = list(spec["choices"])
        index = trial.suggest_categorical(key, list(range(len(choices))))  # any YAML value, by position
        return choices[index]
    if not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log", "int", "step"}:
        raise ConfigError(f"tune.space.{key}", "expected {low, high[, log, int, step]} or {choices: [...]}")
    if spec.get("int"):
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def _set(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set a dotted key whose value may be any YAML structure (lists included)."""
    out = apply_overrides(config, [f"{key}=null"])  # checks that the key exists
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return out


def tune(config: dict[str, Any], out: str | Path, trials: int | None = None) -> dict[str, Any]:
    """Run (or continue) a study; writes ``best_config.yaml`` and ``trials.csv`` into ``out``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        return _tune_locked(config, out, trials)


def _fail_interrupted(study: Any, storage: Any, out: Path) -> list[int]:
    """Trials left RUNNING by a killed study (this process holds the study's lock, so none is
    really running) are marked FAIL, and their run folders renamed ``trial-N.interrupted``."""
    import optuna

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        folder = out / "trials" / f"trial-{trial.number}"
        if folder.exists():
            folder.rename(folder.with_name(folder.name + ".interrupted"))
        failed.append(trial.number)
    return failed


def _tune_locked(config: dict[str, Any], out: Path, trials: int | None) -> dict[str, Any]:
    import lightning as L
    import optuna

    from deeplense.train.config import monitor_of, resolve_config
    from deeplense.train.run import train

    settings = config["tune"]
    space = settings["space"]
    if not space:
        raise ConfigError(
            "tune.space", "give at least one range, e.g. train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    metric, mode = monitor_of(config["task"])
    metric = settings["metric"] or metric
    if settings["metric"]:
        mode = "min" if "loss" in metric or "mae" in metric else "max"
    storage = settings["storage"] or f"sqlite:///{(out / 'optuna.db').resolve()}"
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if settings["pruning"]
        else optuna.pruners.NopPruner()
    )
    storage = optuna.storages.get_storage(storage)
    study = optuna.create_study(
        study_name="deeplense",
        storage=storage,
        direction="maximize" if mode == "max" else "minimize",
        load_if_exists=True,
        pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=int(config["train"]["seed"])),
    )

    interrupted = _fail_interrupted(study, storage, out)

    class Pruning(L.Callback):
        def __init__(self, trial):
            self.trial = trial

        def on_validation_end(self, trainer, pl_module):
            value = trainer.callback_metrics.get(metric)
            if value is None:
                return
            self.trial.report(float(value), trainer.current_epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: {metric} = {float(value):.4g}")

    def objective(trial) -> float:
        trial_config = copy.deepcopy(config)
        for key, spec in space.items():
            trial_config = _set(trial_config, key, _suggest(trial, key, spec))
        trial_config["run"] = {"dir": str(out / "trials"), "name": f"trial-{trial.number}"}
        if settings["epochs"]:
            trial_config["train"]["epochs"] = int(settings["epochs"])
        trial_config = resolve_config(trial_config)
        summary = train(trial_config, callbacks=[Pruning(trial)])
        if summary.get("best_val") is None:
            raise optuna.TrialPruned("no validation metric")
        return float(summary["best_val"])

    done = len([t for t in study.trials if t.state.is_finished()])
    remaining = max(0, int(trials or settings["trials"]) - done)
    study.optimize(objective, n_trials=remaining, catch=())
    best = study.best_trial
    best_config = copy.deepcopy(config)
    for key, spec in space.items():
        value = best.params[key]
        best_config = _set(best_config, key, spec["choices"][value] if "choices" in spec else value)
    best_config["run"] = {"dir": config["run"]["dir"], "name": None}
    dump_yaml(best_config, out / "best_config.yaml")
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    result = {
        "best_trial": best.number,
        "best_value": best.value,
        "metric": metric,
        "params": {k: (space[k]["choices"][v] if "choices" in space[k] else v) for k, v in best.params.items()},
        "trials": len(study.trials),
        "pruned": len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]),
        "interrupted_trials_marked_failed": interrupted,
    }
    (out / "best.json").write_text(json.dumps(result, indent=2))
    return result
