"""Text tower `llm2vec`: a frozen LLM2Vec encoder (the paper: Llama-2-7b-chat + MNTP) and a trainable mlp2 connector.

The LLM is loaded by llm2vec's own `LLM2Vec.from_pretrained` (bidirectional attention) and run with its
`tokenize()` + `forward()`: `encode()` is for inference only (no gradients, process pools on multi-GPU hosts).
The LLM runs frozen, at its own dtype (bf16 in the paper recipes), under no_grad and `chunk_size` captions at a
time, so its activation memory is one layer of one chunk whatever the batch (models.memory counts it so).
Captions go through exactly the steps of llm2vec's `LLM2Vec.encode`: `_convert_to_str` (the caption cut, by
words, to `doc_max_length` tokens, then "<instruction> !@#$%^&*()<caption>"), `prepare_for_tokenization` (the chat
template) and `tokenize` (left padding, `embed_mask` over the caption's tokens, which are the ones pooled), so the
pooled embedding equals `LLM2Vec.encode`'s for short and long captions alike. `fit_doc_max_length` keeps llm2vec's
doc_max_length unless template + instruction + caption would then exceed `max_length`: llm2vec would then cut the
whole text from the right, losing the template's closing part and pooling over the template.

Connector: LLaVA-1.5's `mlp2x_gelu` projector, Linear(in, out), GELU, Linear(out, out), at our widths: the LLM's
hidden size in, the image embedding out. `hidden_dim` <= 0 gives exactly that (hidden width = output width); any
other value keeps the two-layer design with that hidden width.

Random weights at real widths: `base_model: "random:llama-2-7b-chat"` (all 32 layers) or
`"random:llama-2-7b-chat:<layers>"` builds Llama-2-7B-chat's architecture with a seeded random init in memory, with
its chat template, and the real tokenizer when the Hugging Face cache has it (else a stand-in, said in the notes).
`write_random_llama` writes the same model as an HF folder (`python -m models.llm2vec_text FOLDER --layers N`).

Chat template: llm2vec wraps text in a model's chat template only when `config._name_or_path` is exactly a hub
name it knows (e.g. "meta-llama/Llama-2-7b-chat-hf"). Loaded from the hub, McGill-NLP's Llama-2 MNTP model
gets the Llama-2 template; a local copy gets whatever name its config.json records (possibly a path) and would
silently lose it. `resolve_template_name` restores the hub name from the folder's metadata and warns when it
does, or when a chat model ends up without any template.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.native_text import TextTokens

if TYPE_CHECKING:
    from llm2vec import LLM2Vec
    from transformers import PretrainedConfig

INSTRUCTION_SEPARATOR = "!@#$%^&*()"  # llm2vec's marker between instruction and caption (LLM2Vec.tokenize)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# McGill-NLP's LLM2Vec models and the chat model each was made from (whose template llm2vec applies).
LLM2VEC_CHAT_BASES = {
    "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp": "meta-llama/Llama-2-7b-chat-hf",
    "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp": "mistralai/Mistral-7B-Instruct-v0.2",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp": "meta-llama/Meta-Llama-3-8B-Instruct",
}
_CHAT_NAME = re.compile(r"chat|instruct|-it\b", re.IGNORECASE)

log = logging.getLogger(__name__)


class LLM2VecTextTower(nn.Module):
    """Frozen LLM2Vec (always eval, no grad, `chunk_size` texts per pass) -> pooled state -> mlp2 connector (trains)."""

    def __init__(self, encoder: LLM2Vec, embed_dim: int, hidden_dim: int = 0, chunk_size: int = 0):
        super().__init__()
        self.llm2vec = encoder.requires_grad_(False).eval()
        self.chunk_size = chunk_size  # texts per LLM forward pass; 0 = the whole batch in one pass
        self.connector = mlp2_connector(encoder.model.config.hidden_size, embed_dim, hidden_dim)

    def forward(self, text: dict[str, Tensor]) -> Tensor:
        return self.project(self.frozen_features(text))

    def frozen_features(self, text: dict[str, Tensor]) -> Tensor:
        """The LLM's pooled embeddings: the part a feature cache stores."""
        with torch.no_grad():
            return torch.cat([self.llm2vec(chunk) for chunk in self._chunks(text)])

    def _chunks(self, text: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Row slices of the batch, each a new dict (llm2vec rewrites the masks of the dict it gets), each padded
        only to its own longest text (`trim_padding`): the LLM computes no column that is padding in every row."""
        rows = len(text["input_ids"])
        step = self.chunk_size if 0 < self.chunk_size < rows else max(rows, 1)
        return [
            trim_padding({key: value[start : start + step] for key, value in text.items()})
            for start in range(0, rows, step)
        ]

    def project(self, pooled: Tensor) -> Tensor:
        return self.connector(pooled.to(self.connector[0].weight.dtype))

    def forward_tokens(self, text: dict[str, Tensor]) -> TextTokens:
        """The pooled embedding (= forward) and every caption token's last hidden state, each through the connector
        (an MLP per row). The mask is llm2vec's pooling mask: the caption's tokens, without the instruction
        (skip_instruction) or the left padding. Chunks are padded back (on the left) to the batch's width."""
        width = text["input_ids"].shape[1]
        pooled, states, masks = [], [], []
        with torch.no_grad():
            for chunk in self._chunks(text):
                embed_mask = chunk.pop("embed_mask", None)
                hidden = self.llm2vec.model(**chunk).last_hidden_state
                chunk["embed_mask"] = embed_mask
                pooled.append(self.llm2vec.get_pooling(chunk, hidden))  # rewrites attention_mask as it pools
                mask = chunk["attention_mask"].bool()
                pad = width - hidden.shape[1]
                states.append(F.pad(hidden, (0, 0, pad, 0)))
                masks.append(F.pad(mask, (pad, 0)))
        return TextTokens(self.project(torch.cat(pooled)), self.project(torch.cat(states)), torch.cat(masks))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to do: the LLM keeps no activations (no grad) and the connector is two layers."""


def trim_padding(text: dict[str, Tensor]) -> dict[str, Tensor]:
    """`text` (llm2vec's tokenize output, left-padded) without its leading columns that are padding in every row.

    The tokenizer pads a batch to its longest text, so a slice of it (a chunk) may carry columns no row of the
    slice needs. Dropping them changes no embedding beyond float rounding: padded keys are masked out of attention
    (llm2vec's bidirectional mask), pooling reads only the caption's tokens (`embed_mask`, counted from the right),
    and the rotary positions of the remaining tokens all move by the same offset, which rotary attention does not
    see (it depends on position differences only). tests/test_feature_cache.py checks it against max_length padding.
    """
    mask = text["attention_mask"]
    if mask.ndim != 2 or mask.shape[1] == 0:
        return text
    used = mask.bool().any(dim=0)
    if not bool(used.any()):
        return text  # only empty rows: nothing to measure the padding against
    first = int(used.to(torch.int8).argmax())  # first column any row attends to
    if first == 0:
        return text
    width = mask.shape[1]
    return {
        key: value[:, first:] if value.ndim == 2 and value.shape[1] == width else value for key, value in text.items()
    }


def mlp2_connector(in_dim: int, out_dim: int, hidden_dim: int = 0) -> nn.Sequential:
    """LLaVA-1.5's mlp2x_gelu: Linear(in, hidden), GELU, Linear(hidden, out); hidden_dim <= 0 means = out (LLaVA's)."""
    hidden = hidden_dim if hidden_dim > 0 else out_dim
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class LLM2VecTokenizer:
    """Captions -> llm2vec's tokenize() output {input_ids, attention_mask, embed_mask}, left-padded.

    The steps of `LLM2Vec.encode` for (instruction, caption) pairs, with llm2vec's own functions: `_convert_to_str`
    (doc_max_length), `prepare_for_tokenization` (chat template), `tokenize`. They run on a model-less LLM2Vec twin
    (the config and the HF tokenizer only), so data-loader workers never carry the LLM.
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

    def prepare(self, text: str) -> str:
        """One caption as llm2vec's encode() hands it to tokenize(): cut to doc_max_length, joined, templated."""
        return self.llm2vec.prepare_for_tokenization(self.llm2vec._convert_to_str(self.instruction, text))

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return dict(self.llm2vec.tokenize([self.prepare(text) for text in texts]))


TEMPLATE_MARGIN = 4  # tokens kept free for merges across the template/caption boundary


def fit_doc_max_length(encoder: LLM2Vec, instruction: str = "", doc_max_length: int = 0) -> int:
    """The doc_max_length to use: `doc_max_length` if > 0, else llm2vec's own (400, or the model's
    llm2vec_config.json) lowered so that chat template + instruction + caption fit in `max_length` tokens."""
    # What tokenize() feeds the LLM for an empty caption: the template and instruction, without llm2vec's marker.
    empty = encoder.prepare_for_tokenization(encoder._convert_to_str(instruction, ""))
    overhead = len(encoder.tokenizer("".join(empty.split(INSTRUCTION_SEPARATOR)))["input_ids"])
    room = encoder.max_length - overhead - TEMPLATE_MARGIN
    if room < 1:
        raise ValueError(
            f"text.llm2vec.max_length={encoder.max_length} leaves no room for a caption: the chat template and "
            f"instruction alone take {overhead} tokens"
        )
    if doc_max_length > 0:
        if doc_max_length > room:
            warnings.warn(
                f"doc_max_length={doc_max_length} > {room}: captions that long overflow max_length="
                f"{encoder.max_length} and lose the chat template's end (llm2vec cuts the whole text from the right)",
                stacklevel=2,
            )
        return doc_max_length
    return min(encoder.doc_max_length, room)


class _ConfigOnly(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.config = config


def load_llm2vec(
    base_model: str, *, peft_adapter: str = "", pooling: str = "mean", max_length: int = 512, dtype: str = "bf16"
) -> LLM2Vec:
    """llm2vec's LLM2Vec.from_pretrained with bidirectional attention, then the chat-template name fixed up.

    `base_model` "random:<arch>[:<layers>]" builds that architecture with random weights instead (no files).
    """
    from llm2vec import LLM2Vec

    if base_model.startswith(RANDOM_PREFIX):
        if peft_adapter:
            raise ValueError(f"text.llm2vec.base_model={base_model} has random weights: leave peft_adapter empty")
        return build_random_llm2vec(base_model, pooling=pooling, max_length=max_length, dtype=dtype)
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
            "then set HF_HUB_OFFLINE=1. For random weights at the real widths use base_model="
            f"{RANDOM_PREFIX}llama-2-7b-chat[:<layers>]."
        ) from err
    encoder.model.config.use_cache = False  # an encoder: a key/value cache only costs memory (and warns)
    encoder.model.config._name_or_path = resolve_template_name(encoder, base_model)
    return encoder


def load_llm2vec_tokenizer(source: str, *, max_length: int, pooling: str, instruction: str = "",
                           doc_max_length: int = 0) -> tuple[LLM2VecTokenizer, list[str]]:  # fmt: skip
    """The LLM2VecTokenizer of `source` (a base model as load_llm2vec takes it) without loading the LLM: its config
    and tokenizer only (a random:<arch> model: the tokenizer build_random_llm2vec uses). For counting tokens."""
    from llm2vec import LLM2Vec
    from transformers import AutoConfig, AutoTokenizer

    if source.startswith(RANDOM_PREFIX):
        arch, _ = parse_random_spec(source)
        config = random_llm_config(source)
        config._name_or_path = RANDOM_LLM_ARCHS[arch].chat_name
        tokenizer, notes = _random_llm_tokenizer(arch)
    else:
        try:
            config = AutoConfig.from_pretrained(source)
            tokenizer, notes = AutoTokenizer.from_pretrained(source), []
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"text.llm2vec.base_model={source}: its config and tokenizer: {err}") from err
    tokenizer.pad_token = tokenizer.eos_token  # as LLM2Vec.from_pretrained
    tokenizer.padding_side = "left"
    encoder = LLM2Vec(_ConfigOnly(config), tokenizer, pooling_mode=pooling, max_length=max_length)
    if not source.startswith(RANDOM_PREFIX):
        encoder.model.config._name_or_path = resolve_template_name(encoder, source)
    encoder.doc_max_length = fit_doc_max_length(encoder, instruction, doc_max_length)
    return LLM2VecTokenizer(encoder, instruction), notes


def llm_notes(encoder: LLM2Vec, base_model: str) -> list[str]:
    """What a run log should say about the LLM: random weights, a stand-in tokenizer (from build_random_llm2vec,
    or recorded in the folder by write_random_llama)."""
    if getattr(encoder, "notes", None):
        return list(encoder.notes)
    try:
        record = json.loads((Path(base_model) / RANDOM_LLM_RECORD).read_text())
    except (OSError, ValueError):
        return []
    return list(record.get("notes", []))


# --- random weights at the real widths ------------------------------------------------------------------------------

RANDOM_PREFIX = "random:"
RANDOM_LLM_RECORD = "clipablate_random_llm.json"  # written by write_random_llama next to config.json
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class RandomLlmArch:
    chat_name: str  # the hub name llm2vec picks the chat template by; its tokenizer is used when cached
    config: dict[str, Any]  # transformers config (model_type + dims)


RANDOM_LLM_ARCHS = {
    # meta-llama/Llama-2-7b-chat-hf's config.json (the base of McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp)
    "llama-2-7b-chat": RandomLlmArch(
        "meta-llama/Llama-2-7b-chat-hf",
        {
            "model_type": "llama",
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32000,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
}


def parse_random_spec(spec: str) -> tuple[str, int | None]:
    """ "random:<arch>[:<layers>]" -> (arch, layers or None for all)."""
    parts = spec.removeprefix(RANDOM_PREFIX).split(":")
    arch = parts[0]
    if arch not in RANDOM_LLM_ARCHS or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            f"text.llm2vec.base_model={spec}: write {RANDOM_PREFIX}<arch> or {RANDOM_PREFIX}<arch>:<layers> "
            f"with <arch> one of {sorted(RANDOM_LLM_ARCHS)}"
        )
    layers = int(parts[1]) if len(parts) == 2 else None
    if layers is not None and not 0 < layers <= RANDOM_LLM_ARCHS[arch].config["num_hidden_layers"]:
        raise ValueError(
            f"text.llm2vec.base_model={spec}: layers must be 1..{RANDOM_LLM_ARCHS[arch].config['num_hidden_layers']}"
        )
    return arch, layers


def random_llm_config(spec: str) -> PretrainedConfig | None:
    """The transformers config of a "random:..." base model (None for any other base_model): for memory estimates."""
    from transformers import CONFIG_MAPPING

    if not spec.startswith(RANDOM_PREFIX):
        return None
    arch, layers = parse_random_spec(spec)
    dims = dict(RANDOM_LLM_ARCHS[arch].config)
    if layers is not None:
        dims["num_hidden_layers"] = layers
    config = CONFIG_MAPPING[dims.pop("model_type")](**dims)
    config._name_or_path = RANDOM_LLM_ARCHS[arch].chat_name
    config.use_cache = False
    return config


def _random_llm_tokenizer(arch: str) -> tuple[Any, list[str]]:
    """The real tokenizer from the Hugging Face cache, else a stand-in byte-level BPE with Llama's special ids."""
    from transformers import AutoTokenizer

    from models.local_tokenizers import train_byte_level_tokenizer

    name = RANDOM_LLM_ARCHS[arch].chat_name
    try:
        return AutoTokenizer.from_pretrained(name), [f"tokenizer: {name}'s, from the Hugging Face cache"]
    except (OSError, ValueError):
        tokenizer = train_byte_level_tokenizer()
    note = f"tokenizer: stand-in byte-level BPE (vocab {len(tokenizer)}), the real one ({name}) needs the hub"
    return tokenizer, [note]


def _random_llama(config: PretrainedConfig, dtype: torch.dtype, model_class: Any) -> nn.Module:
    """A seeded random init on the CPU, without disturbing the caller's random stream."""
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return model_class._from_config(config, torch_dtype=dtype)


def build_random_llm2vec(spec: str, *, pooling: str = "mean", max_length: int = 512, dtype: str = "bf16") -> LLM2Vec:
    """LLM2Vec over a random "random:<arch>[:<layers>]" model built in memory: the model, tokenizer and settings
    LLM2Vec.from_pretrained gives for a folder written by write_random_llama(arch, layers). Notes in `.notes`."""
    from llm2vec import LLM2Vec

    arch, _ = parse_random_spec(spec)
    config = random_llm_config(spec)
    model_class = LLM2Vec._get_model_class(type(config).__name__, enable_bidirectional=True)
    model = _random_llama(config, DTYPES[dtype], model_class)
    model.config._name_or_path = RANDOM_LLM_ARCHS[arch].chat_name  # llm2vec's template choice
    tokenizer, notes = _random_llm_tokenizer(arch)
    tokenizer.pad_token = tokenizer.eos_token  # as LLM2Vec.from_pretrained
    tokenizer.padding_side = "left"
    encoder = LLM2Vec(model, tokenizer, pooling_mode=pooling, max_length=max_length)
    encoder.notes = [_random_weights_note(arch, config.num_hidden_layers), *notes]
    return encoder


def _random_weights_note(arch: str, layers: int) -> str:
    total = RANDOM_LLM_ARCHS[arch].config["num_hidden_layers"]
    return f"llm: random weights (seed {RANDOM_INIT_SEED}) at {arch} widths, {layers} of {total} layers, nothing pretrained"


def write_random_llama(
    folder: Path | str, *, arch: str = "llama-2-7b-chat", layers: int | None = None, dtype: str = "bf16"
) -> Path:
    """An HF model folder (config, weights, tokenizer) with the model build_random_llm2vec builds for
    "random:<arch>[:<layers>]", loadable as text.llm2vec.base_model=<folder> by llm2vec's own from_pretrained."""
    from transformers import AutoModel

    spec = f"{RANDOM_PREFIX}{arch}" + (f":{layers}" if layers else "")
    config = random_llm_config(spec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _random_llama(config, DTYPES[dtype], AutoModel._model_mapping[type(config)])  # LlamaModel
    model.save_pretrained(folder)
    tokenizer, notes = _random_llm_tokenizer(arch)
    tokenizer.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())  # llm2vec reads the template name from config.json
    (folder / "config.json").write_text(
        json.dumps({**saved, "_name_or_path": RANDOM_LLM_ARCHS[arch].chat_name}, indent=2)
    )
    record = {
        "spec": spec,
        "seed": RANDOM_INIT_SEED,
        "dtype": dtype,
        "notes": [_random_weights_note(arch, config.num_hidden_layers), *notes],
    }
    (folder / RANDOM_LLM_RECORD).write_text(json.dumps(record, indent=1))
    return folder


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a random-weights LLM folder for text.llm2vec.base_model.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--arch", default="llama-2-7b-chat", choices=sorted(RANDOM_LLM_ARCHS))
    parser.add_argument("--layers", type=int, default=None, help="first N layers only (default: all)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    folder = write_random_llama(args.folder, arch=args.arch, layers=args.layers, dtype=args.dtype)
    print("\n".join(json.loads((folder / RANDOM_LLM_RECORD).read_text())["notes"]))
    print(f"wrote {folder}: use text.llm2vec.base_model={folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
