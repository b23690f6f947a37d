"""The paper's models as open_clip loads them, and loading any open_clip model with a clear offline error.

One table names exactly what each paper preset loads; everything goes through open_clip's own
`create_model_and_transforms` / `get_tokenizer`, so model, transforms and tokenizer always belong together.
A weights file (or folder) of a preset gets the preprocessing of the preset's tag, as if the tag had been named;
`pretrained: random` builds the architecture at full size with a seeded random init and no download.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class OpenClipPreset:
    open_clip_name: str  # an open_clip architecture (open_clip.list_models())
    pretrained: str  # its default open_clip pretrained tag
    about: str


# What the paper evaluates and finetunes (Sections 4.2-4.3), under open_clip 3.3 names.
PAPER_MODELS: dict[str, OpenClipPreset] = {
    "clip-vit-l14-336": OpenClipPreset(
        "ViT-L-14-336-quickgelu", "openai", "CLIP ViT-L/14 at 336 px, OpenAI weights, QuickGELU as trained"
    ),
    "siglip-vit-l16-384": OpenClipPreset(
        "ViT-L-16-SigLIP-384", "webli", "SigLIP ViT-L/16 at 384 px, WebLI weights, its own (HF) tokenizer"
    ),
}
SCHEMAS = ("hf-hub:", "local-dir:")  # open_clip names that carry their own weights; `pretrained` must stay empty
RANDOM = "random"  # model.pretrained value: the architecture at full size with a seeded random init, no download
RANDOM_INIT_SEED = 0
# open_clip's file names for a model's weights inside a folder (a Hugging Face snapshot or push_to_hf_hub output).
WEIGHTS_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")  # what an open_clip tag sets for its transforms


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights or tokenizer files that are neither local nor in the Hugging Face cache."""


@dataclass
class OpenClipParts:
    """What open_clip returns for one model: the model (CLIP or CustomTextCLIP), its transforms and tokenizer."""

    model: nn.Module
    preprocess_train: Callable[[Any], torch.Tensor]
    preprocess_eval: Callable[[Any], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]  # open_clip's: texts -> (B, context_length) token ids
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a run log should say about this build (stand-ins, ...)


def is_open_clip_name(name: str) -> bool:
    import open_clip

    return name.startswith(SCHEMAS) or name.replace("/", "-") in open_clip.list_models()


def tag_preprocess(open_clip_name: str, tag: str) -> dict[str, Any]:
    """The image preprocessing open_clip applies when `tag` is named: {mean, std, interpolation, resize_mode}.

    open_clip merges a tag's settings into the transforms only when the tag itself is passed as `pretrained`; a
    weights file of the same model would get open_clip's defaults (CLIP's mean/std, resize + center crop).
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(open_clip_name, tag) if tag else {}
    return {key: cfg[key] for key in PREPROCESS_KEYS if cfg.get(key) is not None}


def implied_tag(open_clip_name: str) -> str:
    """The tag whose preprocessing a weights file of this architecture gets: "" unless all its tags agree on it."""
    import open_clip

    if open_clip_name.startswith(SCHEMAS):
        return ""
    tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
    settings = {json.dumps(tag_preprocess(open_clip_name, tag), sort_keys=True) for tag in tags}
    return tags[0] if len(settings) == 1 else ""


def load_open_clip(
    open_clip_name: str,
    pretrained: str,
    *,
    label: str = "",
    tag: str | None = None,
    cache_dir: Path | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> OpenClipParts:
    """open_clip's model, transforms and tokenizer for `open_clip_name` with `pretrained`.

    `pretrained`: an open_clip tag; a weights file or a folder holding one (a Hugging Face snapshot of the model);
    or "random" (full size, seeded random init, no download). A file, folder or "random" gets the transforms of
    `tag` (a preset's own tag; None: the tag all of the architecture's tags agree with), exactly as if the tag had
    been named. The tokenizer is always the model's (open_clip.get_tokenizer), from the folder when it holds one;
    with "random" a tokenizer that needs the hub and is not cached is replaced by a stand-in (see `notes`).
    `label` names the model in errors (the preset or recipe value the user wrote); `cache_dir` holds stand-ins.
    """
    import open_clip

    label = label or open_clip_name
    _check_pretrained(open_clip_name, pretrained, label)
    notes: list[str] = []
    is_tag = bool(pretrained) and bool(open_clip.get_pretrained_cfg(open_clip_name, pretrained))
    weights = _weights_in(pretrained) if pretrained and not is_tag and pretrained != RANDOM else pretrained
    force: dict[str, Any] = {}
    if pretrained and not is_tag:
        tag = implied_tag(open_clip_name) if tag is None else tag
        force = tag_preprocess(open_clip_name, tag)
        if force:
            shown = ", ".join(f"{key} {value}" for key, value in force.items())
            notes.append(f"preprocess: the {tag!r} tag's ({shown}), as when open_clip loads {tag!r}")
        elif not open_clip_name.startswith(SCHEMAS):
            notes.append(f"preprocess: open_clip's defaults (no single tag of {open_clip_name} to take them from)")
    tokenizer = _tokenizer(open_clip_name, pretrained, label, cache_dir, notes)
    model_kwargs = dict(model_kwargs or {})
    if pretrained == RANDOM:
        model_kwargs = {**random_init_kwargs(open_clip_name), **model_kwargs}
    try:
        with _seeded(pretrained == RANDOM):
            model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(
                open_clip_name,
                pretrained=None if pretrained == RANDOM else weights or None,
                image_mean=force.get("mean"),
                image_std=force.get("std"),
                image_interpolation=force.get("interpolation"),
                image_resize_mode=force.get("resize_mode"),
                **model_kwargs,
            )
    except (RuntimeError, OSError) as err:
        if not _is_download_failure(err):
            raise
        raise WeightsUnavailableError(_offline_message(open_clip_name, pretrained, label, err)) from err
    if pretrained == RANDOM:
        notes.insert(0, f"weights: random init (seed {RANDOM_INIT_SEED}) of {open_clip_name}, nothing pretrained")
    parts = OpenClipParts(model, preprocess_train, preprocess_eval, tokenizer, notes=notes)
    parts.info = {"preprocess_tag": pretrained if is_tag else tag if force else ""}
    if weights and weights != pretrained:
        parts.info["weights_file"] = weights
    return parts


def random_init_kwargs(open_clip_name: str) -> dict[str, Any]:
    """A random SigLIP starts where open_clip's training script starts one (logit scale ln 10, bias -10); its model
    config alone leaves the scale at CLIP's ln(1/0.07)."""
    import open_clip

    config = open_clip.get_model_config(open_clip_name) or {}
    if config.get("init_logit_bias") is None:
        return {}
    return {"init_logit_scale": math.log(10), "init_logit_bias": config["init_logit_bias"]}


@contextlib.contextmanager
def _seeded(enabled: bool) -> Iterator[None]:
    """A fixed random stream inside (every process builds the same random model), the caller's restored after."""
    if not enabled:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


def _weights_in(pretrained: str) -> str:
    """`pretrained` itself for a file; for a folder, its open_clip weights file."""
    path = Path(pretrained)
    if not path.is_dir():
        return pretrained
    for name in WEIGHTS_FILES:
        if (path / name).is_file():
            return str(path / name)
    raise FileNotFoundError(
        f"model.pretrained={pretrained} is a folder without open_clip weights (one of {', '.join(WEIGHTS_FILES)}); "
        f"it holds {sorted(p.name for p in path.iterdir())[:20]}"
    )


def _tokenizer(open_clip_name: str, pretrained: str, label: str, cache_dir: Path | None, notes: list[str]) -> Any:
    """The model's open_clip tokenizer, by name; for an HF tokenizer, from the `pretrained` folder (or the weights
    file's folder, as in a Hugging Face snapshot) when that holds the tokenizer's files."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    text_cfg = (open_clip.get_model_config(open_clip_name) or {}).get("text_cfg", {})
    folder = None
    if pretrained and pretrained != RANDOM and os.path.exists(pretrained):
        folder = Path(pretrained) if os.path.isdir(pretrained) else Path(pretrained).parent
    if text_cfg.get("hf_tokenizer_name") and folder is not None:
        if any((folder / name).is_file() for name in HF_TOKENIZER_FILES):
            notes.append(f"tokenizer: {text_cfg['hf_tokenizer_name']}'s, from {folder}")
            return HFTokenizer(
                str(folder),
                context_length=text_cfg.get("context_length"),
                tokenizer_mode=text_cfg.get("tokenizer_mode"),
                **text_cfg.get("tokenizer_kwargs", {}),
            )
    try:  # first: it is cheap, and for SigLIP it is a download too
        return open_clip.get_tokenizer(open_clip_name)
    except OSError as err:
        if pretrained != RANDOM or not text_cfg.get("hf_tokenizer_name"):
            raise WeightsUnavailableError(_offline_message(open_clip_name, pretrained, label, err)) from err
    return standin_hf_tokenizer(text_cfg, cache_dir, notes)


def standin_hf_tokenizer(text_cfg: dict[str, Any], cache_dir: Path | None, notes: list[str]) -> Any:
    """open_clip's HFTokenizer over a SentencePiece-style BPE trained here, with the model's context length and
    tokenizer settings and ids inside its vocabulary: for random weights whose real tokenizer needs the hub."""
    from open_clip.tokenizer import HFTokenizer

    from models.cache import build_once, resolve_cache_dir
    from models.local_tokenizers import train_sentencepiece_style_tokenizer

    folder = build_once(
        resolve_cache_dir(cache_dir) / "standin-sentencepiece-tokenizer",
        lambda out: train_sentencepiece_style_tokenizer().save_pretrained(out),
        {"version": 1, "kind": "sentencepiece-style BPE", "vocab_size": 1000},
    )
    tokenizer = HFTokenizer(
        str(folder),
        context_length=text_cfg.get("context_length"),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **text_cfg.get("tokenizer_kwargs", {}),
    )
    vocab = len(tokenizer.tokenizer)
    if text_cfg.get("vocab_size") and vocab > text_cfg["vocab_size"]:
        raise ValueError(f"stand-in tokenizer vocabulary {vocab} exceeds the model's {text_cfg['vocab_size']}")
    notes.append(
        f"tokenizer: stand-in SentencePiece-style BPE (vocab {vocab} of the model's {text_cfg.get('vocab_size')}, "
        f"context {text_cfg.get('context_length')}); the real one, {text_cfg['hf_tokenizer_name']}, needs the hub"
    )
    return tokenizer


def _check_pretrained(open_clip_name: str, pretrained: str, label: str) -> None:
    import open_clip

    if open_clip_name.startswith(SCHEMAS):
        if pretrained:
            raise ValueError(f"model.name={label} loads its own weights: leave model.pretrained empty")
        return
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
        raise ValueError(
            f"model.name={label} is an open_clip architecture without a preset: set model.pretrained to one of its "
            f"tags {tags}, a local weights file or folder, or {RANDOM!r}"
        )
    if pretrained == RANDOM or open_clip.get_pretrained_cfg(open_clip_name, pretrained) or os.path.exists(pretrained):
        return
    if Path(pretrained).suffix or os.sep in pretrained:
        raise FileNotFoundError(f"model.pretrained={pretrained}: no such file or folder")
    tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
    raise ValueError(
        f"model.pretrained={pretrained} is not an open_clip tag of {open_clip_name} {tags}, a file, a folder "
        f"nor {RANDOM!r}"
    )


def _is_download_failure(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, OSError) or "Failed to download" in text or "offline" in text.lower()


def _offline_message(open_clip_name: str, pretrained: str, label: str, err: BaseException) -> str:
    """Names each missing download and the two ways to supply it."""
    import open_clip

    repos = []
    tag_cfg = open_clip.get_pretrained_cfg(open_clip_name, pretrained) if pretrained else {}
    if tag_cfg.get("hf_hub"):
        repos.append(f"weights: Hugging Face repo {tag_cfg['hf_hub'].rstrip('/')} (open_clip tag {pretrained!r})")
    elif tag_cfg.get("url"):
        repos.append(f"weights: {tag_cfg['url']} (open_clip tag {pretrained!r})")
    text_cfg = (open_clip.get_model_config(open_clip_name) or {}).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        repos.append(f"tokenizer: Hugging Face repo {text_cfg['hf_tokenizer_name']}")
    needed = "".join(f"\n  - {repo}" for repo in repos)
    tokenizer_note = (
        f" A tokenizer comes from the cache, or from its files ({', '.join(HF_TOKENIZER_FILES)}) in the folder given "
        "as model.pretrained (or holding the weights file), as in a Hugging Face snapshot of the model."
        if text_cfg.get("hf_tokenizer_name")
        else ""
    )
    return (
        f"model.name={label} (open_clip {open_clip_name!r}, pretrained={pretrained!r}) needs files that are not on "
        f"this machine and cannot be downloaded here:{needed}\n"
        "Supply them in one of two ways:\n"
        "  - weights as a local file: model.pretrained=/path/to/open_clip_model.safetensors (or "
        "open_clip_pytorch_model.bin), an open_clip checkpoint of this architecture;\n"
        "  - a populated Hugging Face cache: on a connected machine `huggingface-cli download <repo>` for each repo "
        "above, copy the cache here (HF_HOME, default ~/.cache/huggingface) and set HF_HUB_OFFLINE=1."
        f"{tokenizer_note}\n"
        f"Cause: {type(err).__name__}: {err}"
    )
