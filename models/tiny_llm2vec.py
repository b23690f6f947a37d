"""tiny-llm2vec: a tiny random Llama saved as an HF model folder, for the llm2vec text tower on CPU.

`text.llm2vec.base_model: tiny-llm2vec` resolves to `<cache>/tiny-llm2vec/` (config.json, weights, a byte-level
BPE tokenizer trained here), which llm2vec's own `LLM2Vec.from_pretrained` then loads as for the real 7B model,
into its bidirectional Llama.
"""

from __future__ import annotations

from pathlib import Path

from models.cache import build_once

TINY_LLM2VEC = "tiny-llm2vec"
INIT_SEED = 0
BUILD_VERSION = 1  # bump when a change here must invalidate cached folders
LLAMA_ARCH = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}


def tiny_llm2vec_folder(cache_dir: Path) -> Path:
    """`<cache>/tiny-llm2vec/`, built on first use."""
    stamp = {"version": BUILD_VERSION, "seed": INIT_SEED, "llama": LLAMA_ARCH}
    return build_once(cache_dir / TINY_LLM2VEC, _write_folder, stamp)


def _write_folder(folder: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaModel

    from models.local_tokenizers import train_byte_level_tokenizer

    tokenizer = train_byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **LLAMA_ARCH,
    )
    # Real tensors on the CPU even when called under a `torch.device("meta")` context; seeded, without disturbing
    # the caller's random stream.
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = LlamaModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
