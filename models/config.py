"""The model section of a recipe: which CLIP-like model, which text tower, what is frozen.

Owned by the model library so that `models` never needs the training app; `train.config` composes it.
Cross-field checks return `Problem`s (key paths relative to the dataclass), collected by the loader.
`ModelConfig.name_problems()` checks the model name against the known models; it is kept out of `problems()`
because it may import open_clip (seconds), and only for a name that is no preset.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Literal, NamedTuple


class Problem(NamedTuple):
    """A cross-field problem: the key paths it involves (relative to the dataclass) and what is wrong."""

    keys: tuple[str, ...]
    message: str


@dataclass(frozen=True, kw_only=True)
class ImageTowerConfig:
    locked: bool = True  # freeze the image encoder: the paper's default, so only the text side adapts
    unlocked_last_blocks: int = 0  # with locked=true, still train the last N ViT blocks (same for CLIP and SigLIP)

    def problems(self) -> list[Problem]:
        out = []
        if self.unlocked_last_blocks < 0:
            out.append(Problem(("unlocked_last_blocks",), "must be >= 0"))
        if not self.locked and self.unlocked_last_blocks:
            out.append(
                Problem(("locked", "unlocked_last_blocks"), "unlocking blocks needs locked=true (all is trainable)")
            )
        return out


@dataclass(frozen=True, kw_only=True)
class LLM2VecConfig:
    base_model: str = ""  # HF name or local folder of the LLM (paper: McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp)
    peft_adapter: str = ""  # PEFT adapter name or folder loaded on top of base_model ("" = none)
    pooling: Literal["mean", "weighted_mean", "eos_token", "bos_token"] = "mean"  # paper: mean
    max_length: int = 512  # tokens per text: chat template + instruction + caption (captions cut to doc_max_length)
    # Caption tokens kept, cut by words as LLM2Vec.encode does (the template is kept); 0 = llm2vec's own (400, or
    # the model's llm2vec_config.json), lowered where the template and instruction would not fit in max_length.
    doc_max_length: int = 0
    instruction: str = ""  # query instruction prepended by llm2vec ("" = plain captions, as the paper)
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"  # the frozen LLM's weights and activations
    # Captions per forward pass of the frozen LLM (0 = the whole batch): bounds its activation memory (for a 7B
    # Llama at 512 tokens in bf16, models.memory puts it at ~2.5 GB per 32 captions); embeddings do not depend on it.
    chunk_size: int = 32

    def problems(self) -> list[Problem]:
        out = [Problem(("max_length",), "must be > 0")] if self.max_length <= 0 else []
        if self.doc_max_length < 0:
            out.append(Problem(("doc_max_length",), "must be >= 0 (0 = llm2vec's own)"))
        if self.chunk_size < 0:
            out.append(Problem(("chunk_size",), "must be >= 0 (0 = the whole batch in one pass)"))
        return out


@dataclass(frozen=True, kw_only=True)
class ConnectorConfig:
    # Hidden width of the mlp2 connector Linear(in, hidden), GELU, Linear(hidden, out). 0 = the output width:
    # LLaVA-1.5's mlp2x_gelu, Linear(in, out), GELU, Linear(out, out), the design the paper says it follows.
    hidden_dim: int = 0

    def problems(self) -> list[Problem]:
        return [Problem(("hidden_dim",), "must be >= 0 (0 = LLaVA-1.5's design)")] if self.hidden_dim < 0 else []


@dataclass(frozen=True, kw_only=True)
class TextTowerConfig:
    tower: Literal["native", "llm2vec"] = "native"  # the model's own text encoder, or a frozen LLM2Vec + connector
    locked: bool = False  # freeze the native text tower (the LLM2Vec LLM is always frozen; its connector trains)
    llm2vec: LLM2VecConfig = field(default_factory=LLM2VecConfig)  # used when tower=llm2vec
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)  # used when tower=llm2vec

    def problems(self) -> list[Problem]:
        out = []
        if self.tower == "llm2vec" and not self.llm2vec.base_model:
            out.append(Problem(("tower", "llm2vec.base_model"), "tower=llm2vec needs llm2vec.base_model"))
        if self.tower == "llm2vec" and self.locked:
            out.append(Problem(("tower", "locked"), "with tower=llm2vec only the connector trains; leave locked=false"))
        return out


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    # How an image and a text are scored: "dot" = CLIP's cosine of the pooled embeddings; "pacl" = the text attends
    # over the locked image tower's patch tokens through trained projections (models/alignment_heads.py)
    # "xattn" = a small multi-head cross-attention matching head (text query over patch keys and values)
    # "sparc" = PACL's projections scored by the mean patch, plus SPARC's token-level loss (each caption token
    # against the patches it picks); needs a text tower with per-token outputs and runs it every step (no text cache)
    kind: Literal["dot", "pacl", "xattn", "sparc"] = "dot"
    # pacl: of the softmax over patch-text cosines that weights the patches; sparc: of the token-level loss
    temperature: float = 0.1
    layer: int = -1  # pacl, xattn, sparc: the image tower block whose patch tokens it reads (-1 = the last, as PACL)
    heads: int = 8  # xattn: attention heads (each may attend to another object); must divide the embedding width
    # sparc: loss = global + fine_weight x token-level. 2.0 = the release's 0.5 : 1.0 (Adam ignores the loss's scale)
    fine_weight: float = 2.0
    # sparc: a token keeps the patches whose min-max normalised similarity is >= sparsity / patches (SPARC's 1/P)
    sparsity: float = 1.0

    def problems(self) -> list[Problem]:
        out = [Problem(("temperature",), "must be > 0")] if self.temperature <= 0 else []
        if self.heads < 1:
            out.append(Problem(("heads",), "must be >= 1"))
        if self.fine_weight < 0:
            out.append(Problem(("fine_weight",), "must be >= 0"))
        if self.sparsity < 0:
            out.append(Problem(("sparsity",), "must be >= 0"))
        return out


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = "tiny-clip"  # a models.MODELS preset (clip-vit-l14-336, siglip-vit-l16-384, tiny-*) or open_clip name
    # open_clip pretrained tag (openai, webli), a local weights file or folder (a preset's file gets its tag's
    # preprocessing), or "random" (full size, seeded random init, no download); "" = the preset's own tag
    pretrained: str = ""
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)  # image encoder freezing
    text: TextTowerConfig = field(default_factory=TextTowerConfig)  # text encoder choice and freezing
    grad_checkpointing: bool = False  # recompute activations in backward to save memory on unlocked towers
    # Build a QuickGELU architecture (CLIP ViT-L/14-336 with the openai weights) with nn.GELU, as the authors' run did:
    # their open_clip 2.32 built `ViT-L-14-336` + `openai` with GELU and only warned. false = QuickGELU, as trained.
    # No effect on models without QuickGELU (SigLIP).
    released_gelu: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)  # the alignment: dot product, or a head on patch tokens

    def problems(self) -> list[Problem]:
        image_frozen = self.image.locked and self.image.unlocked_last_blocks == 0
        out = []
        if self.head.kind != "dot" and not image_frozen:
            out.append(
                Problem(
                    ("head.kind", "image.locked", "image.unlocked_last_blocks"),
                    f"head.kind={self.head.kind} reads the locked image tower's patch tokens: lock the whole tower",
                )
            )
        elif image_frozen and self.text.tower == "native" and self.text.locked and self.head.kind == "dot":
            out.append(Problem(("image.locked", "text.locked"), "both towers are frozen: nothing would train"))
        return out

    def has_logit_bias(self) -> bool | None:
        """Whether the model has a logit bias (SigLIP's), as its preset or open_clip config says; None: cannot tell
        without building it (hf-hub:/local-dir: sources, unknown names)."""
        from models.open_clip_models import PAPER_MODELS, SCHEMAS
        from models.tiny_open_clip import TINY_OPEN_CLIP

        if self.name in TINY_OPEN_CLIP:
            return TINY_OPEN_CLIP[self.name].model_cfg.get("init_logit_bias") is not None
        if self.name.startswith(SCHEMAS):
            return None
        import open_clip

        architecture = PAPER_MODELS[self.name].open_clip_name if self.name in PAPER_MODELS else self.name
        config = open_clip.get_model_config(architecture.replace("/", "-"))
        return None if config is None else config.get("init_logit_bias") is not None

    def name_problems(self) -> list[Problem]:
        """`name` is a preset, a tiny stand-in, an hf-hub:/local-dir: source or an open_clip architecture (then with
        a `pretrained` tag of it, a weights file or folder, or "random"), else what it might have meant; a preset's
        `pretrained`, when given, is a tag of its architecture, a file or folder, or "random". open_clip is imported
        (lazily) only for a name that is no preset or a preset with another tag. A `pretrained` path that does not
        exist is a file check, left to train.config.path_problems."""
        from models.open_clip_models import PAPER_MODELS, RANDOM, SCHEMAS
        from models.tiny_open_clip import TINY_OPEN_CLIP

        if self.name in TINY_OPEN_CLIP:
            return []
        if self.name in PAPER_MODELS:  # `pretrained` overrides the preset's tag: another tag, a file or "random"
            given = self.pretrained
            if not given or given == RANDOM or names_a_file(given) or os.path.exists(given):
                return []
            import open_clip

            architecture = PAPER_MODELS[self.name].open_clip_name
            if open_clip.get_pretrained_cfg(architecture, given):
                return []
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(architecture))
            return [
                Problem(
                    ("pretrained",),
                    f"{given!r} is not a tag of {self.name} ({architecture}: {tags}), a weights file or folder, "
                    f"nor {RANDOM!r}",
                )
            ]
        if self.name.startswith(SCHEMAS):
            if self.pretrained:
                return [Problem(("name", "pretrained"), f"{self.name} loads its own weights: leave pretrained empty")]
            return []
        import open_clip

        architectures = open_clip.list_models()
        architecture = self.name.replace("/", "-")
        if architecture not in architectures:
            close = difflib.get_close_matches(self.name, [*PAPER_MODELS, *TINY_OPEN_CLIP, *architectures], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return [
                Problem(
                    ("name",),
                    f"unknown model {self.name!r}; {hint}use a preset ({', '.join(PAPER_MODELS)}), a tiny stand-in "
                    f"({', '.join(TINY_OPEN_CLIP)}), an open_clip model name (open_clip.list_models(), e.g. ViT-B-32) "
                    "or an hf-hub:/local-dir: source",
                )
            ]
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(architecture)) or "none"
        choices = f"one of its tags ({tags}), a local weights file or folder, or {RANDOM!r}"
        if not self.pretrained:
            return [
                Problem(
                    ("name", "pretrained"), f"{self.name} is an open_clip architecture without a preset: set {choices}"
                )
            ]
        known = self.pretrained == RANDOM or bool(open_clip.get_pretrained_cfg(architecture, self.pretrained))
        if not known and not names_a_file(self.pretrained) and not os.path.exists(self.pretrained):
            return [Problem(("pretrained",), f"{self.pretrained!r} is not {choices}")]
        return []


def names_a_file(pretrained: str) -> bool:
    """Whether `model.pretrained` is meant as a weights file or folder (a path, or a name with a suffix), not a tag
    (open_clip's tags have neither)."""
    return "/" in pretrained or os.sep in pretrained or bool(os.path.splitext(pretrained)[1])
