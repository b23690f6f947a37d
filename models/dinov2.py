"""DINOv2 (Oquab et al., 2023) through transformers: the vision-only encoder MMVP contrasts CLIP with.

    encoder = load_dinov2("facebook/dinov2-large")        # the Hugging Face cache (HF_HUB_OFFLINE) or a local folder
    encoder = load_dinov2("tiny-dinov2")                  # a tiny random stand-in built here, for tests and the demo
    features = encoder.embed(images)                     # (N, width): the CLS token after the final norm, as MMVP

MMVP (Tong et al., 2024) mines "CLIP-blind" pairs by the cosine of CLIP's and DINOv2's image embeddings; DINOv2's is
its pooler output (the CLS token after the last LayerNorm). The model's own image processor (resize 256, centre crop
224, ImageNet mean/std for the real ones) prepares the images, as transformers loads it with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.cache import build_once, resolve_cache_dir
from models.open_clip_models import WeightsUnavailableError

TINY_DINOV2 = "tiny-dinov2"
INIT_SEED = 0
BUILD_VERSION = 1
TINY_ARCH = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "image_size": 64,
    "patch_size": 8,
}
TINY_PROCESSOR = {"size": {"shortest_edge": 72}, "crop_size": {"height": 64, "width": 64}}


class Dinov2Encoder:
    """A DINOv2 model and its image processor; `embed` gives each image's CLS token (pooler output)."""

    def __init__(self, model: Any, processor: Any, source: str):
        self.model, self.processor, self.source = model.eval(), processor, source

    @torch.no_grad()
    def embed(self, images: Sequence[Any]) -> torch.Tensor:
        inputs = self.processor(images=list(images), return_tensors="pt")
        device = next(self.model.parameters()).device
        return self.model(pixel_values=inputs["pixel_values"].to(device)).pooler_output.float()


def tiny_dinov2_folder(cache_dir: Path | None = None) -> Path:
    """`<cache>/tiny-dinov2/`: a seeded random Dinov2Model and its processor, saved as a Hugging Face folder."""
    stamp = {"version": BUILD_VERSION, "seed": INIT_SEED, "dinov2": TINY_ARCH, "processor": TINY_PROCESSOR}
    return build_once(resolve_cache_dir(cache_dir) / TINY_DINOV2, _write_tiny, stamp)


def _write_tiny(folder: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = Dinov2Model(Dinov2Config(**TINY_ARCH))
    model.save_pretrained(folder)
    BitImageProcessor(
        do_convert_rgb=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        resample=3,  # bicubic, as the real DINOv2 processors
        **TINY_PROCESSOR,
    ).save_pretrained(folder)


def load_dinov2(source: str, cache_dir: Path | None = None) -> Dinov2Encoder:
    """`source`: a Hugging Face name (read from the local cache only), a local folder, or "tiny-dinov2"."""
    from transformers import AutoImageProcessor, Dinov2Model

    where = str(tiny_dinov2_folder(cache_dir)) if source == TINY_DINOV2 else source
    try:
        model = Dinov2Model.from_pretrained(where, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(where, local_files_only=True)
    except OSError as err:
        raise WeightsUnavailableError(
            f"DINOv2 {source!r} is neither a local folder nor in the Hugging Face cache, and cannot be downloaded "
            f"here: on a connected machine `huggingface-cli download {source}`, copy the cache (HF_HOME) here, or "
            f"pass the folder it downloads to. Cause: {err}"
        ) from err
    return Dinov2Encoder(model, processor, source)
