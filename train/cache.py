"""Train from cached outputs of frozen model parts: a locked image tower, the frozen LLM2Vec LLM, a locked text tower.

A cache holds one frozen part's float32 outputs, for every training sample (image) or for every caption and hard
negative (text), in .npy files read by memory map. Its folder name is a hash of everything those outputs depend
on: the model identity and a hash of the frozen part's weights, the transform or tokenizer settings, the
precision, and the shards (their index and data_prep's manifest). Any change gives a new folder, so a stale cache
is never read, and every run with the same frozen part (all locked-image CLIP runs of a sweep) shares one.

Building is split across processes in fixed chunks; each finished chunk is recorded, so an interrupted build
resumes where it stopped (only with the same chunk layout: a partial build of another layout starts over). The
folder gets its final name only when complete. The text cache batches its texts longest first by token count
(`length_order`), so each LLM pass pads little (`padding_tokens` measures it); rows are stored in the original
order. Build ahead of a sweep with

    python -m train.cache recipes/clip_neg.yaml [key.sub=value ...]
    accelerate launch -m train.cache recipes/clip_neg.yaml          # split across the GPUs
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_prep.released_negatives import rule_negatives
from models import ModelBundle
from models.cache import resolve_cache_dir
from models.config import ModelConfig
from train.data import (
    Batch,
    Collate,
    ShardIndex,
    ShardSamples,
    caption_pick,
    draw_caption,
    drop_identical_negatives,
    identical_token_rows,
    sample_seed,
    texts_with_negatives,
)

AUTO_BUILD_BATCH = 128  # texts or images per build forward when data.batch_size is 0 (auto): no gradients kept
FORMAT_VERSION = 2  # bump when what a cache holds changes meaning
FEATURES = "features.npy"  # float32 (rows, dim)
OFFSETS = "offsets.npy"  # text: int64 (samples + 1); sample i's captions are rows offsets[i]:offsets[i+1]
NEGATIVE_ROWS = "negative_rows.npy"  # text: int64 per caption row, the row of its hard negative, NO_NEGATIVE or
# IDENTICAL_NEGATIVE (a negative whose tokens equal its caption's: none to the model, counted in the metrics)
NO_NEGATIVE, IDENTICAL_NEGATIVE = -1, -2
META = "meta.json"


# --- when a cache is exact -------------------------------------------------------------------------------------


def image_cache_blocker(model: ModelConfig, augment: bool) -> str | None:
    """Why the image tower's outputs cannot be cached (None: they can, exactly)."""
    if not model.image.locked or model.image.unlocked_last_blocks:
        return "the image tower trains"
    if augment:
        return "data.augment=true draws new random crops every epoch (set it false to cache)"
    return None


def image_cache_width(model: torch.nn.Module, bundle: ModelBundle) -> int:
    """Floats per image an image cache row holds: the embedding, or an alignment head's patches x width."""
    head = model.head
    return head.patches * head.width if head is not None else int(bundle.info["embed_dim"])


def patch_cache_blocker(rows: int, width: int, folder: Path) -> str | None:
    """Why a patch-token cache of `rows` x `width` float32 is not built under `folder`: it would take more than 90% of
    the disk's free space (None: it fits). At ViT-L/14-336 that is 576 patches x 1024 floats, 2.4 MB per image."""
    need = rows * width * 4
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need <= 0.9 * free:
        return None
    return (
        f"a patch-token cache would need {need / 1e9:,.1f} GB ({width * 4 / 1e6:.2f} MB per image x {rows:,}), more than "
        f"90% of the {free / 1e9:,.1f} GB free under {probe}"
    )


def text_cache_blocker(model: ModelConfig) -> str | None:
    """Why the text tower's frozen part cannot be cached (None: it can)."""
    if model.head.kind == "sparc":
        return "model.head.kind=sparc reads every token's output, which a cache of pooled features does not hold"
    if model.text.tower == "llm2vec" or model.text.locked:
        return None
    return "the text tower trains"


def text_view(caption_policy: str) -> str:
    """Which texts a text cache holds: every caption option (random, first) or each sample's joined captions."""
    return "concat" if caption_policy == "concat" else "options"


# --- keys -------------------------------------------------------------------------------------------------------


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's whole state (names, dtypes, shapes, bytes): changes with any weight."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1).contiguous()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).cpu().numpy().data)
    return digest.hexdigest()


def shards_fingerprint(index: ShardIndex, folders: Sequence[str | Path]) -> str:
    """Hash of the shards' layout (names, sizes, keys, member offsets and sizes) and data_prep's manifests.

    The manifest records the sha256 of every converted input, so a reconversion of changed data changes it.
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in index.shard_paths:
        digest.update(f"{Path(path).name}:{os.path.getsize(path)}".encode())
    digest.update("\n".join(index.keys).encode())
    for array in (index.shard, index.jpg, index.meta):
        digest.update(np.ascontiguousarray(array).data)
    for folder in folders:
        manifest = Path(folder) / "manifest.json"
        digest.update(manifest.read_bytes() if manifest.exists() else b"-")
    return digest.hexdigest()


def cache_folder(root: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return root / f"{key['kind']}-{digest}"


# --- stores -----------------------------------------------------------------------------------------------------


class CacheDamaged(RuntimeError):
    """A finished cache's file no longer holds what was written; the message names it and what to do."""


def file_digests(folder: Path) -> dict[str, str]:
    """blake2b of every .npy file in a cache folder (about 1 GB/s: a second per GB, once per open)."""
    out = {}
    for path in sorted(folder.glob("*.npy")):
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


class FeatureStore:
    """A finished cache folder; the memory map opens lazily in each process (it is never pickled). Opening it checks
    every file against the checksums recorded when the build finished (CacheDamaged otherwise)."""

    def __init__(self, folder: Path, *, verify: bool = True):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self._features: np.ndarray | None = None
        if verify:
            recorded = self.meta.get("checksums") or {}
            found = file_digests(self.folder)
            bad = [name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name)]
            if bad:
                raise CacheDamaged(
                    f"feature cache {self.folder}: {', '.join(sorted(bad))} no longer match(es) the checksums recorded "
                    "when it was built (damaged on disk); delete the folder and the next run rebuilds it"
                )

    def __getstate__(self):
        return {**self.__dict__, "_features": None}

    @property
    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = np.load(self.folder / FEATURES, mmap_mode="r")
        return self._features

    def rows(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.features[np.asarray(rows, dtype=np.int64)]))


class TextStore(FeatureStore):
    """Text cache: per-sample caption rows (offsets) and each caption's hard-negative row."""

    def __init__(self, folder: Path, *, verify: bool = True):
        super().__init__(folder, verify=verify)
        self.offsets = np.load(self.folder / OFFSETS)
        self.negative_rows = np.load(self.folder / NEGATIVE_ROWS)


@dataclass
class FrozenCaches:
    image: FeatureStore | None  # image tower outputs per sample, or None: run the tower
    text: TextStore | None  # frozen text outputs per caption, or None: run the tower
    notes: list[str]  # what is cached and why (or why not), for the run log

    @property
    def any(self) -> bool:
        return self.image is not None or self.text is not None


# --- building ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """The slice of a launch that builds a cache: this process's rank, the count, and a barrier."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None


def build_cache(
    folder: Path,
    key: dict[str, Any],
    rows: int,
    dim: int,
    chunks: Sequence[np.ndarray],
    compute: Callable[[Iterator[int]], Iterator[tuple[int, torch.Tensor]]],
    *,
    extra: dict[str, np.ndarray] | None = None,
    processes: Processes = Processes(),
    desc: str = "cache",
) -> Path:
    """Fills `folder` with `compute`'s outputs for every chunk of rows, unless it is already complete.

    `compute(chunk ids)` yields (chunk id, (len(chunk), dim) tensor) for the chunks it is given, in any order.
    Work lands in `.<folder>.partial/`; each process appends finished chunk ids to its own log after the rows
    are flushed, so a rerun (with any number of processes) computes only chunks no log records. A chunk id means
    its rows only under the same chunks: a partial build whose chunk layout differs (another batch size or
    order) is started over, never resumed.
    """
    partial = folder.parent / f".{folder.name}.partial"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.parent / f".{folder.name}.lock", processes.rank == 0):
        if processes.rank == 0 and not folder.exists():
            _start_partial(partial, key, rows, dim, len(chunks), extra or {}, _layout_digest(chunks))
        processes.barrier()
        if folder.exists():  # complete already (possibly built by another job while this one waited)
            return folder
        done = _done_chunks(partial)
        pending = [c for c in range(len(chunks)) if c not in done][processes.rank :: processes.world]
        features = np.load(partial / FEATURES, mmap_mode="r+")
        with open(partial / f"done-{processes.rank}-{os.getpid()}.log", "a") as log:  # noqa: PTH123
            bar = tqdm(total=len(chunks), initial=len(done), desc=desc, disable=processes.rank != 0)
            for chunk_id, values in compute(iter(pending)):
                features[chunks[chunk_id]] = values.detach().float().cpu().numpy()
                features.flush()
                log.write(f"{chunk_id}\n")
                log.flush()
                os.fsync(log.fileno())
                bar.update(processes.world)
            bar.close()
        del features
        processes.barrier()
        if processes.rank == 0 and not folder.exists():  # (it exists if an unlocked concurrent build finished)
            missing = len(chunks) - len(_done_chunks(partial))
            if missing:
                raise RuntimeError(f"{partial}: {missing} of {len(chunks)} chunks were not computed")
            for log_file in partial.glob("done-*.log"):
                log_file.unlink()
            meta = json.loads((partial / META).read_text())
            meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            meta["checksums"] = file_digests(partial)  # verified by every FeatureStore that opens it
            (partial / META).write_text(json.dumps(meta, indent=1))
            os.replace(partial, folder)
        processes.barrier()
    return folder


def _layout_digest(chunks: Sequence[np.ndarray]) -> str:
    """Hash of which rows each chunk holds, in chunk order: what makes a recorded chunk id mean the same rows."""
    digest = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        rows = np.ascontiguousarray(chunk, dtype=np.int64)
        digest.update(len(rows).to_bytes(8, "little"))
        digest.update(rows.data)
    return digest.hexdigest()


def _start_partial(
    partial: Path, key: dict, rows: int, dim: int, chunks: int, extra: dict[str, np.ndarray], layout: str
) -> None:
    meta = {"key": key, "rows": rows, "dim": dim, "chunks": chunks, "layout": layout}
    meta["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if partial.exists():
        try:
            old = json.loads((partial / META).read_text())
        except (OSError, ValueError):
            old = {}
        if all(old.get(k) == meta[k] for k in ("key", "rows", "dim", "chunks", "layout")):
            return  # the same build: resume it
        shutil.rmtree(partial)
    partial.mkdir()
    np.lib.format.open_memmap(partial / FEATURES, mode="w+", dtype=np.float32, shape=(rows, dim)).flush()
    for name, array in extra.items():
        np.save(partial / name, array)
    (partial / META).write_text(json.dumps(meta, indent=1))


def _done_chunks(partial: Path) -> set[int]:
    done = set()
    for log_file in partial.glob("done-*.log"):
        for line in log_file.read_text().splitlines():
            if line.strip().isdigit():  # a line cut by a crash is not a finished chunk
                done.add(int(line))
    return done


@contextmanager
def _exclusive(lock_path: Path, take: bool):
    """One building job at a time per cache (other jobs of a sweep wait, then find it complete)."""
    if not take:
        yield
        return
    with open(lock_path, "w") as handle:  # noqa: PTH123
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:  # a file system without locks (some NFS mounts): concurrent builds just repeat work
            print(f"train.cache: cannot lock {lock_path} ({err}); building without the lock", file=sys.stderr)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the two caches ---------------------------------------------------------------------------------------------


class _Pixels(Dataset):
    """Eval-transformed pixels of shard samples (deterministic, so the seed is irrelevant)."""

    def __init__(self, samples: ShardSamples):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.samples.pixels(i, 0)


def build_image_cache(
    root: Path,
    bundle: ModelBundle,
    index: ShardIndex,
    shard_folders: Sequence[str],
    *,
    precision: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    processes: Processes = Processes(),
    only_if_built: bool = False,
) -> FeatureStore | None:
    """The locked image tower's outputs for every sample under the eval transform; `only_if_built`: the cache if it
    is already complete, else None (nothing is built)."""
    model = bundle.model
    key = {
        "kind": "image",
        "version": FORMAT_VERSION,
        # activation: the same weights built with GELU or QuickGELU (model.released_gelu) give other features
        "model": {
            k: bundle.info.get(k) for k in ("name", "open_clip_model", "pretrained", "image_tower", "activation")
        },
        "weights": module_fingerprint(model.image_tower),
        # an alignment head reads the patch tokens of block model.head.layer, not the pooled embedding
        **({"output": f"patch_tokens@{model.head.layer}"} if model.head is not None else {}),
        "transform": repr(bundle.preprocess_eval),
        "precision": precision,
        "shards": shards_fingerprint(index, shard_folders),
    }
    folder = cache_folder(root, key)
    if only_if_built and not folder.exists():
        return None
    chunks = [np.arange(s, min(s + batch_size, len(index))) for s in range(0, len(index), batch_size)]
    pixels = _Pixels(ShardSamples(index, bundle.preprocess_eval, "first", seed=0))

    def compute(chunk_ids: Iterator[int]) -> Iterator[tuple[int, torch.Tensor]]:
        ids = list(chunk_ids)
        loader = DataLoader(pixels, batch_sampler=[chunks[c].tolist() for c in ids], num_workers=workers)
        for chunk_id, batch in zip(ids, loader, strict=True):
            with torch.no_grad(), autocast():
                features = model.frozen_image_features(batch.to(device))
            yield chunk_id, features.reshape(len(features), -1)  # patch tokens as flat rows

    dim = image_cache_width(model, bundle)
    build_cache(folder, key, len(index), dim, chunks, compute, processes=processes, desc="image features")
    return FeatureStore(folder)


def caption_texts(
    samples: ShardSamples, view: str, tokenizer: Callable | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every text a text cache holds: (texts, offsets, negative rows); captions first, then the hard negatives
    (under `samples.negative_rule`). With `tokenizer`, a negative whose tokens equal its caption's is marked
    IDENTICAL_NEGATIVE instead of stored, as training's collate drops it."""
    captions: list[str] = []
    negatives: list[str | None] = []
    offsets = [0]
    for i in tqdm(range(len(samples)), desc="reading captions", mininterval=5, disable=len(samples) < 50_000):
        meta = samples.meta(i)
        if view == "concat":
            caption, negative = draw_caption(meta, "concat", 0, samples.negative_rule)
            captions.append(caption)
            negatives.append(negative)
        else:
            captions.extend(meta["captions"])
            negatives.extend(rule_negatives(samples.negative_rule, meta["captions"], meta["hard_negatives"]))
        offsets.append(len(captions))
    negative_rows = np.full(len(captions), NO_NEGATIVE, dtype=np.int64)
    with_negative = [row for row, negative in enumerate(negatives) if negative is not None]
    identical = _identical_after_tokenization(tokenizer, captions, negatives, with_negative) if tokenizer else set()
    texts = list(captions)
    for row in with_negative:
        if row in identical:
            negative_rows[row] = IDENTICAL_NEGATIVE
        else:
            negative_rows[row] = len(texts)
            texts.append(negatives[row])
    return texts, np.asarray(offsets, dtype=np.int64), negative_rows


def _identical_after_tokenization(tokenizer: Callable, captions, negatives, rows: list[int], slice_size: int = 256):
    """The rows whose caption and negative tokenize alike (each pair tokenized in one call, so padded alike)."""
    found = set()
    for start in range(0, len(rows), slice_size):
        part = rows[start : start + slice_size]
        tokens = tokenizer([captions[r] for r in part] + [negatives[r] for r in part])
        same = identical_token_rows(tokens, len(part))
        found.update(r for r, equal in zip(part, same.tolist(), strict=True) if equal)
    return found


def build_text_cache(
    root: Path,
    bundle: ModelBundle,
    index: ShardIndex,
    shard_folders: Sequence[str],
    *,
    caption_policy: str,
    precision: str,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    processes: Processes = Processes(),
    negative_rule: str = "token_rules",
    only_if_built: bool = False,
) -> TextStore | None:
    """The text tower's frozen outputs (LLM2Vec's pooled embeddings, or a locked tower's) for every text;
    `only_if_built` as build_image_cache."""
    model = bundle.model
    view = text_view(caption_policy)
    tower = bundle.info["text_tower"]
    frozen_part = model.text_tower.llm2vec if tower == "llm2vec" else model.text_tower
    key = {
        "kind": "text",
        "version": FORMAT_VERSION,
        "view": view,
        "tower": tower,
        # The LLM's description without the connector (which trains after the cache): CLIP and SigLIP runs with one LLM
        # share one cache.
        "model": {k: v for k, v in bundle.info["llm2vec"].items() if not k.startswith("connector")}
        if bundle.info.get("llm2vec")
        else {k: bundle.info.get(k) for k in ("name", "open_clip_model")},
        "context_length": bundle.info.get("context_length"),
        "weights": module_fingerprint(frozen_part),
        "precision": precision,
        "shards": shards_fingerprint(index, shard_folders),
        "negative_rule": negative_rule,
    }
    folder = cache_folder(root, key)
    if folder.exists():
        return TextStore(folder)
    if only_if_built:
        return None
    samples = ShardSamples(index, bundle.preprocess_eval, "first", seed=0, negative_rule=negative_rule)
    texts, offsets, negative_rows = caption_texts(samples, view, bundle.tokenizer)
    # Longest first, in batches of similar token counts: little padding for the LLM (each pass pads to its longest
    # text), and an early out-of-memory. build_cache stores every row at its original index.
    order = length_order(bundle.tokenizer, texts)
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]

    def compute(chunk_ids: Iterator[int]) -> Iterator[tuple[int, torch.Tensor]]:
        for chunk_id in chunk_ids:
            tokens = bundle.tokenizer([texts[r] for r in chunks[chunk_id]])
            with torch.no_grad(), autocast():
                features = model.frozen_text_features({k: v.to(device) for k, v in tokens.items()})
            yield chunk_id, features

    dim = int(bundle.info["llm2vec"]["llm_hidden_size"] if tower == "llm2vec" else bundle.info["embed_dim"])
    extra = {OFFSETS: offsets, NEGATIVE_ROWS: negative_rows}
    build_cache(folder, key, len(texts), dim, chunks, compute, extra=extra, processes=processes, desc="text features")
    return TextStore(folder)


# --- batching texts by length ----------------------------------------------------------------------------------

LENGTH_SLICE = 10_000  # texts per batched tokenizer call when measuring lengths (bounds the token lists in memory)


def text_lengths(tokenizer: Callable, texts: Sequence[str]) -> np.ndarray:
    """Sort keys for `texts`: for an LLM2Vec tokenizer (models.llm2vec_text.LLM2VecTokenizer) each caption's token
    count, capped at `doc_max_length` as LLM2Vec.encode cuts captions (the chat template and instruction add the
    same tokens to every text); for any other tokenizer (which pads to its fixed context) the characters.

    One batched call of the fast tokenizer per LENGTH_SLICE texts: about 50 us per text on one busy CPU core, a
    minute for LLaVA-1.5's 1.2M captions, against hours of LLM forward passes.
    """
    llm2vec = getattr(tokenizer, "llm2vec", None)
    hf_tokenizer = getattr(llm2vec, "tokenizer", None)
    if hf_tokenizer is None:
        return np.asarray([len(text) for text in texts], dtype=np.int64)
    lengths = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), LENGTH_SLICE):
        ids = hf_tokenizer(list(texts[start : start + LENGTH_SLICE]), add_special_tokens=False, verbose=False)
        lengths[start : start + len(ids["input_ids"])] = [len(row) for row in ids["input_ids"]]
    return np.minimum(lengths, llm2vec.doc_max_length)


def length_order(tokenizer: Callable, texts: Sequence[str]) -> np.ndarray:
    """Indices of `texts`, longest first (`text_lengths`; ties keep their order): consecutive slices of it are
    batches of near-equal length."""
    return np.argsort(-text_lengths(tokenizer, texts), kind="stable")


@dataclass(frozen=True)
class PaddingCount:
    """Tokens the LLM computes for a list of texts (every pass padded to some width) against their own tokens."""

    computed: int  # sum over LLM passes of rows x padded width
    real: int  # sum of the texts' attention masks: the tokens that are not padding
    texts: int
    passes: int

    @property
    def ratio(self) -> float:
        """computed / real: 1.0 means no padding at all."""
        return self.computed / self.real if self.real else 1.0

    @property
    def waste(self) -> float:
        """Share of the computed tokens that are padding."""
        return 1 - self.real / self.computed if self.computed else 0.0


PADDINGS = ("chunk", "batch", "max_length")
ORDERS = ("tokens", "characters", "given")


def padding_tokens(
    tokenizer: Callable,
    texts: Sequence[str],
    *,
    batch_size: int,
    chunk_size: int = 0,
    order: str = "tokens",
    pad: str = "chunk",
) -> PaddingCount:
    """Tokens computed vs real tokens when an LLM2Vec tower encodes `texts` in batches of `batch_size`, each run as
    LLM passes of `chunk_size` texts (0 = the whole batch; the recipe's text.llm2vec.chunk_size), as
    build_text_cache does (the defaults: batches by token count, each pass padded to its longest text).

    `order`: "tokens" (length_order: the text cache's build), "characters" (longest first by characters: the
    build's former order), "given" (as listed, e.g. training's shuffled batches). `pad`: "chunk" (each LLM pass to
    its longest text: LLM2VecTextTower now), "batch" (every pass keeps the padding of the tokenizer's whole batch:
    the tower before), "max_length" (every text padded to text.llm2vec.max_length).
    `tokenizer` is the bundle's LLM2VecTokenizer (models.build_model(...).tokenizer).
    """
    from models.llm2vec_text import trim_padding

    if order not in ORDERS or pad not in PADDINGS:
        raise ValueError(f"order={order!r} (one of {ORDERS}), pad={pad!r} (one of {PADDINGS})")
    if batch_size <= 0 or chunk_size < 0:
        raise ValueError(f"batch_size={batch_size} must be > 0 and chunk_size={chunk_size} >= 0")
    if order == "tokens":
        ranked = length_order(tokenizer, texts)
    elif order == "characters":
        ranked = np.argsort([-len(text) for text in texts], kind="stable")
    else:
        ranked = np.arange(len(texts))
    step = chunk_size or batch_size
    computed = real = passes = 0
    for start in range(0, len(ranked), batch_size):
        tokens = tokenizer([texts[i] for i in ranked[start : start + batch_size]])
        for first in range(0, len(tokens["input_ids"]), step):
            chunk = {key: value[first : first + step] for key, value in tokens.items()}
            rows, width = chunk["attention_mask"].shape
            if pad == "chunk":
                width = trim_padding(chunk)["attention_mask"].shape[1]
            elif pad == "max_length":
                width = max(width, tokenizer.llm2vec.max_length)
            computed += rows * width
            real += int(chunk["attention_mask"].sum())
            passes += 1
    return PaddingCount(computed=computed, real=real, texts=len(ranked), passes=passes)


# --- training from the caches -----------------------------------------------------------------------------------


class CachedShardSamples(ShardSamples):
    """ShardSamples whose cached parts come as row numbers (gathered per batch by CachedCollate)."""

    def __init__(
        self,
        index,
        transform,
        caption_policy,
        seed,
        caches: FrozenCaches,
        epoch: int = 0,
        *,
        negative_rule="token_rules",
    ):
        super().__init__(index, transform, caption_policy, seed, epoch, negative_rule=negative_rule)
        self.caches = caches

    def __getitem__(self, i: int):
        seed = sample_seed(self.seed, self.epoch, i)
        image = i if self.caches.image is not None else self.pixels(i, seed)
        text = self.caches.text
        if text is None:
            caption, negative = self.caption(i, seed)
        else:
            first, end = int(text.offsets[i]), int(text.offsets[i + 1])
            caption = first + (caption_pick(end - first, self.caption_policy, seed) or 0)  # concat: one row
            negative_row = int(text.negative_rows[caption])
            negative = negative_row if negative_row >= 0 or negative_row == IDENTICAL_NEGATIVE else None
        return image, caption, negative, self.index.keys[i]


class CachedCollate:
    """As train.data.Collate, with cached rows gathered from the stores in place of pixels or tokens."""

    def __init__(self, tokenizer, with_negatives: bool, caches: FrozenCaches):
        self.tokenizer, self.with_negatives, self.caches = tokenizer, with_negatives, caches

    def __call__(self, items) -> Batch:
        images, captions, negatives, keys = zip(*items, strict=True)
        image, text = self.caches.image, self.caches.text
        identical = 0
        if text is not None:  # rows; a negative marked identical at the build is no negative, but is counted
            identical = sum(n == IDENTICAL_NEGATIVE for n in negatives) if self.with_negatives else 0
            negatives = [None if n == IDENTICAL_NEGATIVE else n for n in negatives]
        texts, mask = texts_with_negatives(captions, negatives, self.with_negatives)  # rows, where text is cached
        tokens = self.tokenizer(texts) if text is None else None
        if tokens is not None and mask is not None:
            tokens, mask, identical = drop_identical_negatives(tokens, mask)
        return Batch(
            pixels=torch.stack(images) if image is None else None,
            text=tokens,
            negative_mask=mask,
            keys=list(keys),
            image_frozen=image.rows(images) if image is not None else None,
            text_frozen=text.rows(texts) if text is not None else None,
            negatives_identical=identical,
        )


def prepare_caches(
    mode: str,
    cache_dir: str,
    model_cfg: ModelConfig,
    *,
    augment: bool,
    caption_policy: str,
    precision: str,
    negative_rule: str = "token_rules",
    bundle: ModelBundle,
    index: ShardIndex,
    shard_folders: Sequence[str],
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    processes: Processes = Processes(),
    trained_samples: int | None = None,
) -> FrozenCaches:
    """Opens (building first where needed) every cache that is exact for this configuration; `mode` off: none.

    `mode` auto builds a missing cache only when the run repays it: a build runs the frozen part once over every
    sample, training without it once per trained sample (`trained_samples`: steps x global batch; None = build),
    so a smoke run of a few steps over a large dataset uses a finished cache but builds none. `mode` on always
    builds."""
    if mode == "off":
        return FrozenCaches(None, None, ["feature cache: off (cache=off)"])
    skip_build = mode == "auto" and trained_samples is not None and trained_samples < len(index)
    not_built = (
        f"cache=auto: this run trains on {trained_samples:,} samples, fewer than the {len(index):,} a cache build "
        "encodes, so none is built (cache=on builds it anyway)"
        if skip_build
        else ""
    )
    root = Path(cache_dir).expanduser() if cache_dir else resolve_cache_dir() / "features"
    bundle.model.to(device)
    notes = []
    image = text = None
    blocker = image_cache_blocker(model_cfg, augment)
    if blocker is None and bundle.model.head is not None:  # patch tokens: only when they fit on the disk
        blocker = patch_cache_blocker(len(index), image_cache_width(bundle.model, bundle), root)
    if blocker is None:
        image = build_image_cache(
            root, bundle, index, shard_folders, precision=precision, batch_size=batch_size, workers=workers,
            device=device, autocast=autocast, processes=processes, only_if_built=skip_build,
        )  # fmt: skip
        shown = f"cached in {image.folder}" if image is not None else f"computed every step ({not_built})"
        notes.append(f"image features: {shown}")
    else:
        notes.append(f"image features: computed every step ({blocker})")
    blocker = text_cache_blocker(model_cfg)
    if blocker is None:
        text = build_text_cache(
            root, bundle, index, shard_folders, caption_policy=caption_policy, precision=precision,
            batch_size=batch_size, device=device, autocast=autocast, processes=processes, negative_rule=negative_rule,
            only_if_built=skip_build,
        )  # fmt: skip
        shown = f"cached in {text.folder}" if text is not None else f"computed every step ({not_built})"
        notes.append(f"text features ({bundle.info['text_tower']} frozen part): {shown}")
    else:
        notes.append(f"text features: computed every step ({blocker})")
    return FrozenCaches(image, text, notes)


def prepare_recipe_caches(
    cfg, bundle: ModelBundle, index: ShardIndex, accelerator, trained_samples: int | None = None
) -> FrozenCaches:
    """prepare_caches with a recipe's settings and a launch's processes: what finetune trains from and
    `python -m train.cache` builds ahead (`trained_samples` None: always), the same caches by construction."""
    return prepare_caches(
        cfg.cache,
        cfg.cache_dir,
        cfg.model,
        augment=cfg.data.augment,
        caption_policy=cfg.data.caption_policy,
        precision=cfg.train.precision,
        negative_rule=cfg.data.negative_rule,
        bundle=bundle,
        index=index,
        shard_folders=cfg.data.shards,
        batch_size=cfg.data.batch_size or AUTO_BUILD_BATCH,
        workers=cfg.data.workers,
        device=accelerator.device,
        autocast=accelerator.autocast,
        processes=Processes(accelerator.process_index, accelerator.num_processes, accelerator.wait_for_everyone),
        trained_samples=trained_samples,
    )


def recipe_training_data(cfg, bundle: ModelBundle, index: ShardIndex, caches: FrozenCaches):
    """(samples, collate) a recipe trains from: the caches' outputs where a frozen part is cached, else the towers'
    raw inputs; the transform is the eval one when `data.augment` is false."""
    transform = bundle.preprocess_train if cfg.data.augment else bundle.preprocess_eval
    rule = cfg.data.negative_rule
    if caches.any:
        samples = CachedShardSamples(index, transform, cfg.data.caption_policy, cfg.seed, caches, negative_rule=rule)
        return samples, CachedCollate(bundle.tokenizer, cfg.loss.uses_hard_negatives, caches)
    samples = ShardSamples(index, transform, cfg.data.caption_policy, cfg.seed, negative_rule=rule)
    return samples, Collate(bundle.tokenizer, with_negatives=cfg.loss.uses_hard_negatives)


def main(argv: list[str]) -> int:
    """Builds the caches a recipe would train from, ahead of time (under accelerate: split across processes)."""
    from accelerate import Accelerator

    from models import build_model
    from train.config import load_recipe
    from train.cpu_threads import apply_threads, choose_threads, processes_on_host
    from train.data import ShardError, index_shards
    from train.process_group import use_cpu_group
    from train.typed_config import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_recipe(argv[0], argv[1:], paths="error")
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if cfg.cache == "off":
        print("train.cache: the recipe says cache=off; nothing to build", file=sys.stderr)
        return 2
    try:
        index = index_shards(cfg.data.shards, unrecorded=cfg.data.unrecorded_shards)
    except ShardError as err:
        print(f"train.cache: {err}", file=sys.stderr)
        return 2
    accelerator = Accelerator(mixed_precision=cfg.train.accelerate_mixed_precision, cpu=use_cpu_group())
    processes = processes_on_host(accelerator.num_processes)
    apply_threads(choose_threads(cfg.train.cpu_threads, processes, cfg.data.workers))  # as finetune does
    try:
        caches = prepare_recipe_caches(cfg, build_model(cfg.model), index, accelerator)
    except CacheDamaged as err:
        print(f"train.cache: {err}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        print("\n".join(caches.notes))
    return 0 if caches.any else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
