"""The training loader's per-sample image path as it was before the loader was profiled: the bench's baseline.

    python bench/legacy_loader.py RECIPE.yaml [key=value ...]   # train/finetune.py with the old per-sample path

Before: `with Image.open(...) as image: image.convert("RGB")` (a copy even for RGB files), then
`torch.random.fork_rng(devices=[])` + `torch.manual_seed(seed)` around the transform. torch.manual_seed also seeds
every accelerator backend, and each of those (CUDA, XPU, MTIA) formats a Python stack trace when it is not
initialised: about 1 ms a sample. Both give the same pixels as `train.data.decode_rgb` / `seeded_call`.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import torch
from PIL import Image

import train.data


def legacy_decode_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def legacy_seeded_call(fn: Callable[[Image.Image], torch.Tensor], image: Image.Image, seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(image)


def use_legacy_loader() -> None:
    """Puts the old per-sample path into train.data (forked DataLoader workers inherit it)."""
    train.data.decode_rgb = legacy_decode_rgb
    train.data.seeded_call = legacy_seeded_call


if __name__ == "__main__":
    use_legacy_loader()
    from train.finetune import cli

    sys.exit(cli(sys.argv[1:]))
