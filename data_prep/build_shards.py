"""LCS-558K / DataMix-665K -> image-caption webdataset shards with hard-negative captions.

    python -m data_prep.build_shards \\
        --dataset lcs558k --json blip_laion_cc_sbu_558k.json --image-root LLaVA-Pretrain/images \\
        --dataset mix665k --json llava_v1_5_mix665k.json --image-root playground/data \\
        --out data/llava_shards --workers 8

Several inputs go into one output, in the order given. Shard k always holds the k-th slice of the
convertible items, whatever the worker count, so the output is the same with 1 or N workers. Each
shard is written to a temporary name and renamed, then recorded in `.build/`; a rerun after a crash
keeps recorded shards and rewrites the rest. Every skipped item is listed in `skipped.jsonl`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm
from webdataset import TarWriter

from data_prep.image_bytes import UndecodableImage, to_shard_jpeg
from data_prep.llava_items import DATASETS, SKIP_REASONS, KeyPhraseStats, Sample, SampleBuilder, Skip
from data_prep.negatives import HARD_NEGATIVES
from data_prep.provenance import code_version, file_digest

BUILD_DIR = ".build"  # plan and per-shard records that make a rerun resume


class StrictSkip(RuntimeError):
    """--strict: the first item that would be skipped stops the conversion."""


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
    strict: bool

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
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    inputs = [Input(d, j, r) for d, j, r in zip(args.dataset, args.json, args.image_root, strict=True)]
    try:
        samples, skips, stats, digests = read_inputs(inputs, args.strict)
        jobs = plan_shards(samples, inputs, args)
        fingerprint = plan_fingerprint(digests, inputs, args)
        prepare_output(args.out, fingerprint, args.overwrite)
        records = write_shards(jobs, args.out, args.workers)
    except StrictSkip as err:
        print(f"build_shards: --strict: {err}", file=sys.stderr)
        return 1
    except OutputMismatch as err:
        print(f"build_shards: {err}", file=sys.stderr)
        return 2
    manifest = write_outputs(args, inputs, digests, stats, skips, records, time.perf_counter() - started)
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
        with open(inp.json, encoding="utf-8") as f:
            items = json.load(f)
        if not isinstance(items, list):
            raise SystemExit(f"{inp.json}: expected a JSON list of items, got {type(items).__name__}")
        phrase_stats = stats.setdefault(inp.dataset, KeyPhraseStats())
        for index, item in enumerate(tqdm(items, desc=f"read {inp.json.name}", unit="item", leave=False)):
            phrase_stats.add(item)
            result = builder.add(inp.dataset, index, item)
            if isinstance(result, Skip):
                if strict:
                    raise StrictSkip(_describe_skip(result, inp.json))
                skips.append(result)
            else:
                samples.append(result)
        del items  # the raw list can be several GB; workers only need the compact samples
    return samples, skips, stats, digests


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
            strict=args.strict,
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
    }
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
        record_file = out / BUILD_DIR / f"{job.index:06d}.json"
        if record_file.exists() and (out / job.tar_name).exists():
            records[job.index] = json.loads(record_file.read_text())
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


def _write_in_pool(jobs: list[ShardJob], workers: int, progress: Callable[[int, str | None], None]) -> dict[int, dict]:
    # fork: workers start at once (spawn would re-import torch via webdataset in each, seconds apiece);
    # the raw JSON is already freed, and workers touch only their job and the image files.
    context = mp.get_context("fork")
    events = context.Queue()
    with context.Pool(workers, initializer=_init_worker, initargs=(events,)) as pool:
        pending = {job.index: pool.apply_async(_write_shard_in_worker, (job,)) for job in jobs}
        results = {}
        while pending:
            try:
                while True:
                    progress(*events.get(timeout=0.1))
            except queue.Empty:
                pass
            for index in [i for i, r in pending.items() if r.ready()]:
                results[index] = pending.pop(index).get()  # re-raises a worker's StrictSkip here
        while not events.empty():
            progress(*events.get())
    return results


_worker_events = None


def _init_worker(events) -> None:
    global _worker_events
    _worker_events = events


def _write_shard_in_worker(job: ShardJob) -> dict:
    return write_shard(job, lambda done, reason: _worker_events.put((done, reason)))


def write_shard(job: ShardJob, progress: Callable[[int, str | None], None]) -> dict:
    """Writes one shard to a temporary name, renames it, then records it as finished."""
    out = Path(job.out)
    final, partial = out / job.tar_name, out / f"{job.tar_name}.tmp"
    swap = HARD_NEGATIVES.get(job.hard_negatives)
    record: dict[str, Any] = {"shard": job.tar_name, "samples": 0, "by_dataset": {}, "skipped": [], "re_encoded": 0}
    record |= {"captions": 0, "captions_with_negative": 0, "samples_with_negative": 0}
    with open(partial, "wb") as f:
        writer = TarWriter(f, encoder=False, mtime=0)  # fixed mtime: identical bytes on every run
        for sample in job.samples:
            path = Path(job.image_roots[sample.dataset]) / sample.image
            try:
                jpeg, re_encoded = to_shard_jpeg(path.read_bytes(), job.max_image_side)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                skip = Skip(sample.dataset, sample.index, sample.id, "missing_file", f"{path} not found")
            except UndecodableImage as err:
                skip = Skip(sample.dataset, sample.index, sample.id, "undecodable_image", f"{path}: {err}")
            else:
                negatives = [swap(c) if swap else None for c in sample.captions]
                meta = {
                    "id": sample.id,
                    "source": sample.dataset,
                    "image": sample.image,
                    "captions": list(sample.captions),
                    "hard_negatives": negatives,
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
                progress(1, None)
                continue
            if job.strict:
                raise StrictSkip(_describe_skip(skip, f"{sample.dataset} input"))
            record["skipped"].append(skip.as_record())
            progress(1, skip.reason)
        writer.close()
    os.replace(partial, final)
    _write_atomic(out / BUILD_DIR / f"{job.index:06d}.json", json.dumps(record, ensure_ascii=False))
    return record


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
            "phrases": ["on the left", "on the right", "to the left", "at the left", "at the right"],
            "rule": "case-insensitive substring match on the raw items; instances and captions count gpt answers",
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
        },
        "images": {"kept_original_bytes": written - sum(r["re_encoded"] for r in records)}
        | {"re_encoded": sum(r["re_encoded"] for r in records)},
        "shards": {"count": len(records), "files": [r["shard"] for r in records]},
        "seconds": round(seconds, 3),
        "samples_per_second": round(written / seconds, 1) if seconds > 0 else None,
    }
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def print_summary(manifest: dict, out: Path) -> None:
    counts = manifest["counts"]
    print(f"wrote {counts['samples_written']} samples in {manifest['shards']['count']} shards to {out}")
    print(f"  items read {counts['items_read']}, skipped {counts['skipped_total']}: ", end="")
    print(", ".join(f"{r} {n}" for r, n in counts["skipped"].items() if n) or "none")
    for dataset, stats in manifest["key_phrases"].items():
        if dataset in DATASETS:
            print(
                f"  {dataset} key phrases: {stats['instances']} instances ({stats['instances_with_image']} with image), "
                f"{stats['captions']} captions"
            )
    neg = manifest["hard_negatives"]
    print(
        f"  hard negatives ({neg['axis']}): {neg['captions_with_negative']} of {neg['captions']} captions, "
        f"{neg['samples_with_negative']} samples"
    )
    print(f"  {manifest['seconds']} s, {manifest['samples_per_second']} samples/s; details in {out / 'manifest.json'}")


if __name__ == "__main__":
    sys.exit(main())
