"""The architecture's rules, checked on the source: task names are branched on only inside their
task modules, and the inference layer loads and predicts without Lightning."""

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "deeplense"
BRANCH = re.compile(r"""(==|!=|\bin\b|\bif\b|\belif\b|\bcase\b).*["'](classification|regression)["']""")


def test_task_names_are_branched_on_only_inside_their_task_modules():
    found = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "tasks" and path.stem in ("classification", "regression"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line.split("#")[0]):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_branch_pattern_would_catch_a_branch():
    assert BRANCH.search('if config["task"] == "classification":')
    assert BRANCH.search("keys = ('auc',) if task == 'regression' else ()")
    assert not BRANCH.search('"task": "classification",')


def test_predicting_from_a_checkpoint_never_imports_lightning():
    legacy = Path(__file__).parent / "fixtures" / "legacy"
    code = (
        "import sys, numpy as np, deeplense\n"
        f"p = deeplense.load_predictor({str(legacy / 'runs' / 'classification')!r})\n"
        f"x = deeplense.open_dataset({str(legacy / 'dataset')!r}).images(np.arange(4))\n"
        "assert p.predict(x)['probs'].shape == (4, 3)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_one_deflector_registry_serves_lenses_and_subhalos():
    from deeplense.sim.lenses import LENSES
    from deeplense.sim.substructure import PROFILE_COLUMNS

    for profile, columns in PROFILE_COLUMNS.items():
        lens = LENSES.get(profile)
        assert columns and set(columns) <= {p.name for p in lens.params}, profile


def test_every_family_is_a_registry():
    from deeplense.core.registry import Registry
    from deeplense.data.layouts import LAYOUTS
    from deeplense.data.transforms import TRANSFORMS
    from deeplense.evaluate.plots import FIGURES
    from deeplense.models import HEADS, MODELS
    from deeplense.sim.instruments import NOISE_MODELS
    from deeplense.sim.lenses import LENSES
    from deeplense.sim.priors import PRIORS
    from deeplense.sim.psfs import PSFS
    from deeplense.sim.sources import SOURCES
    from deeplense.sim.substructure import POPULATIONS
    from deeplense.tasks import TASKS
    from deeplense.tasks.optim import OPTIMIZERS, SCHEDULERS
    from deeplense.train.loggers import LOGGERS

    families = [TRANSFORMS, FIGURES, HEADS, MODELS, NOISE_MODELS, LENSES, PRIORS, PSFS, SOURCES, POPULATIONS]
    families += [TASKS, OPTIMIZERS, SCHEDULERS, LOGGERS, LAYOUTS]
    assert all(isinstance(f, Registry) and f.names() for f in families)
    assert {"none", "gaussian", "pixel"} <= set(PSFS.names()) and "truncated_normal" in PRIORS.names()
