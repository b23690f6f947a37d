"""build_model: a ModelConfig -> the model with its transforms and tokenizer, so eval cannot drift from training.

MODELS maps each preset to the function that loads its open_clip parts; any other open_clip model name works too
(with `pretrained` a tag, a local file or folder, or "random"). The text tower is then the model's own or an LLM2Vec
tower, and the freezing of the recipe is applied. `ModelBundle.notes` says what a run log should show about the
build (random weights, stand-in tokenizers, preprocessing taken from a tag).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.alignment_heads import build_head
from models.cache import resolve_cache_dir
from models.config import ModelConfig
from models.contrastive import ContrastiveModel
from models.freezing import freeze, lock_image_tower
from models.native_text import NativeTokenizer, native_text_tower
from models.open_clip_models import PAPER_MODELS, RANDOM, OpenClipParts, is_open_clip_name, load_open_clip
from models.tiny_open_clip import TINY_OPEN_CLIP, load_tiny_open_clip, tiny_open_clip_folder

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class ModelBundle:
    model: ContrastiveModel
    preprocess_train: Callable[[Image.Image], torch.Tensor]  # open_clip's train transform: random resized crop, no flip
    preprocess_eval: Callable[[Image.Image], torch.Tensor]  # resize + center crop (or squash), normalize
    tokenizer: Callable[[Sequence[str]], dict[str, torch.Tensor]]  # always a dict of tensors for model.encode_text
    info: dict[str, Any]  # what was built, JSON-able
    notes: list[str] = field(default_factory=list)  # lines for the run log: random weights, stand-ins, ...


def build_paper_model(preset: str, pretrained: str, cache_dir: Path, **model_kwargs: Any) -> OpenClipParts:
    """A PAPER_MODELS preset through open_clip; `pretrained` overrides its tag (a tag, a local file or folder, or
    "random"); a file, folder or "random" gets the preprocessing of the preset's own tag. `model_kwargs` override the
    architecture's config (open_clip's highest-priority model arguments)."""
    entry = PAPER_MODELS[preset]
    parts = load_open_clip(
        entry.open_clip_name,
        pretrained or entry.pretrained,
        label=preset,
        tag=entry.pretrained,
        cache_dir=cache_dir,
        model_kwargs=model_kwargs,
    )
    parts.info = {"open_clip_model": entry.open_clip_name, "pretrained": pretrained or entry.pretrained, **parts.info}
    return parts


def build_tiny_model(preset: str, pretrained: str, cache_dir: Path, **model_kwargs: Any) -> OpenClipParts:
    """A tiny stand-in from its cache folder; `pretrained` = an open_clip checkpoint file loaded over it ("random":
    the folder's own weights, which are a seeded random init)."""
    spec = TINY_OPEN_CLIP[preset]
    parts = load_tiny_open_clip(spec, "" if pretrained == RANDOM else pretrained, cache_dir, model_kwargs)
    folder = tiny_open_clip_folder(spec, cache_dir)
    parts.info = {
        "open_clip_model": f"local-dir:{folder}",
        "mirrors": spec.mirrors,
        "pretrained": pretrained or str(folder / "open_clip_model.safetensors"),
    }
    return parts


# preset name -> builder(pretrained, cache_dir, **open_clip model kwargs) -> OpenClipParts
MODELS: dict[str, Callable[..., OpenClipParts]] = {
    **{name: partial(build_paper_model, name) for name in PAPER_MODELS},
    **{name: partial(build_tiny_model, name) for name in TINY_OPEN_CLIP},
}


def build_model(cfg: ModelConfig, *, cache_dir: Path | None = None) -> ModelBundle:
    """Builds `cfg` (in eval mode; call .train() to train). `cache_dir` holds the tiny stand-ins (see models.cache).

    Paper weights come from `cfg.pretrained` or the Hugging Face cache; offline without them it raises
    WeightsUnavailableError (a FileNotFoundError) that says what is missing.
    """
    import open_clip  # here, not at module level: it imports timm, which imports wandb

    check_config(cfg)
    cache = resolve_cache_dir(cache_dir)
    parts = _open_clip_parts(cfg, cache)
    clip = parts.model
    activation = _activation(clip)
    if type(clip).__name__ not in ("CLIP", "CustomTextCLIP"):
        raise ValueError(
            f"model.name={cfg.name} is an open_clip {type(clip).__name__}: only CLIP-style models are supported"
        )
    embed_dim = open_clip.get_model_config(parts.info["open_clip_model"])["embed_dim"]
    info = {
        "name": cfg.name,
        **parts.info,
        "open_clip_class": type(clip).__name__,
        "image_tower": _describe(clip.visual),
        "embed_dim": embed_dim,
        "image_size": list(clip.visual.image_size),
        "preprocess": _plain(clip.visual.preprocess_cfg),
        "max_logit_scale": None,  # set below, from the built model
        "activation": activation,  # of the image and native text transformers: QuickGELU, GELU, ...
        "image_locked": cfg.image.locked,
        "unlocked_last_blocks": cfg.image.unlocked_last_blocks,
        "text_tower": cfg.text.tower,
    }
    notes = list(parts.notes)
    if cfg.released_gelu:
        notes.append(
            f"model.released_gelu: built with {activation}, as the authors' run built ViT-L-14-336 + openai"
            + (" (no QuickGELU to replace in this architecture)" if activation != "GELU" else "")
        )
    if cfg.text.tower == "native":
        text_tower, tokenizer = native_text_tower(clip), NativeTokenizer(parts.tokenizer)
        info.update(text_locked=cfg.text.locked, context_length=int(clip.context_length))
    else:
        text_tower, tokenizer, info["llm2vec"], llm_notes = _llm2vec_tower(cfg, embed_dim, cache)
        notes += llm_notes
    head = build_head(
        cfg.head.kind, clip.visual, embed_dim, cfg.head.temperature, cfg.head.layer, cfg.head.heads,
        cfg.head.fine_weight, cfg.head.sparsity,
    )  # fmt: skip
    model = ContrastiveModel(clip.visual, text_tower, clip.logit_scale, clip.logit_bias, head=head)
    info["max_logit_scale"] = model.max_logit_scale
    info["head"] = cfg.head.kind
    apply_freezing(model, cfg)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return ModelBundle(model.eval(), parts.preprocess_train, parts.preprocess_eval, tokenizer, info, notes)


def check_config(cfg: ModelConfig) -> None:
    parts = [cfg, cfg.image, cfg.text, cfg.text.llm2vec, cfg.text.connector, cfg.head]
    problems = [f"{', '.join(p.keys)}: {p.message}" for part in parts for p in part.problems()]
    if problems:
        raise ValueError("model config: " + "; ".join(problems))


def _activation(clip: nn.Module) -> str:
    """The activation class of the model's transformer MLPs (QuickGELU, GELU, ...), or "" when there are none."""
    for module in clip.modules():
        if type(module).__name__ in ("QuickGELU", "GELU", "GELUTanh"):
            return type(module).__name__
    return ""


def _open_clip_parts(cfg: ModelConfig, cache: Path) -> OpenClipParts:
    # released_gelu: open_clip's model kwargs outrank the architecture's config, so quick_gelu=False builds nn.GELU.
    model_kwargs = {"quick_gelu": False} if cfg.released_gelu else {}
    if cfg.name in MODELS:
        return MODELS[cfg.name](cfg.pretrained, cache, **model_kwargs)
    if not is_open_clip_name(cfg.name):
        raise ValueError(
            f"unknown model.name={cfg.name!r}: use a preset ({', '.join(MODELS)}) or any open_clip model name "
            "(open_clip.list_models(), e.g. ViT-B-32, or hf-hub:/local-dir: sources) with model.pretrained"
        )
    parts = load_open_clip(cfg.name, cfg.pretrained, cache_dir=cache, model_kwargs=model_kwargs)
    parts.info = {"open_clip_model": cfg.name, "pretrained": cfg.pretrained, **parts.info}
    return parts


def _llm2vec_tower(
    cfg: ModelConfig, embed_dim: int, cache: Path
) -> tuple[nn.Module, Callable, dict[str, Any], list[str]]:
    from models.llm2vec_text import LLM2VecTextTower, LLM2VecTokenizer, fit_doc_max_length, llm_notes, load_llm2vec
    from models.tiny_llm2vec import TINY_LLM2VEC, tiny_llm2vec_folder

    llm = cfg.text.llm2vec
    source = str(tiny_llm2vec_folder(cache)) if llm.base_model == TINY_LLM2VEC else llm.base_model
    encoder = load_llm2vec(
        source, peft_adapter=llm.peft_adapter, pooling=llm.pooling, max_length=llm.max_length, dtype=llm.dtype
    )
    # llm2vec's encode() cuts each caption to doc_max_length tokens; ours does the same (LLM2VecTokenizer).
    # 0 = llm2vec's own, capped so the chat template fits max_length.
    encoder.doc_max_length = fit_doc_max_length(encoder, llm.instruction, llm.doc_max_length)
    tower = LLM2VecTextTower(encoder, embed_dim, cfg.text.connector.hidden_dim, chunk_size=llm.chunk_size)
    info = {
        "base_model": llm.base_model,
        "loaded_from": source,
        "peft_adapter": llm.peft_adapter,
        "llm_class": type(encoder.model).__name__,
        "llm_hidden_size": int(encoder.model.config.hidden_size),
        "llm_layers": int(encoder.model.config.num_hidden_layers),
        "chat_template_name": encoder.model.config._name_or_path,  # what llm2vec picks its template by
        "pooling": llm.pooling,
        "max_length": llm.max_length,
        "doc_max_length": encoder.doc_max_length,
        "instruction": llm.instruction,
        "dtype": llm.dtype,
        "connector_hidden_dim": tower.connector[0].out_features,  # hidden_dim <= 0: = embed_dim (LLaVA-1.5's)
    }
    return tower, LLM2VecTokenizer(encoder, llm.instruction), info, llm_notes(encoder, source)


def apply_freezing(model: ContrastiveModel, cfg: ModelConfig) -> None:
    if cfg.image.locked:
        lock_image_tower(model.image_tower, cfg.image.unlocked_last_blocks)
    if cfg.text.tower == "native" and cfg.text.locked:
        freeze(model.text_tower)
    # The LLM2Vec LLM froze when its tower was built; the logit scale and bias always train.
    model.logit_scale.requires_grad_(True)
    if model.logit_bias is not None:
        model.logit_bias.requires_grad_(True)


def _describe(tower: nn.Module) -> str:
    trunk = getattr(tower, "trunk", None)
    return f"{type(tower).__name__}({type(trunk).__module__}.{type(trunk).__name__})" if trunk else type(tower).__name__


def _plain(value: Any) -> Any:
    """JSON-able copy: tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
