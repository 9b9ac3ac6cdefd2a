"""Package a trained run as a shipped pretrained model with its model card
(``deeplense models package``; the folder format is :mod:`deeplense.models.hub`).

The card states the exact commands, the test-split metric with its 95 % bootstrap interval, and a
reproduction check: the same metric on a small set that anyone regenerates from its preset and
seed (``check``), which the test suite recomputes for every shipped model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deeplense.core.run_dir import run_dir_of
from deeplense.evaluate.run import evaluation_data
from deeplense.infer import Predictor, load_predictor
from deeplense.infer.conform import scale_free
from deeplense.models.hub import PRETRAINED_DIR, write_pretrained

__all__ = ["headline_metric", "simulate_check_set", "measure_check", "package_run"]


def headline_metric(model: Predictor, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """The task's ranking metric with a 95 % bootstrap interval (1000 resamples, seed 0)."""
    task = model.task
    metrics = task.metrics(pred, truth, n_boot=1000)
    for column in task.ranking[0]:
        if f"{column}_ci" in metrics:
            low, high = metrics[f"{column}_ci"]
            return {"name": column, "value": float(metrics[column]), "interval": [float(low), float(high)]}
    from scipy.stats import bootstrap

    target = model.contract.output.targets[0]
    errors = np.abs(pred["mean"][:, 0].astype(np.float64) - truth["target"][:, 0])
    rng = np.random.default_rng(0)
    ci = bootstrap((errors,), np.mean, n_resamples=1000, method="percentile", rng=rng).confidence_interval
    return {"name": f"mae {target}", "value": float(errors.mean()), "interval": [float(ci.low), float(ci.high)]}


def simulate_check_set(check: dict[str, Any], out: Path) -> Path:
    """Regenerate a card's check set: ``deeplense simulate --preset P --n-per-class N --seed S
    [--class-weights ...] --split test=1.0``."""
    from deeplense.sim.presets import load_preset
    from deeplense.sim.simulator import Simulator
    from deeplense.sim.writer import DatasetPlan, write_dataset

    sim_config = load_preset(check["preset"])
    sim = Simulator(sim_config)
    given = check.get("class_weights")
    weights = [int(given[c]) for c in sim.class_names] if given else list(sim.class_weights)
    plan = DatasetPlan(
        n_per_class=int(check["n_per_class"]),
        n_classes=len(sim.class_names),
        seed=int(check["seed"]),
        splits={"test": 1.0},
        class_weights=weights if any(w != 1 for w in weights) else None,
    )
    write_dataset(out, sim_config, plan, workers=1)
    return out


def measure_check(model: Predictor, check: dict[str, Any]) -> dict[str, Any]:
    """The headline metric of ``model`` on its card's regenerated check set."""
    with tempfile.TemporaryDirectory(prefix="deeplense-check-") as tmp:
        data = simulate_check_set(check, Path(tmp) / "check")
        got = evaluation_data(model, Path(tmp), data, None)
        pred = model.predict(got["images"])
        return {**headline_metric(model, pred, got["truth"]), "n": int(len(got["images"]))}


def _command_line(check: dict[str, Any]) -> str:
    weights = check.get("class_weights")
    extra = f" --class-weights {','.join(f'{k}={v}' for k, v in weights.items())}" if weights else ""
    return (
        f"deeplense simulate --preset {check['preset']} --n-per-class {check['n_per_class']} --seed {check['seed']}"
        f"{extra} --split test=1.0 --out check"
    )


def _card(name: str, model: Predictor, config: dict[str, Any]) -> str:
    spec, test, check = model.contract.input, config["test"], config["check"]
    out = model.contract.output
    labels = f"classes {out.class_names}" if out.class_names else f"targets {out.targets} in {out.target_units}"
    n_params = sum(p.numel() for p in model.task.net.parameters())

    def row(m: dict[str, Any]) -> str:
        return f"{m['value']:.4f} (95 % interval {m['interval'][0]:.4f}-{m['interval'][1]:.4f}, n = {m['n']})"

    return f"""# {name}

{config["summary"]}

- Task: {model.contract.task}; {labels}.
- Network: `{model.contract.model.name}` {model.contract.model.kwargs} ({n_params:,} parameters), trained
  from random initialisation; weights: `model.safetensors` (the task's state, EMA included).
- deeplense {model.version}.

## Training (exact commands)

```
{config["commands"]}
```

## Image contract (what the inputs must be)

- Bands: {spec.bands} ({spec.in_chans}), pixel scale {spec.pixel_scale_arcsec} arcsec, {spec.raw_size}x{spec.raw_size}
  pixels, pixel units {spec.pixel_units}.
- Transforms deeplense applies before the network: {[t for t in spec.transforms if t.get("name") != "dihedral"]}.
- `deeplense predict` checks every input against this: other pixel scales are resampled (flux
  conserved), other sizes cut or padded; a band-count mismatch is refused, and so are other
  pixel units {"never (this model normalises each image first)" if scale_free(spec.transforms) else "(this model reads absolute pixel values)"}.

## Test metrics

| set | {test["name"]} |
|---|---|
| held-out test split of the training data | {row(test)} |
| check set (regenerated by the test suite) | {row(check)} |

Check set: `{_command_line(config["check_recipe"])}`; `tests/test_pretrained.py` recomputes it.

## Intended use

{config["intended_use"]}

## Known limits

{config["limits"]}
"""


def package_run(
    run: str | Path,
    name: str,
    *,
    summary: str,
    commands: str,
    check: dict[str, Any],
    intended_use: str,
    limits: str,
    root: Path = PRETRAINED_DIR,
) -> Path:
    """Evaluate ``run`` on its test split and on the check set, then write its shipped folder."""
    model = load_predictor(run)
    got = evaluation_data(model, run_dir_of(run), None, "test")
    test = {**headline_metric(model, model.predict(got["images"]), got["truth"]), "n": int(len(got["images"]))}
    out = model.contract.output
    config = {
        "name": name,
        "summary": summary,
        "architecture": model.contract.model.name,
        "model_kwargs": model.contract.model.kwargs,
        "label_names": out.class_names or out.targets,
        "contract": model.contract.to_dict(),
        "train": dict(model.task.cfg),
        "commands": commands,
        "intended_use": intended_use,
        "limits": limits,
        "test": test,
        "check_recipe": check,
        "check": measure_check(model, check),
    }
    return write_pretrained(name, config, model.task.state_dict(), _card(name, model, config), root)
