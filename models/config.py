"""The model section of a recipe: which CLIP-like model, which text tower, what is frozen.

Owned by the model library so that `models` never needs the training app; `train.config` composes it.
Cross-field checks return `Problem`s (key paths relative to the dataclass), collected by the loader.
"""

from __future__ import annotations

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
    max_length: int = 512  # tokens per caption; longer captions are truncated
    instruction: str = ""  # query instruction prepended by llm2vec ("" = plain captions, as the paper)
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"  # the frozen LLM's weights and activations
    # Captions per forward pass of the frozen LLM (0 = the whole batch): bounds its activation memory (for a 7B
    # Llama at 512 tokens in bf16, models.memory puts it at ~2.5 GB per 32 captions); embeddings do not depend on it.
    chunk_size: int = 32

    def problems(self) -> list[Problem]:
        out = [Problem(("max_length",), "must be > 0")] if self.max_length <= 0 else []
        if self.chunk_size < 0:
            out.append(Problem(("chunk_size",), "must be >= 0 (0 = the whole batch in one pass)"))
        return out


@dataclass(frozen=True, kw_only=True)
class ConnectorConfig:
    hidden_dim: int = 4096  # width of the mlp2 connector (Linear, GELU, Linear), as LLaVA-1.5's projector

    def problems(self) -> list[Problem]:
        return [Problem(("hidden_dim",), "must be > 0")] if self.hidden_dim <= 0 else []


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
class ModelConfig:
    name: str = "tiny-clip"  # a models.MODELS preset (clip-vit-l14-336, siglip-vit-l16-384, tiny-*) or open_clip name
    pretrained: str = ""  # open_clip pretrained tag (openai, webli) or a local weights file; "" = the preset's own
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)  # image encoder freezing
    text: TextTowerConfig = field(default_factory=TextTowerConfig)  # text encoder choice and freezing
    grad_checkpointing: bool = False  # recompute activations in backward to save memory on unlocked towers

    def problems(self) -> list[Problem]:
        image_frozen = self.image.locked and self.image.unlocked_last_blocks == 0
        if image_frozen and self.text.tower == "native" and self.text.locked:
            return [Problem(("image.locked", "text.locked"), "both towers are frozen: nothing would train")]
        return []
