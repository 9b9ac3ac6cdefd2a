"""model_i against an independent lenstronomy implementation of the DeepLense recipe (PHYSICS.md 1, 4).

The reference below follows the text of PHYSICS.md section 1 with lenstronomy and numpy only; it
shares no code with deeplense. Per-image pixel statistics of both must agree within sampling error.
"""

import math

import numpy as np
import pytest
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import image_util, simulation_util
from scipy import stats

from deeplense.core.seeding import image_seed
from deeplense.sim import Simulator, load_preset

N_PER_CLASS = 60
SIZE = 150
THETA_MAIN = 1.2814906  # luminosity-distance Einstein radius of 1e12 M_sun, verified in PHYSICS.md
THETA_PER_SQRT_MASS = THETA_MAIN / math.sqrt(1e12)


def reference_image(kind, rng):
    data = ImageData(**simulation_util.data_configure_simple(SIZE, 0.05, 1.0, 0.01))
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.087, truncation=4)
    lenses = ["SIE", "SHEAR"]
    kwargs = [dict(theta_E=THETA_MAIN, e1=0.1, e2=0, center_x=0, center_y=0), dict(gamma1=0.05, gamma2=0)]
    if kind == "cdm":
        u = rng.uniform(size=25)
        masses = (1e6**0.1 + u * (1e10**0.1 - 1e6**0.1)) ** 10  # dN/dm ~ m^-0.9
        r, phi = rng.uniform(0.25, 2.0, 25), rng.uniform(0, 2 * math.pi, 25)
        for m, rr, pp in zip(masses, r, phi):
            lenses.append("POINT_MASS")
            kwargs.append(
                dict(theta_E=THETA_PER_SQRT_MASS * math.sqrt(m), center_x=rr * math.cos(pp), center_y=rr * math.sin(pp))
            )
    elif kind == "axion":
        m_a = 10 ** rng.uniform(-24, -22)
        half, angle = 0.03 * 1e-22 / m_a, rng.uniform(0, 2 * math.pi)
        for t in np.linspace(-half, half, 100):
            lenses.append("POINT_MASS")
            kwargs.append(
                dict(
                    theta_E=THETA_PER_SQRT_MASS * math.sqrt(3e8),
                    center_x=t * math.cos(angle),
                    center_y=t * math.sin(angle),
                )
            )
    source = dict(
        amp=20,
        R_sersic=0.25,
        n_sersic=1,
        e1=-0.1,
        e2=0.1,
        center_x=rng.uniform(-0.35, 0.35),
        center_y=rng.uniform(-0.35, 0.35),
    )
    model = ImageModel(data, psf, lens_model_class=LensModel(lenses), source_model_class=LightModel(["SERSIC_ELLIPSE"]))
    image = model.image(kwargs_lens=kwargs, kwargs_source=[source])
    t = 10 ** rng.uniform(3, 3.5)
    np.random.seed(int(rng.integers(2**31)))  # lenstronomy's noise helpers use the global generator
    noisy = image + image_util.add_poisson(image, exp_time=t) + image_util.add_background(image, sigma_bkd=0.01)
    return rng.poisson(np.clip(t * noisy, 0, None)).astype(float)


def summaries(images):
    flat = images.reshape(len(images), -1)
    return {
        "mean": flat.mean(1),
        "max": flat.max(1),
        "p50": np.percentile(flat, 50, axis=1),
        "p99": np.percentile(flat, 99, axis=1),
        "std": flat.std(1),
    }


@pytest.mark.parametrize("label,kind", [(0, "no_sub"), (1, "cdm"), (2, "axion")])
def test_model_i_pixel_statistics_match_independent_lenstronomy_recipe(label, kind):
    rng = np.random.default_rng(100 + label)
    ref = np.stack([reference_image(kind, rng) for _ in range(N_PER_CLASS)])
    sim = Simulator(load_preset("model_i"))
    ours, _ = sim.simulate([image_seed(42, i) for i in range(N_PER_CLASS)], [label] * N_PER_CLASS)
    assert np.array_equal(ours, np.round(ours))  # integer counts, as in the released files
    a, b = summaries(ours[:, 0]), summaries(ref)
    for name in a:
        assert stats.ks_2samp(a[name], b[name]).pvalue > 1e-3, name
    # the class-mean image agrees pixel by pixel within its standard error
    diff = ours[:, 0].mean(0) - ref.mean(0)
    se = np.sqrt(ours[:, 0].var(0) / N_PER_CLASS + ref.var(0) / N_PER_CLASS) + 1e-9
    assert np.mean(np.abs(diff / se) > 3) < 0.01
