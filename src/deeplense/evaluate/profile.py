"""``profile_model``: parameters, training and inference throughput and peak memory of a model."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

__all__ = ["profile_model"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def profile_model(
    name: str,
    img_size: int = 64,
    bands: int = 1,
    batch: int = 64,
    classes: int = 3,
    device: str = "cpu",
    steps: int = 5,
    kwargs: dict | None = None,
) -> dict[str, Any]:
    """Median-timed training steps (forward, backward, AdamW step; channels_last; bf16 autocast on
    CUDA) and inference batches on random data of the given shape."""
    from deeplense.models import build_network, channels_last

    dev = torch.device(device)
    net = build_network({"name": name, "kwargs": kwargs or {}}, "linear", classes, bands, img_size).to(dev)
    net = channels_last(net)
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(batch, bands, img_size, img_size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=dev)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _peak_rss_mb()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    train_times = []
    net.train()
    for k in range(steps + 1):
        sync()
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if k:
            train_times.append(time.perf_counter() - start)
    infer_times = []
    net.eval()
    with torch.no_grad():
        for k in range(steps + 1):
            sync()
            start = time.perf_counter()
            with autocast:
                net(x)
            sync()
            if k:
                infer_times.append(time.perf_counter() - start)
    median = lambda v: sorted(v)[len(v) // 2]
    result = {
        "model": name,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "img_size": img_size,
        "bands": bands,
        "batch": batch,
        "parameters": params,
        "train_images_per_s": batch / median(train_times),
        "inference_images_per_s": batch / median(infer_times),
    }
    if dev.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result["peak_memory_mb"] = _peak_rss_mb()
        result["peak_memory_note"] = f"process peak RSS (it was {rss_before:.0f} MB before the model ran)"
    return result
