"""The paper's models as open_clip loads them, and loading any open_clip model with a clear offline error.

One table names exactly what each paper preset loads; everything goes through open_clip's own
`create_model_and_transforms` / `get_tokenizer`, so model, transforms and tokenizer always belong together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


def is_open_clip_name(name: str) -> bool:
    import open_clip

    return name.startswith(SCHEMAS) or name.replace("/", "-") in open_clip.list_models()


def load_open_clip(open_clip_name: str, pretrained: str, *, label: str = "") -> OpenClipParts:
    """open_clip's model, transforms and tokenizer for `open_clip_name` with `pretrained` (a tag or a local file).

    `label` names the model in errors (the preset or recipe value the user wrote).
    """
    import open_clip

    label = label or open_clip_name
    _check_pretrained(open_clip_name, pretrained, label)
    try:  # first: it is cheap, and for SigLIP it is a download too
        tokenizer = open_clip.get_tokenizer(open_clip_name)
    except OSError as err:
        raise WeightsUnavailableError(_offline_message(open_clip_name, pretrained, label, err)) from err
    try:
        model, preprocess_train, preprocess_eval = open_clip.create_model_and_transforms(
            open_clip_name, pretrained=pretrained or None
        )
    except (RuntimeError, OSError) as err:
        if not _is_download_failure(err):
            raise
        raise WeightsUnavailableError(_offline_message(open_clip_name, pretrained, label, err)) from err
    return OpenClipParts(model, preprocess_train, preprocess_eval, tokenizer)


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
            f"tags {tags} or to a local weights file"
        )
    if open_clip.get_pretrained_cfg(open_clip_name, pretrained) or os.path.isfile(pretrained):
        return
    if Path(pretrained).suffix or os.sep in pretrained:
        raise FileNotFoundError(f"model.pretrained={pretrained}: no such file")
    tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
    raise ValueError(f"model.pretrained={pretrained} is not an open_clip tag of {open_clip_name} {tags} nor a file")


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
    tokenizer_note = " A tokenizer repo can only come from the cache." if text_cfg.get("hf_tokenizer_name") else ""
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
