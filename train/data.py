"""Training batches from the webdataset shards of data_prep: the only module that knows shards, ranks and workers.

The shards are plain tar files, so they are indexed once (byte offset and size of each sample's `jpg` and
`json` member) and read by offset. That buys what a streaming shuffle buffer cannot:
- one global order per epoch, a permutation drawn from (seed, epoch), the same for any number of processes:
  global batch t is the same samples with 1 or N processes, split into equal per-rank micro-batches;
- resume at any step, mid-epoch included, by skipping the batches already done;
- caption draws and augmentations seeded per (seed, epoch, sample), so workers never change the result.
Each rank reads only its own micro-batches; the loader is not passed to `accelerator.prepare`.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

CAPTION_POLICIES = ("random", "concat", "first")


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class ShardIndex:
    """Where every sample's members sit in the shard files, in shard-name then file order."""

    shard_paths: tuple[str, ...]
    keys: tuple[str, ...]
    shard: np.ndarray  # int32, index into shard_paths
    jpg: np.ndarray  # int64 (n, 2): byte offset, size
    meta: np.ndarray  # int64 (n, 2): byte offset, size of the json member

    def __len__(self) -> int:
        return len(self.keys)


def index_shards(folders: Sequence[str | Path]) -> ShardIndex:
    """Indexes every `*.tar` in the given folders (headers only: no image is read)."""
    paths: list[str] = []
    keys: list[str] = []
    shard_ids: list[int] = []
    jpg: list[tuple[int, int]] = []
    meta: list[tuple[int, int]] = []
    for folder in folders:
        tars = sorted(Path(folder).glob("*.tar"))
        if not tars:
            raise ShardError(f"{folder}: no .tar shards found (write them with python -m data_prep.build_shards)")
        for tar_path in tars:
            members: dict[str, dict[str, tuple[int, int]]] = {}
            with tarfile.open(tar_path) as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, _, ext = info.name.partition(".")
                    members.setdefault(key, {})[ext] = (info.offset_data, info.size)
            shard_id = len(paths)
            paths.append(str(tar_path))
            for key, parts in members.items():
                missing = [ext for ext in ("jpg", "json") if ext not in parts]
                if missing:
                    raise ShardError(f"{tar_path}: sample {key!r} has no {' or '.join(missing)} member")
                keys.append(key)
                shard_ids.append(shard_id)
                jpg.append(parts["jpg"])
                meta.append(parts["json"])
    return ShardIndex(
        tuple(paths),
        tuple(keys),
        np.asarray(shard_ids, dtype=np.int32),
        np.asarray(jpg, dtype=np.int64).reshape(-1, 2),
        np.asarray(meta, dtype=np.int64).reshape(-1, 2),
    )


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch maps onto processes and accumulation steps."""

    samples: int  # in the shards
    global_batch: int  # per optimizer step
    micro_batch: int  # per process per forward pass
    world_size: int

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.samples // self.global_batch  # the last partial global batch is dropped

    def problems(self) -> list[str]:
        out = []
        if self.global_batch % (self.micro_batch * self.world_size):
            out.append(
                f"train.global_batch_size {self.global_batch} is not a multiple of data.batch_size "
                f"{self.micro_batch} x {self.world_size} processes"
            )
        if self.samples < self.global_batch:
            out.append(f"the shards hold {self.samples} samples, fewer than one global batch ({self.global_batch})")
        return out

    def rank_batches(self, seed: int, epoch: int, rank: int, start_step: int = 0) -> list[np.ndarray]:
        """This rank's micro-batches (sample indices) for the epoch, from optimizer step `start_step` on.

        Micro-step a of global step t gathers perm[t*G + a*W*B : ... + W*B] across the W ranks, rank r
        holding the r-th slice of B, so the gathered contrastive batch is the same for any W.
        """
        order = np.random.default_rng([seed, epoch]).permutation(self.samples)
        span = self.world_size * self.micro_batch
        batches = []
        for step in range(start_step, self.steps_per_epoch):
            for micro in range(self.accumulation):
                start = step * self.global_batch + micro * span + rank * self.micro_batch
                batches.append(order[start : start + self.micro_batch])
        return batches


def sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def caption_pick(count: int, policy: str, seed: int) -> int | None:
    """Which of a sample's `count` captions the policy trains on (None for `concat`: all of them, joined)."""
    if policy == "first":
        return 0
    if policy == "random":
        return seed % count
    if policy == "concat":
        return None
    raise ValueError(f"unknown caption policy {policy!r}; choose one of {', '.join(CAPTION_POLICIES)}")


def choose_caption(captions: Sequence[str], negatives: Sequence[str | None], policy: str, seed: int):
    """(caption, its hard negative or None) under the caption policy; `seed` draws the `random` choice."""
    pick = caption_pick(len(captions), policy, seed)
    if pick is not None:
        return captions[pick], negatives[pick]
    if policy == "concat":
        swapped = [n if n is not None else c for c, n in zip(captions, negatives, strict=True)]
        negative = " ".join(swapped) if any(n is not None for n in negatives) else None
        return " ".join(captions), negative
    raise ValueError(f"unknown caption policy {policy!r}; choose one of {', '.join(CAPTION_POLICIES)}")


def decode_rgb(data: bytes) -> Image.Image:
    """The image in RGB; an RGB file (what build_shards writes) is decoded once, without convert()'s extra copy."""
    image = Image.open(io.BytesIO(data))  # in-memory: nothing to close
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def seeded_call(fn: Callable[[Image.Image], torch.Tensor], image: Image.Image, seed: int) -> torch.Tensor:
    """`fn(image)` with torch's CPU generator seeded by `seed`; the caller's generator state is restored after.

    Draws the same numbers as `fork_rng(devices=[])` + `torch.manual_seed(seed)`, whose CPU part this is, for a
    fraction of the cost: manual_seed also queues a seed for every accelerator backend (CUDA, XPU, MTIA), each
    capturing a Python stack trace, about 1 ms per sample, for CPU transforms that never use them.
    """
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return fn(image)
    finally:
        generator.set_state(state)


class ShardSamples(Dataset):
    """Map-style view of the shards for one epoch: index -> (pixels, caption, hard negative, key)."""

    def __init__(
        self,
        index: ShardIndex,
        transform: Callable[[Image.Image], torch.Tensor],
        caption_policy: str,
        seed: int,
        epoch: int = 0,
    ):
        if caption_policy not in CAPTION_POLICIES:
            raise ValueError(f"unknown caption policy {caption_policy!r}; choose one of {', '.join(CAPTION_POLICIES)}")
        self.index, self.transform, self.caption_policy, self.seed, self.epoch = (
            index,
            transform,
            caption_policy,
            seed,
            epoch,
        )
        self._files: dict[int, io.BufferedReader] = {}  # per worker process, opened lazily

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}  # open files never cross into workers

    def _read(self, shard: int, span: np.ndarray) -> bytes:
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.index.shard_paths[shard], "rb")  # noqa: SIM115 (kept open)
        f.seek(int(span[0]))
        return f.read(int(span[1]))

    def meta(self, i: int) -> dict:
        """The sample's json member: captions, hard_negatives, source fields."""
        return json.loads(self._read(int(self.index.shard[i]), self.index.meta[i]))

    def caption(self, i: int, seed: int) -> tuple[str, str | None]:
        meta = self.meta(i)
        return choose_caption(meta["captions"], meta["hard_negatives"], self.caption_policy, seed)

    def pixels(self, i: int, seed: int) -> torch.Tensor:
        rgb = decode_rgb(self._read(int(self.index.shard[i]), self.index.jpg[i]))
        # Seeded per sample so random crops do not depend on worker count or on where a run resumed.
        return seeded_call(self.transform, rgb, seed)

    def __getitem__(self, i: int):
        seed = sample_seed(self.seed, self.epoch, i)
        caption, negative = self.caption(i, seed)
        return self.pixels(i, seed), caption, negative, self.index.keys[i]


@dataclass
class Batch:
    """One micro-batch. Each tower gets its raw input, or, when its frozen part is cached, that part's output."""

    pixels: torch.Tensor | None  # (B, 3, H, W); None when the image features come from the cache
    text: dict[str, torch.Tensor] | None  # tokenized captions then hard negatives (2B rows with negatives, else B)
    negative_mask: torch.Tensor | None  # (B,) bool: which samples have a hard negative
    keys: list[str]
    image_frozen: torch.Tensor | None = None  # (B, D) cached image tower outputs, in place of pixels
    text_frozen: torch.Tensor | None = None  # (2B or B, D) cached frozen-text outputs, in place of text

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            move(self.pixels),
            None if self.text is None else {k: move(v) for k, v in self.text.items()},
            move(self.negative_mask),
            self.keys,
            move(self.image_frozen),
            move(self.text_frozen),
        )


class Collate:
    """Stacks images and tokenizes in the worker; hard negatives ride in the same text batch."""

    def __init__(self, tokenizer: Callable[[Sequence[str]], dict[str, torch.Tensor]], with_negatives: bool):
        self.tokenizer, self.with_negatives = tokenizer, with_negatives

    def __call__(self, items) -> Batch:
        pixels, captions, negatives, keys = zip(*items, strict=True)
        texts, mask = texts_with_negatives(captions, negatives, self.with_negatives)
        return Batch(torch.stack(pixels), self.tokenizer(texts), mask, list(keys))


def texts_with_negatives(captions: Sequence, negatives: Sequence, with_negatives: bool):
    """(captions then hard negatives, (B,) mask of samples that have one), or (captions, None) without negatives.

    A sample without a hard negative fills its slot with its own caption; the mask keeps it out of the loss.
    """
    texts = list(captions)
    if not with_negatives:
        return texts, None
    mask = torch.tensor([n is not None for n in negatives])
    texts += [n if n is not None else c for c, n in zip(captions, negatives, strict=True)]
    return texts, mask


def epoch_loader(
    samples: ShardSamples,
    plan: BatchPlan,
    collate: Collate,
    *,
    epoch: int,
    rank: int,
    start_step: int = 0,
    workers: int = 0,
) -> Iterator[Batch]:
    """This rank's micro-batches of one epoch, in order; `accumulation` consecutive ones make a step."""
    samples.epoch = epoch
    batches = plan.rank_batches(samples.seed, epoch, rank, start_step)
    if not batches:
        return iter(())
    loader = DataLoader(
        samples,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    return iter(loader)
