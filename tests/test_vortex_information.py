"""The information analysis behind the m_a regression results (analysis/model_i_vortex_fisher.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "analysis" / "model_i_vortex_fisher.py"


@pytest.fixture(scope="module")
def fisher():
    spec = importlib.util.spec_from_file_location("model_i_vortex_fisher", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cramer_rao_error_grows_as_the_vortex_shrinks_inside_the_ring(fisher):
    model, scene = fisher.image_model(), (0.7, 0.1, -0.2)  # phi (rad), source centre (arcsec)
    sigma = {
        m: fisher.sigma_log10_m_a(model, np.array([m, *scene]), 1000.0, binned=True) for m in (-23.5, -23.0, -22.5)
    }
    # a 0.95" line is measured to a few hundredths of a dex; a 0.09" line (quadrupole ~ L^2) not at all
    assert sigma[-23.5] < 0.05 < sigma[-23.0] < 0.5 < 1.0 < sigma[-22.5]
    # quadrupole regime: the error of A = 10^(-2 (m + 23)) is about constant, so sigma(m) grows as 10^(2 m)
    assert sigma[-22.5] / sigma[-23.0] == pytest.approx(10.0, rel=0.3)


def test_bayes_mae_runs_from_perfect_to_the_constant_predictor(fisher):
    rng = np.random.default_rng(0)
    sharp, _ = fisher.bayes_mae(1e-3, 2000, rng)
    blind, per_bin = fisher.bayes_mae(1e6, 2000, rng)
    assert sharp < 0.05
    assert blind == pytest.approx(0.5, abs=0.03)  # the prior median's MAE on U(-24, -22)
    assert per_bin[0] > per_bin[3] < per_bin[-1]
