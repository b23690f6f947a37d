"""tiny-clip and tiny-siglip: CPU-sized stand-ins built from the same open_clip classes as the paper's models.

Each is an open_clip model folder in the cache (`open_clip_config.json` + `open_clip_model.safetensors`, plus the
tokenizer for SigLIP), the layout of an open_clip hub repo, and is loaded with open_clip's own
`create_model_and_transforms("local-dir:<folder>")` and `get_tokenizer(...)`: the code path of the real models.

- tiny-clip mirrors ViT-L-14-336-quickgelu: open_clip `CLIP`, native VisionTransformer + text transformer,
  QuickGELU, OpenAI mean/std, open_clip's SimpleTokenizer (its BPE vocabulary ships with open_clip).
- tiny-siglip mirrors ViT-L-16-SigLIP-384: open_clip `CustomTextCLIP`, a timm SigLIP ViT trunk (attention-pool
  head, no projection), a bidirectional text transformer pooled at the last token, SigLIP's logit scale/bias
  init, 0.5 mean/std, and an HF tokenizer trained here (SigLIP's own cannot be downloaded).

Weights are a seeded random init, written once, so every process and every run starts from the same model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.cache import build_once
from models.open_clip_models import OpenClipParts

INIT_SEED = 0
WEIGHTS_FILE = "open_clip_model.safetensors"  # the name open_clip looks for first in a local-dir folder
BUILD_VERSION = 1  # bump when a change here must invalidate cached folders

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyOpenClipSpec:
    name: str
    mirrors: str  # the paper model whose recipe it copies
    model_cfg: dict[str, Any]  # open_clip model config, as in open_clip/model_configs/*.json
    preprocess_cfg: dict[str, Any]
    trains_tokenizer: bool = False  # True: an HF tokenizer trained here is saved in the folder


TINY_CLIP = TinyOpenClipSpec(
    name="tiny-clip",
    mirrors="ViT-L-14-336-quickgelu",
    model_cfg={
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
    },
    preprocess_cfg={"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
)

TINY_SIGLIP = TinyOpenClipSpec(
    name="tiny-siglip",
    mirrors="ViT-L-16-SigLIP-384",
    model_cfg={
        "embed_dim": 64,  # = the timm trunk's width: no projection after the attention pool, as SigLIP
        "init_logit_scale": math.log(10),  # SigLIP's init (open_clip's training script sets the same)
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 64,
            "timm_model_name": "clipablate_vit_tiny_patch8_siglip_64",  # models.tiny_timm registers it
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": None,  # the trained tokenizer's size, filled in at build
            "hf_tokenizer_name": "tiny-siglip",  # with local-dir: open_clip loads the tokenizer from the folder
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": 64,
            "heads": 4,
            "layers": 4,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        },
    },
    preprocess_cfg={
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    },
    trains_tokenizer=True,
)

TINY_OPEN_CLIP = {spec.name: spec for spec in (TINY_CLIP, TINY_SIGLIP)}


def tiny_open_clip_folder(spec: TinyOpenClipSpec, cache_dir: Path) -> Path:
    """The spec's open_clip folder in the cache, built on first use."""
    stamp = {
        "version": BUILD_VERSION,
        "seed": INIT_SEED,
        "model_cfg": spec.model_cfg,
        "preprocess": spec.preprocess_cfg,
    }
    return build_once(cache_dir / spec.name, lambda folder: _write_folder(spec, folder), stamp)


def load_tiny_open_clip(
    spec: TinyOpenClipSpec, pretrained: str, cache_dir: Path, model_kwargs: dict[str, Any] | None = None
) -> OpenClipParts:
    """open_clip's model, transforms and tokenizer from the spec's folder; `pretrained` = a checkpoint to load over it;
    `model_kwargs` override the folder's model config (e.g. quick_gelu=False)."""
    import open_clip

    from models.tiny_timm import register_tiny_siglip_vit

    register_tiny_siglip_vit()
    source = f"local-dir:{tiny_open_clip_folder(spec, cache_dir)}"
    model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(source, **(model_kwargs or {}))
    if pretrained:
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"model.pretrained={pretrained}: no such file (a tiny preset takes a local file)")
        open_clip.load_checkpoint(model, pretrained)  # open_clip's own loading, strict
    return OpenClipParts(model, preprocess_train, preprocess_eval, open_clip.get_tokenizer(source))


def _write_folder(spec: TinyOpenClipSpec, folder: Path) -> None:
    import open_clip
    import torch

    from models.local_tokenizers import train_sentencepiece_style_tokenizer
    from models.safetensors_file import save_safetensors
    from models.tiny_timm import register_tiny_siglip_vit

    register_tiny_siglip_vit()
    model_cfg = json.loads(json.dumps(spec.model_cfg))
    if spec.trains_tokenizer:
        tokenizer = train_sentencepiece_style_tokenizer()
        tokenizer.save_pretrained(folder)
        model_cfg["text_cfg"]["vocab_size"] = len(tokenizer)
    config = {"model_cfg": model_cfg, "preprocess_cfg": spec.preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's random stream
        torch.manual_seed(INIT_SEED)
        model = open_clip.create_model(f"local-dir:{folder}")
    save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
