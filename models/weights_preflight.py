"""Offline (HF_HUB_OFFLINE=1), every weights repository a model config needs that is neither local nor in the Hugging
Face cache, found before anything loads, so a first start lists all of them in one message (with the exact download line and, for gated
repositories, the access step) instead of failing on one per attempt.

Only files are looked at: nothing is imported from the model, nothing downloaded. Local files and folders given
in the config are checked by the recipe's path checks; random and tiny models need nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.config import ModelConfig, names_a_file

# Bases that LLM2Vec adapters name in their adapter_config.json, for when the adapter itself is not cached yet.
KNOWN_ADAPTER_BASES = {
    "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp": "meta-llama/Llama-2-7b-chat-hf",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp": "meta-llama/Meta-Llama-3-8B-Instruct",
    "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp": "mistralai/Mistral-7B-Instruct-v0.2",
}
GATED_OWNERS = ("meta-llama/", "mistralai/")  # the Hub asks for the licence to be accepted before a download
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _cached(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def _download_line(repo: str) -> str:
    line = f"`huggingface-cli download {repo}`"
    if repo.startswith(GATED_OWNERS):
        line += f" (gated: accept its licence on https://huggingface.co/{repo} and `huggingface-cli login` first)"
    return line


def _open_clip_needs(open_clip_name: str, tag: str) -> list[str]:
    import open_clip

    out = []
    tag_cfg = open_clip.get_pretrained_cfg(open_clip_name, tag) if tag else {}
    repo = (tag_cfg.get("hf_hub") or "").rstrip("/")
    if repo and not any(_cached(repo, name) for name in OPEN_CLIP_FILES):
        out.append(
            f"model.pretrained: open_clip {open_clip_name} tag {tag!r}: weights repo {repo}: {_download_line(repo)}"
        )
    tokenizer = ((open_clip.get_model_config(open_clip_name) or {}).get("text_cfg") or {}).get("hf_tokenizer_name")
    if tokenizer and not _cached(tokenizer, "tokenizer_config.json"):
        out.append(f"model.name: the {open_clip_name} tokenizer repo {tokenizer}: {_download_line(tokenizer)}")
    return out


def _hub_model_needs(key: str, repo: str, what: str) -> tuple[list[str], dict]:
    """(problems, the repo's adapter_config.json when cached) for a Hugging Face model name."""
    if not repo or Path(repo).exists() or repo.startswith("random:") or "/" not in repo:
        return [], {}
    adapter = _cached(repo, "adapter_config.json")
    config = adapter or _cached(repo, "config.json")
    problems = [] if config else [f"{key}: {what} {repo}: {_download_line(repo)}"]
    record = json.loads(Path(adapter).read_text()) if adapter else {}
    return problems, record if isinstance(record, dict) else {}


def missing_weights(cfg: ModelConfig) -> list[str]:
    """One line per missing repository, in the order a start would need them ([] when everything is here). Only
    offline (HF_HUB_OFFLINE=1, as on machines without the hub): online, open_clip and transformers download what
    is missing at first use."""
    from huggingface_hub import constants

    from models.open_clip_models import PAPER_MODELS, RANDOM, SCHEMAS
    from models.tiny_open_clip import TINY_OPEN_CLIP

    if not constants.HF_HUB_OFFLINE:
        return []
    out: list[str] = []
    preset = PAPER_MODELS.get(cfg.name)
    open_clip_name = preset.open_clip_name if preset else cfg.name
    tag = cfg.pretrained or (preset.pretrained if preset else "")
    own_weights = cfg.name in TINY_OPEN_CLIP or cfg.name.startswith(SCHEMAS)  # built here, or a folder/repo name
    if not own_weights and tag and tag != RANDOM and not names_a_file(tag):
        try:
            out += _open_clip_needs(open_clip_name, tag)
        except (RuntimeError, KeyError, ValueError):  # not an open_clip name: the model build names it
            pass
    if cfg.text.tower == "llm2vec":
        base, adapter = cfg.text.llm2vec.base_model, cfg.text.llm2vec.peft_adapter
        problems, record = _hub_model_needs("model.text.llm2vec.base_model", base, "LLM2Vec model")
        out += problems
        # An LLM2Vec repo is a PEFT adapter: the LLM it adapts is a second download (Llama-2: gated).
        under = record.get("base_model_name_or_path") or (KNOWN_ADAPTER_BASES.get(base) if problems else None)
        if under:
            out += _hub_model_needs("model.text.llm2vec.base_model", under, f"the base LLM of {base}")[0]
        if adapter:
            out += _hub_model_needs("model.text.llm2vec.peft_adapter", adapter, "PEFT adapter")[0]
    return out
