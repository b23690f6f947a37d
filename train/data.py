"""Training batches from the webdataset shards of data_prep: the only module that knows shards, ranks and workers.

The shards are plain tar files, so they are indexed once (byte offset and size of each sample's `jpg` and
`json` member) and read by offset. That buys what a streaming shuffle buffer cannot:
- one global order per epoch, a permutation drawn from (seed, epoch), the same for any number of processes:
  global batch t is the same samples with 1 or N processes, split into equal per-rank micro-batches;
- resume at any step, mid-epoch included, by skipping the batches already done;
- caption draws and augmentations seeded per (seed, epoch, sample), so workers never change the result.
Each rank reads only its own micro-batches; the loader is not passed to `accelerator.prepare`.

Training never runs on a silent subset: indexing checks every shard against what build_shards recorded and
raises one ShardIntegrityError naming each damaged shard, and a sample that fails to read or decode later
raises ShardReadError naming the shard file and the sample key.
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

from data_prep.image_bytes import DECODE_ERRORS
from data_prep.provenance import sha256_file
from data_prep.released_negatives import NEGATIVE_RULES, released_negative

CAPTION_POLICIES = ("random", "concat", "first")


class ShardError(ValueError):
    """A shard folder cannot be trained from; the message names the file and what is wrong."""


class ShardIntegrityError(ShardError):
    """Indexing found damage: every damaged shard, with what is wrong with it, in one error.

    `damage` maps a file (a shard, or a folder's sizes.json / manifest.json) to its problems.
    """

    def __init__(self, damage: dict[str, list[str]]):
        self.damage = {path: list(problems) for path, problems in damage.items()}
        super().__init__(_damage_report(self.damage))

    def __reduce__(self):  # rebuilt from `damage`, not from the formatted message
        return type(self), (self.damage,)


class ShardReadError(ShardError):
    """A sample failed to read or decode while training; names the shard file, the sample key and the member."""


def _damage_report(damage: dict[str, list[str]], per_file: int = 6) -> str:
    lines = [
        f"{len(damage)} damaged shard file(s); nothing was trained, since the readable rest would be a silent subset:"
    ]
    for path, problems in damage.items():
        shown = problems[:per_file]
        more = f"; and {len(problems) - per_file} more" if len(problems) > per_file else ""
        lines.append(f"  {path}: {'; '.join(shown)}{more}")
    lines.append(
        "  Check a folder with `python -m data_prep.inspect_shards FOLDER --verify`; to repair, delete the damaged "
        "shards and rerun data_prep.build_shards with the same arguments (it rewrites only missing shards)."
    )
    return "\n".join(lines)


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


# --- integrity: what build_shards wrote against what is on disk ------------------------------------------------

_BLOCK = 512  # tar block size
_END_OF_ARCHIVE = 2 * _BLOCK  # two zero blocks end every tar (POSIX); tarfile, GNU tar and bsdtar write them


@dataclass(frozen=True)
class ShardExpectation:
    """What data_prep.build_shards recorded about one shard (None: not recorded)."""

    samples: int | None = None  # sizes.json
    bytes: int | None = None  # manifest.json shards.per_shard
    sha256: str | None = None  # manifest.json shards.per_shard


@dataclass
class FolderPlan:
    """A shard folder's tar files, what build_shards recorded about them, and problems with the listing itself."""

    folder: Path
    tars: list[Path]
    expected: dict[str, ShardExpectation] | None  # None: no sizes.json (made by another tool)
    damage: dict[str, list[str]]


@dataclass
class ShardScan:
    path: Path
    members: dict[str, dict[str, tuple[int, int]]]  # key -> extension -> (byte offset, size)
    problems: list[str]
    sha256: str | None = None  # computed only when asked


UNRECORDED = ("refuse", "index")  # data.unrecorded_shards: a shard folder without build_shards' sizes.json


def plan_folder(folder: str | Path, unrecorded: str = "refuse") -> FolderPlan:
    """Lists a folder's shards and checks the listing against sizes.json: missing and unlisted shards.

    A folder without sizes.json cannot tell a complete folder from one with a shard deleted, so it is damage
    (`unrecorded="refuse"`), unless the caller asks to index what is there (`"index"`, another tool's shards),
    which gets the structural checks only.
    """
    folder = Path(folder)
    tars = sorted(folder.glob("*.tar"))
    damage: dict[str, list[str]] = {}
    expected = _read_expectations(folder, damage)
    if not tars and not expected:
        raise ShardError(f"{folder}: no .tar shards found (write them with python -m data_prep.build_shards)")
    if expected is None and unrecorded == "refuse" and not (folder / "sizes.json").exists():
        damage.setdefault(str(folder), []).append(
            "no sizes.json (build_shards writes it, with manifest.json): a deleted shard would go unnoticed, so "
            f"the {len(tars)} shards here may be a subset. Rebuild with data_prep.build_shards, or index what is "
            "there with data.unrecorded_shards=index (inspect_shards --reindex)"
        )
    if expected is not None:
        on_disk = {t.name for t in tars}
        for name, exp in expected.items():
            if name not in on_disk:
                damage.setdefault(str(folder / name), []).append(
                    f"missing (sizes.json lists it with {exp.samples} samples)"
                )
        for tar in tars:
            if tar.name not in expected:
                damage.setdefault(str(tar), []).append("not listed in sizes.json (a stray tar, or another build's)")
    return FolderPlan(folder, tars, expected, damage)


def _read_expectations(folder: Path, damage: dict[str, list[str]]) -> dict[str, ShardExpectation] | None:
    sizes_file, manifest_file = folder / "sizes.json", folder / "manifest.json"
    if not sizes_file.exists():
        return None
    try:
        sizes = json.loads(sizes_file.read_bytes().decode("utf-8"))
        if not isinstance(sizes, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()
        ):
            raise ValueError("expected an object of shard name -> sample count")
    except (OSError, ValueError) as err:
        damage.setdefault(str(sizes_file), []).append(f"unreadable: {err}")
        return None
    per_shard: dict = {}
    if manifest_file.exists():
        try:
            manifest = json.loads(manifest_file.read_bytes().decode("utf-8"))
            per_shard = manifest.get("shards", {}).get("per_shard", {}) if isinstance(manifest, dict) else {}
            if not isinstance(per_shard, dict):
                raise ValueError("shards.per_shard is not an object")
        except (OSError, ValueError, AttributeError) as err:
            damage.setdefault(str(manifest_file), []).append(f"unreadable: {err}")
            per_shard = {}
    out = {}
    for name, samples in sizes.items():
        record = per_shard.get(name) if isinstance(per_shard.get(name), dict) else {}
        out[name] = ShardExpectation(samples, record.get("bytes"), record.get("sha256"))
    return out


def scan_shard(path: str | Path, expected: ShardExpectation | None = None, *, sha256: bool = False) -> ShardScan:
    """Reads a shard's tar headers (no image is read) and checks its structure, and what build_shards recorded.

    Python's tarfile stops iterating, without an error, at a zeroed or unreadable header after the first one;
    so after the last member the rest of the file must be the end-of-archive zero blocks and nothing else.
    `sha256=True` also hashes the whole file (a full read) and compares it with manifest.json.
    """
    path = Path(path)
    scan = ShardScan(path, {}, [])
    try:
        size = path.stat().st_size
    except OSError as err:
        scan.problems.append(f"cannot read: {err.strerror or err}")
        return scan
    if expected is not None and expected.bytes is not None and size != expected.bytes:
        scan.problems.append(
            f"{size} bytes, manifest.json records {expected.bytes}" + (" (truncated)" if size < expected.bytes else "")
        )
    end: int | None = 0  # where the last complete member, padded to whole blocks, ends
    try:
        with tarfile.open(path, mode="r:") as tar:  # "r:": plain tar, no guessing of a compression
            for info in tar:
                if info.offset_data + info.size > size:
                    scan.problems.append(
                        f"truncated: member {info.name!r} (header at byte {info.offset}) needs {info.size} bytes "
                        f"from byte {info.offset_data}, the file ends at byte {size}"
                    )
                    end = None
                    break
                end = info.offset_data + -(-info.size // _BLOCK) * _BLOCK
                if not info.isfile():
                    continue
                key, _, ext = info.name.partition(".")
                parts = scan.members.setdefault(key, {})
                if ext in parts:
                    scan.problems.append(f"member {info.name!r} appears twice (again at byte {info.offset})")
                parts[ext] = (info.offset_data, info.size)
    except tarfile.TarError as err:
        scan.problems.append(f"unreadable tar header at byte {end}: {err}")
        end = None
    except OSError as err:
        scan.problems.append(f"cannot read at byte {end}: {err.strerror or err}")
        end = None
    if end is not None:
        problem = _archive_end_problem(path, end, size)
        if problem:
            scan.problems.append(problem)
    for key, parts in scan.members.items():
        missing = [ext for ext in ("jpg", "json") if ext not in parts]
        if missing:
            scan.problems.append(f"sample {key!r} has no {' or '.join(missing)} member")
    if expected is not None and expected.samples is not None and len(scan.members) != expected.samples:
        scan.problems.insert(0, f"sizes.json says {expected.samples} samples, found {len(scan.members)}")
    if sha256:
        try:
            scan.sha256 = sha256_file(path)
        except OSError as err:
            scan.problems.append(f"cannot read for sha256: {err.strerror or err}")
        else:
            if expected is not None and expected.sha256 and scan.sha256 != expected.sha256:
                scan.problems.append(
                    f"sha256 {scan.sha256[:16]}... differs from manifest.json's {expected.sha256[:16]}..."
                )
    return scan


def _archive_end_problem(path: Path, end: int, size: int) -> str | None:
    """What follows the last member tarfile read: None if only the end-of-archive zero blocks."""
    first_data = None
    with open(path, "rb") as f:
        f.seek(end)
        position = end
        while chunk := f.read(1 << 16):
            rest = chunk.lstrip(b"\0")
            if rest:
                first_data = position + len(chunk) - len(rest)
                break
            position += len(chunk)
        if first_data is None:
            if size - end < _END_OF_ARCHIVE:
                return f"truncated: the file ends at byte {size} without the end-of-archive blocks after byte {end}"
            return None
        unread = size - end
        if first_data > end:
            return (
                f"zeroed tar header at byte {end} ({first_data - end} zero bytes where a header was expected, then "
                f"data): reading stopped there, {unread} bytes not indexed"
            )
        f.seek(end)
        block = f.read(_BLOCK)
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        reason = "truncated header" if len(block) < _BLOCK else "not a header tarfile can follow"
    except tarfile.HeaderError as err:
        reason = str(err)
    return f"unreadable tar header at byte {end} ({reason}): reading stopped there, {unread} bytes not indexed"


def index_shards(
    folders: Sequence[str | Path], *, verify_sha256: bool = False, unrecorded: str = "refuse"
) -> ShardIndex:
    """Indexes every `*.tar` in the given folders (headers only: no image is read), checking each shard first.

    Always checked, at the cost of the header reads indexing needs anyway (plus one stat and a few KB at each
    shard's end): the tar structure (a zeroed or unreadable header, truncation, trailing data), samples without
    a jpg or json member, and, where build_shards wrote them, the per-shard sample counts of sizes.json (missing
    and unlisted shards too) and the byte sizes of manifest.json. `verify_sha256=True` also hashes every shard
    against manifest.json: a full read of the data (hundreds of GB for the real sets), so it is off by default
    and run on demand with `python -m data_prep.inspect_shards FOLDER --verify`, which also decodes every sample.
    Damage in a member's bytes that keeps the tar intact shows up when the sample is read (ShardReadError).

    Raises ShardIntegrityError (a ShardError, a ValueError) listing every damaged shard, or ShardError when a
    folder holds no shards.
    """
    paths: list[str] = []
    keys: list[str] = []
    shard_ids: list[int] = []
    jpg: list[tuple[int, int]] = []
    meta: list[tuple[int, int]] = []
    damage: dict[str, list[str]] = {}
    for folder in folders:
        plan = plan_folder(folder, unrecorded)
        damage.update(plan.damage)
        if plan.expected is None and unrecorded == "index" and not plan.damage:
            found = sum(len(scan_shard(t).members) for t in plan.tars)
            print(f"note: {folder}: no sizes.json; indexed what is there: {found} samples in {len(plan.tars)} shards")
        for tar_path in plan.tars:
            expected = plan.expected.get(tar_path.name) if plan.expected is not None else None
            scan = scan_shard(tar_path, expected, sha256=verify_sha256)
            if scan.problems:
                damage.setdefault(str(tar_path), []).extend(scan.problems)
                continue
            shard_id = len(paths)
            paths.append(str(tar_path))
            for key, parts in scan.members.items():
                keys.append(key)
                shard_ids.append(shard_id)
                jpg.append(parts["jpg"])
                meta.append(parts["json"])
    if damage:
        raise ShardIntegrityError(damage)
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


def draw_caption(meta: dict, policy: str, seed: int, negative_rule: str) -> tuple[str, str | None]:
    """(caption, hard negative or None) of a sample's json member under the caption policy and the negative rule:
    `token_rules` takes the negative build_shards wrote for the drawn caption, `released` derives it from the text
    trained on (for `concat`, the joined captions), as the authors' release does for the caption it draws."""
    caption, negative = choose_caption(meta["captions"], meta["hard_negatives"], policy, seed)
    if negative_rule == "released":
        return caption, released_negative(caption)
    if negative_rule != "token_rules":
        raise ValueError(f"unknown negative rule {negative_rule!r}; choose one of {', '.join(NEGATIVE_RULES)}")
    return caption, negative


def parse_meta(data: bytes) -> dict:
    """A sample's json member, checked for what training reads; ValueError naming the field otherwise."""
    meta = json.loads(data.decode("utf-8"))  # decoded first: a bad byte is reported with its position
    if not isinstance(meta, dict):
        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    captions, negatives = meta.get("captions"), meta.get("hard_negatives")
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"field 'captions' is {_describe(captions)}, expected a non-empty list of strings")
    if (
        not isinstance(negatives, list)
        or len(negatives) != len(captions)
        or not all(n is None or isinstance(n, str) for n in negatives)
    ):
        raise ValueError(
            f"field 'hard_negatives' is {_describe(negatives)}, expected a list of {len(captions)} strings or nulls"
        )
    return meta


def _describe(value) -> str:
    return "missing" if value is None else f"{type(value).__name__} {json.dumps(value)[:60]}"


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
        *,
        negative_rule: str = "token_rules",
    ):
        if caption_policy not in CAPTION_POLICIES:
            raise ValueError(f"unknown caption policy {caption_policy!r}; choose one of {', '.join(CAPTION_POLICIES)}")
        if negative_rule not in NEGATIVE_RULES:
            raise ValueError(f"unknown negative rule {negative_rule!r}; choose one of {', '.join(NEGATIVE_RULES)}")
        self.negative_rule = negative_rule
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

    def _read(self, i: int, member: str) -> bytes:
        """The raw bytes of sample i's `jpg` or `json` member; a failed or short read names shard and key."""
        shard = int(self.index.shard[i])
        offset, size = (int(v) for v in (self.index.jpg[i] if member == "jpg" else self.index.meta[i]))
        try:
            f = self._files.get(shard)
            if f is None:
                f = self._files[shard] = open(self.index.shard_paths[shard], "rb")  # noqa: SIM115 (kept open)
            f.seek(offset)
            data = f.read(size)
        except OSError as err:
            raise ShardReadError(f"{self._where(i, member)}: cannot read: {err}") from err
        if len(data) != size:
            raise ShardReadError(
                f"{self._where(i, member)}: only {len(data)} of {size} bytes at byte {offset} "
                "(the shard was truncated or replaced after indexing)"
            )
        return data

    def _where(self, i: int, member: str) -> str:
        return f"{self.index.shard_paths[int(self.index.shard[i])]}: sample {self.index.keys[i]!r}: {member} member"

    def meta(self, i: int) -> dict:
        """The sample's json member: captions, hard_negatives, source fields."""
        data = self._read(i, "json")
        try:
            return parse_meta(data)
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError included
            raise ShardReadError(f"{self._where(i, 'json')} (byte {int(self.index.meta[i][0])}): {err}") from None

    def caption(self, i: int, seed: int) -> tuple[str, str | None]:
        return draw_caption(self.meta(i), self.caption_policy, seed, self.negative_rule)

    def pixels(self, i: int, seed: int) -> torch.Tensor:
        data = self._read(i, "jpg")
        try:
            rgb = decode_rgb(data)
        except DECODE_ERRORS as err:
            where = f"{self._where(i, 'jpg')} (byte {int(self.index.jpg[i][0])}, {len(data)} bytes)"
            raise ShardReadError(f"{where}: does not decode: {type(err).__name__}: {err}") from None
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
    text: dict[str, torch.Tensor] | None  # tokenized captions, then the real hard negatives (B + k rows)
    negative_mask: torch.Tensor | None  # (B,) bool: which samples have a hard negative
    keys: list[str]
    image_frozen: torch.Tensor | None = None  # (B, D) cached image tower outputs, in place of pixels
    text_frozen: torch.Tensor | None = None  # (B + k, D) cached frozen-text outputs, in place of text
    # Hard negatives dropped because their tokens equal their caption's (the swap lies past the context length).
    negatives_identical: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def texts_encoded(self) -> int:
        """Rows the text tower (or, cached, its last trainable part) runs on: the captions plus the real negatives."""
        if self.text_frozen is not None:
            return int(self.text_frozen.shape[0])
        return int(self.text["input_ids"].shape[0]) if self.text is not None else 0

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
            self.negatives_identical,
        )


class Collate:
    """Stacks images and tokenizes in the worker; hard negatives ride in the same text batch."""

    def __init__(self, tokenizer: Callable[[Sequence[str]], dict[str, torch.Tensor]], with_negatives: bool):
        self.tokenizer, self.with_negatives = tokenizer, with_negatives

    def __call__(self, items) -> Batch:
        pixels, captions, negatives, keys = zip(*items, strict=True)
        texts, mask = texts_with_negatives(captions, negatives, self.with_negatives)
        tokens = self.tokenizer(texts)
        identical = 0
        if mask is not None:
            tokens, mask, identical = drop_identical_negatives(tokens, mask)
        return Batch(torch.stack(pixels), tokens, mask, list(keys), negatives_identical=identical)


def identical_token_rows(tokens: dict[str, torch.Tensor] | torch.Tensor, n: int) -> torch.Tensor:
    """(n,) bool: row i of a tokenized batch equals row n + i in every field (a caption and its hard negative, cut
    to the tokenizer's context length, are the same text to the model: no negative at all)."""
    fields = tokens.values() if isinstance(tokens, dict) else [tokens]
    rows = [v for v in fields if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == 2 * n]
    same = torch.ones(n, dtype=torch.bool) if rows else torch.zeros(n, dtype=torch.bool)  # nothing to compare: keep
    for value in rows:
        same &= (value[:n] == value[n:]).reshape(n, -1).all(dim=1).cpu()
    return same


def texts_with_negatives(captions: Sequence, negatives: Sequence, with_negatives: bool):
    """(captions then the real hard negatives, (B,) mask of samples that have one), or (captions, None) without.

    Only real negatives are texts: a sample without one adds no row, so the text tower encodes B + (number of
    negatives) texts, not 2B (the loss never looked at a sample's missing negative; `negatives_by_sample` puts the
    encoded negatives back in sample order).
    """
    texts = list(captions)
    if not with_negatives:
        return texts, None
    mask = torch.tensor([n is not None for n in negatives], dtype=torch.bool)
    texts += [n for n in negatives if n is not None]
    return texts, mask


def drop_identical_negatives(tokens, mask: torch.Tensor):
    """(tokens, mask, count) with every hard negative whose tokens equal its caption's removed: the rows from the
    tokenized batch (captions then the real negatives, as texts_with_negatives lays them out) and the sample from
    the mask. Such a negative is the same text to the model (the swap lies past the context length)."""
    n = mask.shape[0]
    owners = mask.nonzero().flatten()  # the sample of each negative row, in order
    k = owners.numel()
    fields = tokens.values() if isinstance(tokens, dict) else [tokens]
    compared = [v for v in fields if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n + k]
    if k == 0 or not compared:
        return tokens, mask, 0
    same = torch.ones(k, dtype=torch.bool)
    for value in compared:
        same &= (value[owners] == value[n:]).reshape(k, -1).all(dim=1).cpu()
    if not same.any():
        return tokens, mask, 0
    keep = torch.cat([torch.ones(n, dtype=torch.bool), ~same])

    def kept(value):
        return value[keep] if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n + k else value

    tokens = {name: kept(v) for name, v in tokens.items()} if isinstance(tokens, dict) else kept(tokens)
    mask = mask.clone()
    mask[owners[same]] = False
    return tokens, mask, int(same.sum())


def negatives_by_sample(negatives: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, D) from the (k, D) features of the real negatives (mask's True samples, in order): each at its sample's
    row, zeros where a sample has none (the loss masks those rows out, so they never count). Differentiable: the
    gradient of each row goes back to its negative."""
    out = negatives.new_zeros(mask.shape[0], *negatives.shape[1:])
    return out.index_put((mask.nonzero().flatten(),), negatives)


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
