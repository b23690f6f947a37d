"""Text tower `llm2vec`: a frozen LLM2Vec encoder (the paper: Llama-2-7b-chat + MNTP) and a trainable mlp2 connector.

The LLM is loaded by llm2vec's own `LLM2Vec.from_pretrained` (bidirectional attention) and run with its
`tokenize()` + `forward()`: `encode()` is for inference only (no gradients, process pools on multi-GPU hosts).
The LLM runs frozen, at its own dtype (bf16 in the paper recipes), under no_grad and `chunk_size` captions at a
time, so its activation memory is one layer of one chunk whatever the batch (models.memory counts it so).
Captions follow llm2vec's convention: "<instruction> !@#$%^&*()<caption>", and only the caption's tokens
(`embed_mask`) are pooled.

Chat template: llm2vec wraps text in a model's chat template only when `config._name_or_path` is exactly a hub
name it knows (e.g. "meta-llama/Llama-2-7b-chat-hf"). Loaded from the hub, McGill-NLP's Llama-2 MNTP model
gets the Llama-2 template; a local copy gets whatever name its config.json records (possibly a path) and would
silently lose it. `resolve_template_name` restores the hub name from the folder's metadata and warns when it
does, or when a chat model ends up without any template.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from llm2vec import LLM2Vec

INSTRUCTION_SEPARATOR = "!@#$%^&*()"  # llm2vec's marker between instruction and text (LLM2Vec._convert_to_str)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# McGill-NLP's LLM2Vec models and the chat model each was made from (whose template llm2vec applies).
LLM2VEC_CHAT_BASES = {
    "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp": "meta-llama/Llama-2-7b-chat-hf",
    "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp": "mistralai/Mistral-7B-Instruct-v0.2",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp": "meta-llama/Meta-Llama-3-8B-Instruct",
}
_CHAT_NAME = re.compile(r"chat|instruct|-it\b", re.IGNORECASE)

log = logging.getLogger(__name__)


def llm2vec_text(instruction: str, text: str) -> str:
    """llm2vec's instruction/text pair as one string (as LLM2Vec._convert_to_str, without its doc truncation)."""
    return f"{instruction.strip()} {INSTRUCTION_SEPARATOR}{text}" if instruction else f"{INSTRUCTION_SEPARATOR}{text}"


class LLM2VecTextTower(nn.Module):
    """Frozen LLM2Vec (always eval, no grad, `chunk_size` texts per pass) -> pooled state -> mlp2 connector (trains)."""

    def __init__(self, encoder: LLM2Vec, embed_dim: int, hidden_dim: int, chunk_size: int = 0):
        super().__init__()
        self.llm2vec = encoder.requires_grad_(False).eval()
        self.chunk_size = chunk_size  # texts per LLM forward pass; 0 = the whole batch in one pass
        llm_hidden = encoder.model.config.hidden_size
        # LLaVA-1.5's mlp2x_gelu projector, here from the LLM embedding to the image embedding width.
        self.connector = nn.Sequential(nn.Linear(llm_hidden, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))

    def forward(self, text: dict[str, Tensor]) -> Tensor:
        return self.project(self.frozen_features(text))

    def frozen_features(self, text: dict[str, Tensor]) -> Tensor:
        """The LLM's pooled embeddings: the part a feature cache stores."""
        with torch.no_grad():
            return torch.cat([self.llm2vec(chunk) for chunk in self._chunks(text)])

    def _chunks(self, text: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Row slices of the batch, each a new dict (llm2vec rewrites the masks of the dict it gets).

        Slices keep the whole batch's padding: trimming it per chunk would shift every token's rotary position
        (the LLM numbers positions from the left edge), which changes the embeddings slightly, chunk by chunk.
        """
        rows = len(text["input_ids"])
        step = self.chunk_size if 0 < self.chunk_size < rows else max(rows, 1)
        return [{key: value[start : start + step] for key, value in text.items()} for start in range(0, rows, step)]

    def project(self, pooled: Tensor) -> Tensor:
        return self.connector(pooled.to(self.connector[0].weight.dtype))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to do: the LLM keeps no activations (no grad) and the connector is two layers."""


class LLM2VecTokenizer:
    """Captions -> llm2vec's tokenize() output {input_ids, attention_mask, embed_mask}, left-padded.

    Runs llm2vec's own prepare_for_tokenization() and tokenize() on a model-less LLM2Vec twin (the config and
    the HF tokenizer only), so data-loader workers never carry the LLM.
    """

    def __init__(self, encoder: LLM2Vec, instruction: str = ""):
        from llm2vec import LLM2Vec

        self.instruction = instruction
        self.llm2vec = LLM2Vec(
            _ConfigOnly(copy.deepcopy(encoder.model.config)),
            encoder.tokenizer,
            pooling_mode=encoder.pooling_mode,
            max_length=encoder.max_length,
            doc_max_length=encoder.doc_max_length,
            skip_instruction=encoder.skip_instruction,
        )

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        prepared = [self.llm2vec.prepare_for_tokenization(llm2vec_text(self.instruction, t)) for t in texts]
        return dict(self.llm2vec.tokenize(prepared))


class _ConfigOnly(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.config = config


def load_llm2vec(
    base_model: str, *, peft_adapter: str = "", pooling: str = "mean", max_length: int = 512, dtype: str = "bf16"
) -> LLM2Vec:
    """llm2vec's LLM2Vec.from_pretrained with bidirectional attention, then the chat-template name fixed up."""
    from llm2vec import LLM2Vec

    try:
        encoder = LLM2Vec.from_pretrained(
            base_model,
            peft_model_name_or_path=peft_adapter or None,
            enable_bidirectional=True,
            pooling_mode=pooling,
            max_length=max_length,
            torch_dtype=DTYPES[dtype],
        )
    except OSError as err:
        raise FileNotFoundError(
            f"text.llm2vec.base_model={base_model} (peft_adapter={peft_adapter!r}) could not be loaded: {err}\n"
            "Hub models cannot be downloaded on this machine: give a local folder, or populate the Hugging Face "
            "cache (HF_HOME) on a connected machine, e.g. `huggingface-cli download "
            "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp` plus the base model its adapter_config.json names, "
            "then set HF_HUB_OFFLINE=1."
        ) from err
    encoder.model.config.use_cache = False  # an encoder: a key/value cache only costs memory (and warns)
    encoder.model.config._name_or_path = resolve_template_name(encoder, base_model)
    return encoder


def resolve_template_name(encoder: LLM2Vec, base_model: str) -> str:
    """The `_name_or_path` that gives this model the chat template it gets when loaded by hub name."""
    loaded = encoder.model.config._name_or_path
    if _has_template(encoder, loaded):
        return loaded
    recorded = _names_recorded_in_folder(Path(base_model))
    for name in [base_model, *recorded]:
        for candidate in (name, LLM2VEC_CHAT_BASES.get(name, ""), *_known_by_folder_name(name)):
            if candidate and _has_template(encoder, candidate):
                log.warning(
                    "llm2vec would skip the chat template for %s (its config names %r); using the template of %r, "
                    "as when the model is loaded from the Hugging Face hub",
                    base_model,
                    loaded,
                    candidate,
                )
                return candidate
    if any(_CHAT_NAME.search(name) for name in [base_model, loaded, *recorded]):
        warnings.warn(
            f"llm2vec applies NO chat template to {base_model} (config name {loaded!r}): llm2vec picks templates by "
            f"exact hub name, and none of {[base_model, loaded, *recorded]} is one it knows. Embeddings will differ "
            "from the hub-loaded model's.",
            stacklevel=2,
        )
    return loaded


def _has_template(encoder: LLM2Vec, name: str) -> bool:
    """Asks llm2vec itself whether it wraps text in a chat template under this config name."""
    config = encoder.model.config
    saved = config._name_or_path
    try:
        config._name_or_path = ""
        plain = encoder.prepare_for_tokenization("x")
        config._name_or_path = name
        return encoder.prepare_for_tokenization("x") != plain
    finally:
        config._name_or_path = saved


def _names_recorded_in_folder(folder: Path) -> list[str]:
    """Model names a local folder records: config.json's _name_or_path, adapter_config.json's base model."""
    names = []
    for file, key in (("config.json", "_name_or_path"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads((folder / file).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if value:
            names.append(value)
    return names


def _known_by_folder_name(name: str) -> list[str]:
    """Hub names whose last part equals this path's last part (a local copy keeps the repo's folder name)."""
    last = Path(name.rstrip("/")).name
    known = [hub for hub in LLM2VEC_CHAT_BASES if hub.split("/")[-1] == last]
    known += [chat for chat in LLM2VEC_CHAT_BASES.values() if chat.split("/")[-1] == last]
    return [LLM2VEC_CHAT_BASES.get(hub, hub) for hub in known]
