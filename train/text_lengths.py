"""LLM2Vec tokens per text, measured on the shards: what train.cost counts the frozen LLM's FLOPs at.

    lengths = measure_llm_tokens(cfg, samples=2000)   # None when the shards or the tokenizer are not here
    lengths.mean, lengths.padded_mean

A seeded sample of the shards' samples, each as training sees it (the caption the policy draws, joined for
`concat`, plus its hard negative under the recipe's rule), tokenized by the recipe's LLM2Vec tokenizer (chat
template and instruction included, captions cut to doc_max_length and max_length), reading only the json members
(no image is decoded: a few seconds). `mean`: tokens per text, what a cache build computes (it batches texts by
length, so almost no padding). `padded_mean`: tokens per text as an uncached step computes them, each pass of
`chunk_size` texts padded to its longest (the expected maximum over a random pass, resampled from the sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.config import RecipeConfig


@dataclass(frozen=True)
class TokenLengths:
    texts: int  # sampled texts (captions and their real negatives)
    mean: float  # tokens per text
    padded_mean: float  # tokens per text in a pass of `chunk` random texts, padded to its longest
    chunk: int
    notes: tuple[str, ...] = ()  # e.g. a stand-in tokenizer

    def describe(self) -> str:
        return (f"measured on {self.texts:,} texts sampled from the shards: mean {self.mean:.1f} tokens (cache "
                f"builds), {self.padded_mean:.1f} padded to each pass of {self.chunk} (uncached steps)")  # fmt: skip


def expected_padded(lengths: np.ndarray, chunk: int, draws: int = 2000, seed: int = 0) -> float:
    """E[max length over `chunk` texts drawn at random]: the tokens per text of a pass padded to its longest."""
    if len(lengths) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(lengths), size=(draws, max(chunk, 1)))
    return float(lengths[picks].max(axis=1).mean())


def measure_llm_tokens(cfg: RecipeConfig, samples: int = 2000, seed: int = 0) -> TokenLengths | None:
    """Tokens per text of `cfg`'s LLM2Vec tower on its shards (module doc); None without shards or tokenizer."""
    from models.cache import resolve_cache_dir
    from models.llm2vec_text import load_llm2vec_tokenizer
    from models.tiny_llm2vec import TINY_LLM2VEC, tiny_llm2vec_folder
    from train.data import ShardError, ShardSamples, index_shards, sample_seed

    llm = cfg.model.text.llm2vec
    if cfg.model.text.tower != "llm2vec" or not cfg.data.shards:
        return None
    if not all((Path(folder) / "sizes.json").is_file() for folder in cfg.data.shards):
        return None
    try:
        source = str(tiny_llm2vec_folder(resolve_cache_dir())) if llm.base_model == TINY_LLM2VEC else llm.base_model
        tokenizer, notes = load_llm2vec_tokenizer(source, max_length=llm.max_length, pooling=llm.pooling,
                                                  instruction=llm.instruction, doc_max_length=llm.doc_max_length)  # fmt: skip
        index = index_shards(cfg.data.shards, unrecorded=cfg.data.unrecorded_shards)
    except (FileNotFoundError, ShardError, ValueError):
        return None
    data = ShardSamples(index, None, cfg.data.caption_policy, cfg.seed, negative_rule=cfg.data.negative_rule)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(index), size=min(samples, len(index)), replace=False)
    texts = []
    for i in chosen:
        caption, negative = data.caption(int(i), sample_seed(cfg.seed, 0, int(i)))
        texts.append(caption)
        if negative is not None and cfg.loss.uses_hard_negatives:
            texts.append(negative)
    lengths = []
    for start in range(0, len(texts), 256):
        tokens = tokenizer(texts[start : start + 256])
        lengths.append(tokens["attention_mask"].sum(dim=1).numpy())
    found = np.concatenate(lengths)
    chunk = llm.chunk_size if llm.chunk_size > 0 else cfg.data.batch_size or 128
    return TokenLengths(len(found), float(found.mean()), expected_padded(found, chunk), chunk, tuple(notes))
