"""The simulator on a CUDA device against the CPU (run with ``-m gpu`` on a machine with one).

On CUDA the torch twins of the compiled CPU kernels run, so these check the twins where they are
the production path: the same scenes must come out to float rounding, with the same noise.
"""

import pytest
import torch

from deeplense.sim import Simulator, load_preset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _pair(preset: str, size: int = 48) -> tuple[Simulator, Simulator]:
    config = load_preset(preset)
    config["instrument"]["size"] = size
    return Simulator(config), Simulator(config, device="cuda")


@pytest.mark.parametrize("preset", ["model_i", "cdm_wdm_sidm"])
def test_cuda_renders_the_cpu_images(preset):
    cpu, cuda = _pair(preset)
    samples = [cpu.sample(31 + i, i % len(cpu.class_names)) for i in range(6)]
    with torch.no_grad():
        expected = cpu.render(samples, noise=False)
        got = cuda.render(samples, noise=False)
    assert got.device.type == "cuda"
    peak = expected.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert ((got.cpu() - expected).abs() / peak).max() < 1e-5


def test_cuda_noise_is_the_cpu_noise_to_rounding():
    """Scheme-2 noise: the same draws, so a pixel differs only where rounding flips a variate."""
    cpu, cuda = _pair("model_i")
    samples = [cpu.sample(77 + i, i % 3) for i in range(6)]
    with torch.no_grad():
        expected = cpu.render(samples)
        got = cuda.render(samples).cpu()
    same = torch.isclose(got, expected, rtol=1e-5, atol=1e-6)
    assert same.float().mean() > 0.999


def test_cuda_float64_renders_the_cpu_float64_images():
    """In float64 the two devices differ only by their libraries' last-bit rounding."""
    config = load_preset("model_i")
    config["instrument"]["size"] = 32
    cpu, cuda = Simulator(config, dtype=torch.float64), Simulator(config, dtype=torch.float64, device="cuda")
    samples = [cpu.sample(5 + i, i % 3) for i in range(3)]
    with torch.no_grad():
        expected = cpu.render(samples, noise=False)
        got = cuda.render(samples, noise=False).cpu()
    assert ((got - expected).abs().max() / expected.abs().max()) < 1e-10
