"""LCS-558K / DataMix-665K -> image-caption webdataset shards with hard-negative captions.

    python -m data_prep.build_shards \\
        --dataset lcs558k --json blip_laion_cc_sbu_558k.json --image-root LLaVA-Pretrain/images \\
        --dataset mix665k --json llava_v1_5_mix665k.json --image-root playground/data \\
        --out data/llava_shards --workers 8

Several inputs go into one output, in the order given. Shard k always holds the k-th slice of the
convertible items, whatever the worker count, so the output is the same with 1 or N workers. Each
shard is written to a temporary name and renamed, then recorded in `.build/`; a rerun after a crash
keeps recorded shards and rewrites the rest. Every skipped item is listed in `skipped.jsonl`.

Hostile input is skipped with a reason, never read or crashed on: an image path must resolve (symlinks
followed) inside its --image-root, paths no file can have (NUL byte, over-long name) are `bad_image_path`,
an image over --max-pixels is refused from its header before decoding, and a file over --max-image-bytes
(default 64 MiB; LLaVA's largest images are a few MB) from its size before a byte is read. An input JSON that does not
parse stops the run with one line naming the file and the position. manifest.json records every shard's
sample count, size and sha256, which training and `inspect_shards --verify` check.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import gc
import hashlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm
from webdataset import TarWriter

from data_prep.folder_lock import FolderBusy, FolderLock
from data_prep.image_bytes import (
    DEFAULT_MAX_PIXELS,
    TooManyPixels,
    UndecodableImage,
    to_shard_jpeg,
    warm_up_image_codecs,
)
from data_prep.llava_items import (
    DATASETS,
    KEY_PHRASES,
    KEY_PHRASES_PLUS,
    SKIP_REASONS,
    KeyPhraseStats,
    Sample,
    SampleBuilder,
    Skip,
)
from data_prep.negatives import HARD_NEGATIVES, make_negative
from data_prep.provenance import code_version, file_digest, sha256_file
from data_prep.released_negatives import released_negative
from data_prep.strict_json import loads as loads_json
from data_prep.strict_json import repeated_keys

BUILD_DIR = ".build"  # plan and per-shard records that make a rerun resume
DEFAULT_MAX_IMAGE_BYTES = 64 << 20  # LLaVA's largest images are a few MB; a bigger ".jpg" is no training image


class StrictSkip(RuntimeError):
    """--strict: the first item that would be skipped stops the conversion."""


class InputFileError(ValueError):
    """An input JSON that cannot be used at all; the message names the file and the position."""


@dataclass(frozen=True)
class Input:
    dataset: str
    json: Path
    image_root: Path


@dataclass(frozen=True)
class ShardJob:
    index: int
    samples: list[Sample]
    image_roots: dict[str, str]
    out: str
    name: str
    hard_negatives: str
    max_image_side: int | None
    max_pixels: int
    strict: bool
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @property
    def tar_name(self) -> str:
        return f"{self.name}-{self.index:06d}.tar"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m data_prep.build_shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", required=True, choices=DATASETS, help="repeat per input")
    parser.add_argument("--json", action="append", required=True, type=Path, help="the dataset's JSON list")
    parser.add_argument("--image-root", action="append", required=True, type=Path, help="folder `image` is under")
    parser.add_argument("--out", required=True, type=Path, help="output folder for shards and manifest")
    parser.add_argument("--name", default="llava", help="shard file prefix: <name>-000000.tar")
    parser.add_argument("--shard-size", type=int, default=10000, help="convertible items per shard")
    parser.add_argument("--workers", type=int, default=1, help="processes writing shards")
    parser.add_argument("--hard-negatives", default="left-right", choices=[*HARD_NEGATIVES, "none"])
    parser.add_argument("--max-image-side", type=int, default=None, help="downscale larger images to this side")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="skip images with more pixels (width x height, read from the header before decoding)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help=f"skip image files larger than this, before reading them (default {DEFAULT_MAX_IMAGE_BYTES >> 20} MiB)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first item that would be skipped")
    parser.add_argument("--overwrite", action="store_true", help="discard an earlier conversion of other inputs")
    args = parser.parse_args(argv)
    if not len(args.dataset) == len(args.json) == len(args.image_root):
        parser.error("give one --json and one --image-root per --dataset")
    problems = [f"{p}: not found" for p in args.json if not p.is_file()]
    problems += [f"{p}: image root is not a folder" for p in args.image_root if not p.is_dir()]
    if args.shard_size <= 0 or args.workers <= 0:
        problems.append("--shard-size and --workers must be positive")
    if args.max_image_side is not None and args.max_image_side <= 0:
        problems.append("--max-image-side must be positive")
    if args.max_pixels <= 0:
        problems.append("--max-pixels must be positive")
    if args.max_image_bytes <= 0:
        problems.append("--max-image-bytes must be positive")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    inputs = [Input(d, j, r) for d, j, r in zip(args.dataset, args.json, args.image_root, strict=True)]
    lock = FolderLock(args.out, "build_shards")  # one writer per --out: a second build stops before writing
    try:
        lock.acquire()
        samples, skips, stats, digests = read_inputs(inputs, args.strict)
        jobs = plan_shards(samples, inputs, args)
        fingerprint = plan_fingerprint(digests, inputs, args)
        prepare_output(args.out, fingerprint, args.overwrite)
        records = write_shards(jobs, args.out, args.workers)
        manifest = write_outputs(args, inputs, digests, stats, skips, records, time.perf_counter() - started)
    except FolderBusy as err:
        print(f"build_shards: {err}", file=sys.stderr)
        return 2
    except StrictSkip as err:
        print(f"build_shards: --strict: {err}", file=sys.stderr)
        return 1
    except InputFileError as err:
        print(f"build_shards: {err}", file=sys.stderr)
        return 2
    except OutputMismatch as err:
        print(f"build_shards: {err}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    print_summary(manifest, args.out)
    return 0


# --- reading ------------------------------------------------------------------------------------------


def read_inputs(
    inputs: list[Input], strict: bool
) -> tuple[list[Sample], list[Skip], dict[str, KeyPhraseStats], list[dict]]:
    samples: list[Sample] = []
    skips: list[Skip] = []
    stats: dict[str, KeyPhraseStats] = {}
    digests = []
    builder = SampleBuilder()
    for inp in inputs:
        digests.append(file_digest(inp.json))
        items, repeats = load_items(inp.json)
        phrase_stats = stats.setdefault(inp.dataset, KeyPhraseStats())
        for index, item in enumerate(tqdm(items, desc=f"read {inp.json.name}", unit="item", leave=False)):
            phrase_stats.add(item)
            twice = repeated_keys(item) if repeats else []
            if twice:  # json keeps the last value, other readers the first: an ambiguous item is no sample
                raw_id = item.get("id") if isinstance(item, dict) else None
                detail = f"a key given twice: {'; '.join(twice)}"
                result: Sample | Skip = Skip(inp.dataset, index, None if raw_id is None else str(raw_id),
                                             "malformed_item", detail)  # fmt: skip
            else:
                result = builder.add(inp.dataset, index, item)
            if isinstance(result, Skip):
                if strict:
                    raise StrictSkip(_describe_skip(result, inp.json))
                skips.append(result)
            else:
                samples.append(result)
        del items  # the raw list can be several GB; workers only need the compact samples
    return samples, skips, stats, digests


def load_items(path: Path) -> tuple[list, int]:
    """The input's JSON list and how many of its objects repeat a key (data_prep.strict_json); InputFileError naming
    the file and the position when it cannot be one."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if not raw.strip():
        raise InputFileError(f"{path}: empty file ({len(raw)} bytes), expected a JSON list of items")
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # tolerated, as most readers do
    try:
        text = raw[start:].decode("utf-8") if start else raw.decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        line, column = raw.count(b"\n", 0, at) + 1, at - (raw.rfind(b"\n", 0, at) + 1) + 1
        raise InputFileError(
            f"{path}: not UTF-8 at byte {at} (line {line}, column {column}): {err.reason} "
            f"(byte 0x{raw[at]:02x}); JSON files must be UTF-8"
        ) from None
    del raw  # the 665K file is about 1 GB: do not hold it twice while parsing
    try:
        items, repeats = loads_json(text)
    except json.JSONDecodeError as err:
        ends = " (the file ends there: truncated?)" if err.pos >= len(text.rstrip()) else ""
        raise InputFileError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno} (character {err.pos}): {err.msg}{ends}"
        ) from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply to parse") from None
    if not isinstance(items, list):
        kind = {dict: "object", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(items), "null")
        raise InputFileError(f"{path}: expected a JSON list of items, got a JSON {kind}")
    return items, repeats


def _describe_skip(skip: Skip, where: Path | str) -> str:
    return f"{where}: item {skip.index} (id {skip.id!r}): {skip.reason}: {skip.detail}"


def plan_shards(samples: list[Sample], inputs: list[Input], args: argparse.Namespace) -> list[ShardJob]:
    roots = {inp.dataset: str(inp.image_root) for inp in inputs}
    if len(roots) != len(inputs):
        raise SystemExit("each --dataset may be given once")
    size = args.shard_size
    return [
        ShardJob(
            index=k,
            samples=samples[start : start + size],
            image_roots=roots,
            out=str(args.out),
            name=args.name,
            hard_negatives=args.hard_negatives,
            max_image_side=args.max_image_side,
            max_pixels=args.max_pixels,
            strict=args.strict,
            max_image_bytes=args.max_image_bytes,
        )
        for k, start in enumerate(range(0, len(samples), size))
    ]


def plan_fingerprint(digests: list[dict], inputs: list[Input], args: argparse.Namespace) -> str:
    """Everything that decides the shards' bytes; a rerun may resume only under the same fingerprint."""
    decisive = {
        "inputs": [[i.dataset, d["sha256"], str(i.image_root.resolve())] for i, d in zip(inputs, digests, strict=True)],
        "name": args.name,
        "shard_size": args.shard_size,
        "hard_negatives": args.hard_negatives,
        "max_image_side": args.max_image_side,
        "max_pixels": args.max_pixels,
    }
    if args.max_image_bytes != DEFAULT_MAX_IMAGE_BYTES:  # only then: earlier builds keep their fingerprint
        decisive["max_image_bytes"] = args.max_image_bytes
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


# --- writing ------------------------------------------------------------------------------------------


class OutputMismatch(RuntimeError):
    pass


def prepare_output(out: Path, fingerprint: str, overwrite: bool) -> None:
    build = out / BUILD_DIR
    plan_file = build / "plan.json"
    if plan_file.exists():
        previous = json.loads(plan_file.read_text()).get("fingerprint")
        if previous != fingerprint:
            if not overwrite:
                raise OutputMismatch(
                    f"{out} holds a conversion of other inputs or settings; pass --overwrite or pick a new --out"
                )
            shutil.rmtree(build)
            for stale in [*out.glob("*.tar"), *(out / n for n in ("sizes.json", "manifest.json", "skipped.jsonl"))]:
                stale.unlink(missing_ok=True)
    elif any(out.glob("*.tar")) and not overwrite:
        raise OutputMismatch(f"{out} already holds shards not made by this tool; pass --overwrite or pick a new --out")
    build.mkdir(parents=True, exist_ok=True)
    for partial in out.glob("*.tmp"):
        partial.unlink()  # half-written by a run that was killed
    _write_atomic(plan_file, json.dumps({"fingerprint": fingerprint}))


def write_shards(jobs: list[ShardJob], out: Path, workers: int) -> list[dict]:
    records: dict[int, dict] = {}
    todo = []
    for job in jobs:
        record = _finished_record(out, job)
        if record is not None:
            records[job.index] = record
        else:
            todo.append(job)
    total = sum(len(j.samples) for j in todo)
    skipped: Counter[str] = Counter()
    with tqdm(total=total, desc="shards", unit="sample", dynamic_ncols=True) as bar:
        if records:
            bar.write(f"resuming: {len(records)} of {len(jobs)} shards already written")

        def progress(done: int, reason: str | None) -> None:
            if reason:
                skipped[reason] += 1
                bar.set_postfix(skipped=sum(skipped.values()), refresh=False)
            bar.update(done)

        if workers == 1 or len(todo) <= 1:
            for job in todo:
                records[job.index] = write_shard(job, progress)
        else:
            records.update(_write_in_pool(todo, min(workers, len(todo)), progress))
    return [records[job.index] for job in jobs]


def _finished_record(out: Path, job: ShardJob) -> dict | None:
    """The record of a shard an earlier run finished, if the shard is still there at its recorded size."""
    record_file, tar = out / BUILD_DIR / f"{job.index:06d}.json", out / job.tar_name
    if not (record_file.exists() and tar.exists()):
        return None
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except ValueError:
        return None  # records are written atomically; an unreadable one means rewrite the shard
    if "sha256" not in record:  # recorded by an older build_shards: hash it once, so the manifest is complete
        record |= {"bytes": tar.stat().st_size, "sha256": sha256_file(tar)}
        _write_atomic(record_file, json.dumps(record, ensure_ascii=False))
    # A size check is free; a full re-hash of every kept shard would read the whole output again.
    return record if tar.stat().st_size == record["bytes"] else None


def _write_in_pool(jobs: list[ShardJob], workers: int, progress: Callable[[int, str | None], None]) -> dict[int, dict]:
    # fork: workers start at once (spawn would re-import torch via webdataset in each, seconds apiece);
    # the raw JSON is already freed, and workers touch only their job and the image files.
    context = mp.get_context("fork")
    events = context.Queue()
    warm_up_image_codecs()  # once here, not once per worker
    # The parent holds torch's and the plan's objects; frozen, a worker's full garbage collections skip them
    # instead of walking them (and copying every page they touch).
    gc.freeze()
    try:
        with context.Pool(workers, initializer=_init_worker, initargs=(events,)) as pool:
            pending = {job.index: pool.apply_async(_write_shard_in_worker, (job,)) for job in jobs}
            results = {}
            while pending:
                try:
                    while True:
                        _replay(progress, *events.get(timeout=0.1))
                except queue.Empty:
                    pass
                for index in [i for i, r in pending.items() if r.ready()]:
                    results[index] = pending.pop(index).get()  # re-raises a worker's StrictSkip here
            pool.close()  # workers leave on their own; the with-block's terminate() is then a no-op
            pool.join()
            while not events.empty():
                _replay(progress, *events.get())
    finally:
        gc.unfreeze()
    return results


def _replay(progress: Callable[[int, str | None], None], done: int, skipped: dict[str, int]) -> None:
    """One batched progress event from a worker, passed on as the per-item calls it stands for."""
    for reason, count in skipped.items():
        for _ in range(count):
            progress(1, reason)
        done -= count
    if done:
        progress(done, None)


_worker_events = None
PROGRESS_EVERY_S = 0.2  # a worker reports progress at most this often (and when its shard is done)


def _init_worker(events) -> None:
    global _worker_events
    _worker_events = events
    # A forked worker inherits the parent's Python SIGTERM handler (e.g. a trainer's checkpoint-on-TERM flag);
    # with it, Pool.terminate() after an error could not stop a worker.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _BatchedProgress:
    """Counts a worker's items and sends one event per PROGRESS_EVERY_S, not one per item.

    An event per item cost a pickle, a cross-process lock and a feeder-thread wake-up in the worker and a
    queue read in the parent for every sample (on the medium world, about 0.15 s of the parent's CPU and a
    few % of the workers'), and the parent's share grows with the worker count.
    """

    def __init__(self, events) -> None:
        self.events, self.done, self.skipped, self.last = events, 0, Counter(), time.monotonic()

    def __call__(self, done: int, reason: str | None) -> None:
        self.done += done
        if reason:
            self.skipped[reason] += 1
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.done:
            self.events.put((self.done, dict(self.skipped)))
        self.done, self.skipped, self.last = 0, Counter(), time.monotonic()


def _write_shard_in_worker(job: ShardJob) -> dict:
    report = _BatchedProgress(_worker_events)
    try:
        return write_shard(job, report)
    finally:
        report.flush()


class _HashingWriter:
    """Hashes and counts the bytes the tar writer streams (sequentially) to the file: sha256 without a re-read."""

    def __init__(self, f) -> None:
        self.f, self.digest, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


class _ImageSkip(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def image_path(root: Path, image: str) -> Path:
    """The file an item's `image` names, symlinks resolved; it must lie inside `root` (itself resolved)."""
    if "\0" in image:
        raise _ImageSkip("bad_image_path", f"image path {image!r} contains a NUL byte")
    try:
        resolved = (root / image).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a symlink loop, on Python 3.11
        raise _ImageSkip("bad_image_path", f"{root / image}: {err}") from None
    if not resolved.is_relative_to(root):
        raise _ImageSkip("outside_image_root", f"{image!r} resolves to {resolved}, outside the image root {root}")
    return resolved


def read_image_file(path: Path, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """A regular file's bytes; every per-file failure becomes a skip reason, none stops the conversion. A file over
    `max_bytes` is skipped from its size, unread (a 3 GB file named .jpg would otherwise be read whole)."""
    try:
        # O_NONBLOCK: a FIFO must not hang the worker; O_NOFOLLOW: the path was resolved, a symlink now is a swap.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _ImageSkip("missing_file", f"{path} not found") from None
    except OSError as err:
        reason = "bad_image_path" if err.errno in (errno.ENAMETOOLONG, errno.ELOOP) else "unreadable_image"
        raise _ImageSkip(reason, f"{path}: {err.strerror or err}") from None
    except ValueError as err:  # a name the file system encoding cannot express
        raise _ImageSkip("bad_image_path", f"{path!r}: {err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _ImageSkip("missing_file", f"{path} is a folder, not an image file")
        if not stat.S_ISREG(mode):
            raise _ImageSkip("unreadable_image", f"{path} is not a regular file")
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise _ImageSkip(
                "too_large_file", f"{path}: {size:,} bytes, over --max-image-bytes {max_bytes:,}; not read"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise _ImageSkip("unreadable_image", f"{path}: {err.strerror or err}") from None
    finally:
        os.close(fd)


def write_shard(job: ShardJob, progress: Callable[[int, str | None], None]) -> dict:
    """Writes one shard to a temporary name, renames it, then records it as finished."""
    out = Path(job.out)
    final, partial = out / job.tar_name, out / f"{job.tar_name}.tmp"
    axis = job.hard_negatives if job.hard_negatives in HARD_NEGATIVES else None
    roots = {dataset: Path(root).resolve() for dataset, root in job.image_roots.items()}
    record: dict[str, Any] = {"shard": job.tar_name, "samples": 0, "by_dataset": {}, "skipped": [], "re_encoded": 0}
    record |= {"captions": 0, "captions_with_negative": 0, "samples_with_negative": 0, "negative_rules": {}}
    try:
        with open(partial, "wb") as f:
            hashing = _HashingWriter(f)
            writer = TarWriter(hashing, encoder=False, mtime=0)  # fixed mtime: identical bytes on every run
            try:
                _write_samples(job, writer, record, roots, axis, progress)
            finally:
                # Also on an error: a tar stream left to the garbage collector writes into the closed file.
                writer.close()
            f.flush()
            os.fsync(f.fileno())  # the record below promises a complete shard; it must be on disk first
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    record |= {"bytes": hashing.bytes, "sha256": hashing.digest.hexdigest()}
    os.replace(partial, final)
    _write_atomic(out / BUILD_DIR / f"{job.index:06d}.json", json.dumps(record, ensure_ascii=False))
    return record


def _write_samples(
    job: ShardJob,
    writer: TarWriter,
    record: dict[str, Any],
    roots: dict[str, Path],
    axis: str | None,
    progress: Callable[[int, str | None], None],
) -> None:
    for sample in job.samples:
        path: Path | str = sample.image
        try:
            path = image_path(roots[sample.dataset], sample.image)
            jpeg, re_encoded = to_shard_jpeg(
                read_image_file(path, job.max_image_bytes), job.max_image_side, job.max_pixels
            )
        except _ImageSkip as err:
            skip = Skip(sample.dataset, sample.index, sample.id, err.reason, err.detail)
        except TooManyPixels as err:
            skip = Skip(sample.dataset, sample.index, sample.id, "too_many_pixels", f"{path}: {err}")
        except UndecodableImage as err:
            skip = Skip(sample.dataset, sample.index, sample.id, "undecodable_image", f"{path}: {err}")
        else:
            made = [make_negative(c, axis) if axis else (None, "off") for c in sample.captions]
            negatives = [negative for negative, _ in made]
            released = [released_negative(c) for c in sample.captions]  # the authors' rule, counted beside ours
            meta = {
                "id": sample.id,
                "source": sample.dataset,
                "image": sample.image,
                "captions": list(sample.captions),
                "hard_negatives": negatives,
                # the rule that made each negative, or why there is none (data_prep.negatives.make_negative)
                "negative_rules": [rule for _, rule in made],
            }
            writer.write(
                {
                    "__key__": sample.key,
                    "jpg": jpeg,
                    "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                    "txt": sample.captions[0].encode("utf-8"),
                }
            )
            with_negative = sum(n is not None for n in negatives)
            record["samples"] += 1
            record["by_dataset"][sample.dataset] = record["by_dataset"].get(sample.dataset, 0) + 1
            record["re_encoded"] += re_encoded
            record["captions"] += len(negatives)
            record["captions_with_negative"] += with_negative
            record["samples_with_negative"] += with_negative > 0
            for _, rule in made:
                record["negative_rules"][rule] = record["negative_rules"].get(rule, 0) + 1
            count_released(record, sample.captions, negatives, released)
            progress(1, None)
            continue
        if job.strict:
            raise StrictSkip(_describe_skip(skip, f"{sample.dataset} input"))
        record["skipped"].append(skip.as_record())
        progress(1, skip.reason)


def count_released(record: dict[str, Any], captions, negatives, released) -> None:
    """Adds one sample's counts under the authors' released rule, and the negatives of either rule that CLIP's
    tokenizer cuts to its caption's tokens (the swap lies past 77 tokens: training drops them, decided on the run's
    own tokenizer; the manifest counts CLIP's, which needs no download)."""
    counts = record.setdefault("released", dict.fromkeys(RELEASED_COUNTS, 0))
    with_released = sum(n is not None for n in released)
    counts["captions_with_negative"] += with_released
    counts["samples_with_negative"] += with_released > 0
    counts["captions_differing_from_token_rules"] += sum(a != b for a, b in zip(negatives, released, strict=True))
    for rule, made in (("token_rules", negatives), ("released", released)):
        counts[f"identical_after_clip_truncation_{rule}"] += sum(
            n is not None and clip_tokens(c) == clip_tokens(n) for c, n in zip(captions, made, strict=True)
        )


RELEASED_COUNTS = (
    "captions_with_negative",
    "samples_with_negative",
    "captions_differing_from_token_rules",
    "identical_after_clip_truncation_token_rules",
    "identical_after_clip_truncation_released",
)
CLIP_CONTEXT = 77
_CLIP_TOKENIZER = None


def clip_tokens(text: str) -> tuple[int, ...]:
    """open_clip's CLIP BPE tokens of `text`, cut to 77 as CLIP's tokenizer does (bundled with open_clip)."""
    global _CLIP_TOKENIZER
    if _CLIP_TOKENIZER is None:
        from open_clip.tokenizer import SimpleTokenizer

        _CLIP_TOKENIZER = SimpleTokenizer(context_length=CLIP_CONTEXT)
    return tuple(_CLIP_TOKENIZER([text])[0].tolist())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- reporting ----------------------------------------------------------------------------------------


def write_outputs(
    args: argparse.Namespace,
    inputs: list[Input],
    digests: list[dict],
    stats: dict[str, KeyPhraseStats],
    skips: list[Skip],
    records: list[dict],
    seconds: float,
) -> dict:
    out = args.out
    all_skips = [s.as_record() for s in skips] + [s for r in records for s in r["skipped"]]
    all_skips.sort(key=lambda s: (DATASETS.index(s["dataset"]), s["index"]))
    _write_atomic(out / "skipped.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in all_skips))
    _write_atomic(out / "sizes.json", json.dumps({r["shard"]: r["samples"] for r in records}, indent=1))

    reasons = Counter(s["reason"] for s in all_skips)
    written = sum(r["samples"] for r in records)
    per_dataset = {}
    for inp in inputs:
        ds_written = sum(r["by_dataset"].get(inp.dataset, 0) for r in records)
        ds_skips = Counter(s["reason"] for s in all_skips if s["dataset"] == inp.dataset)
        per_dataset[inp.dataset] = {
            "items_read": ds_written + sum(ds_skips.values()),
            "samples_written": ds_written,
            "skipped": {r: ds_skips[r] for r in SKIP_REASONS},
        }
    manifest = {
        "tool": "data_prep.build_shards",
        "code": code_version(),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"json": [str(p) for p in args.json], "image_root": [str(p) for p in args.image_root]},
        "inputs": [
            {"dataset": i.dataset, "json": d, "image_root": str(i.image_root)}
            for i, d in zip(inputs, digests, strict=True)
        ],
        "counts": {
            "items_read": written + len(all_skips),
            "samples_written": written,
            "skipped_total": len(all_skips),
            "skipped": {r: reasons[r] for r in SKIP_REASONS},
            "per_dataset": per_dataset,
        },
        "key_phrases": {
            "phrases": list(KEY_PHRASES),
            "rule": "case-insensitive substring match on the raw items; instances and captions count gpt answers",
            # B.2 does not name "to the right": the *_plus_to_the_right counts add it, to see which
            # definition reproduces the paper's numbers on the real data
            "phrases_plus_to_the_right": list(KEY_PHRASES_PLUS),
            "paper_real_data": {
                "mix665k": {"instances": 12957, "instances_with_image": 12658, "captions": 13473},
                "lcs558k": {"instances": 560, "captions": 560},
            },
            **{ds: asdict(s) for ds, s in stats.items()},
        },
        "hard_negatives": {
            "axis": args.hard_negatives,
            "captions": sum(r["captions"] for r in records),
            "captions_with_negative": sum(r["captions_with_negative"] for r in records),
            "samples_with_negative": sum(r["samples_with_negative"] for r in records),
            # captions per rule that made the negative, or per reason there is none (shards written by
            # an older build_shards have no rules recorded and are not counted here)
            "rules": dict(
                sorted(_sum_counts(r.get("negative_rules", {}) for r in records).items(), key=lambda kv: -kv[1])
            ),
            # the authors' released rule on the same captions (data.negative_rule=released applies it at training),
            # and either rule's negatives that CLIP's 77-token tokenizer makes identical to their caption
            "released": {k: sum(r.get("released", {}).get(k, 0) for r in records) for k in RELEASED_COUNTS},
        },
        "images": {"kept_original_bytes": written - sum(r["re_encoded"] for r in records)}
        | {"re_encoded": sum(r["re_encoded"] for r in records)},
        "shards": {
            "count": len(records),
            "files": [r["shard"] for r in records],
            # checked by train.data.index_shards (counts, bytes) and inspect_shards --verify (sha256 too)
            "per_shard": {r["shard"]: {k: r[k] for k in ("samples", "bytes", "sha256")} for r in records},
        },
        "seconds": round(seconds, 3),
        "samples_per_second": round(written / seconds, 1) if seconds > 0 else None,
    }
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def _sum_counts(counts) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return total


def print_summary(manifest: dict, out: Path) -> None:
    counts = manifest["counts"]
    print(f"wrote {counts['samples_written']} samples in {manifest['shards']['count']} shards to {out}")
    print(f"  items read {counts['items_read']}, skipped {counts['skipped_total']}: ", end="")
    print(", ".join(f"{r} {n}" for r, n in counts["skipped"].items() if n) or "none")
    for dataset, stats in manifest["key_phrases"].items():
        if dataset in DATASETS:
            plus = (
                f"{stats['instances_plus_to_the_right']} ({stats['instances_with_image_plus_to_the_right']}), "
                f"{stats['captions_plus_to_the_right']}"
            )
            print(
                f"  {dataset} key phrases: {stats['instances']} instances ({stats['instances_with_image']} with image), "
                f"{stats['captions']} captions; with 'to the right' added: {plus}"
            )
    neg = manifest["hard_negatives"]
    print(
        f"  hard negatives ({neg['axis']}): {neg['captions_with_negative']} of {neg['captions']} captions, "
        f"{neg['samples_with_negative']} samples"
    )
    if neg["rules"]:
        print("  negative rules: " + ", ".join(f"{rule} {n}" for rule, n in neg["rules"].items()))
    released = neg.get("released", {})
    if released:
        print(
            f"  released rule: {released['captions_with_negative']} captions with a negative, "
            f"{released['captions_differing_from_token_rules']} differ from ours; identical to their caption after "
            f"CLIP's 77 tokens: ours {released['identical_after_clip_truncation_token_rules']}, released "
            f"{released['identical_after_clip_truncation_released']}"
        )
    print(f"  {manifest['seconds']} s, {manifest['samples_per_second']} samples/s; details in {out / 'manifest.json'}")


if __name__ == "__main__":
    sys.exit(main())
