"""Reads a shard folder back and prints what is in it, or checks it end to end.

    python -m data_prep.inspect_shards data/llava_shards [--show 3] [--json stats.json]
    python -m data_prep.inspect_shards data/llava_shards --sample 5 [--seed 0]
    python -m data_prep.inspect_shards data/llava_shards --verify [--workers 8]

Counts per shard (checked against sizes.json), per source, a few decoded samples with their hard
negatives, caption length statistics, and how many captions mention each spatial axis. Damaged shards
(see train.data.scan_shard) are reported, never silently read in part.

--sample N audits the hard negatives: for every source and every rule that fired (the `negative_rules`
build_shards records per caption, e.g. "credit-comma", "refexp", "prep-noun") and every reason a caption
with left/right got none ("symmetric", "not-spatial", "coordinated"), it prints the count and N random
(caption, negative) pairs, the same for a given --seed.

--verify checks everything training relies on, on demand: the tar structure, the sample counts of
sizes.json, every shard's size and sha256 against manifest.json (a full read of the data), and that every
sample's json, txt and jpg members decode. Exit 0 with "verified N shards, M samples", or 1 with a report
naming each damaged shard.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import random
import signal
import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from data_prep.image_bytes import DECODE_ERRORS
from data_prep.negatives import HARD_NEGATIVES
from data_prep.released_negatives import released_negative
from train.data import ShardError, ShardExpectation, ShardScan, parse_meta, plan_folder, scan_shard

SAMPLE_PROBLEMS_KEPT = 20  # per shard: a shard with thousands of bad samples needs a few named, not all
# Rules not worth an audit sample: no left/right in the caption at all, or negatives switched off.
UNAUDITED_RULES = ("no-left-right", "none", "off")


def scan_folder(folder: Path) -> tuple[list[ShardScan], dict[str, list[str]]]:
    """Every shard's scan (headers only) and the damage found, by file (statistics: another tool's folder without
    sizes.json is read as it is)."""
    plan = plan_folder(folder, "index")
    damage = dict(plan.damage)
    scans = []
    for tar in plan.tars:
        scan = scan_shard(tar, plan.expected.get(tar.name) if plan.expected is not None else None)
        if scan.problems:
            damage.setdefault(str(tar), []).extend(scan.problems)
        scans.append(scan)
    return scans, damage


def read_members(scan: ShardScan, exts: tuple[str, ...] = ("json", "jpg")) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for every sample the scan found, read by offset in file order."""
    with open(scan.path, "rb") as f:
        for key, parts in scan.members.items():
            data = {}
            for ext in exts:
                if ext in parts:
                    offset, size = parts[ext]
                    f.seek(offset)
                    data[ext] = f.read(size)
            yield key, data


# The group of (caption, negative) pairs the authors' released rule makes (data_prep.released_negatives).
RELEASED_GROUP = "released-rule"


class RuleSampler:
    """Per (source, rule): the count, and a uniform random sample of `size` (key, caption, negative) triples
    (reservoir sampling: one pass, memory bounded by the sample, the same sample for the same seed). Besides our
    rules (`negative_rules` of each sample), the group RELEASED_GROUP holds the authors' released rule's pairs."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.rng = size, random.Random(seed)
        self.counts: dict[str, Counter[str]] = {}
        self.samples: dict[str, dict[str, list[dict]]] = {}

    def add(self, source: str, key: str, meta: dict) -> None:
        captions, negatives = meta["captions"], meta["hard_negatives"]
        rules = meta.get("negative_rules")
        if not isinstance(rules, list) or len(rules) != len(captions):
            rules = ["not-recorded"] * len(captions)  # shards from a build_shards before rules were recorded
        for caption, negative, rule in zip(captions, negatives, rules, strict=True):
            rule = str(rule)
            if rule not in UNAUDITED_RULES:
                self._keep(source, rule, {"key": key, "caption": caption, "negative": negative})
            # The authors' released rule (data.negative_rule=released) on the same caption, as training would apply it
            released = released_negative(caption)
            if released is not None:
                self._keep(source, RELEASED_GROUP, {"key": key, "caption": caption, "negative": released})

    def _keep(self, source: str, rule: str, pair: dict) -> None:
        counts = self.counts.setdefault(source, Counter())
        counts[rule] += 1
        if self.size <= 0:
            return
        kept = self.samples.setdefault(source, {}).setdefault(rule, [])
        if len(kept) < self.size:
            kept.append(pair)
        else:
            slot = self.rng.randrange(counts[rule])
            if slot < self.size:
                kept[slot] = pair

    def result(self) -> dict:
        return {
            source: {
                rule: {"captions": n, "sample": self.samples.get(source, {}).get(rule, [])}
                for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            }
            for source, counts in sorted(self.counts.items())
        }


def inspect(folder: Path, show: int = 3, sample: int = 0, seed: int = 0) -> dict:
    """Statistics of a shard folder; with sample > 0 also `sample` random (caption, negative) pairs per
    source and per negative rule ("negative_rules")."""
    scans, damage = scan_folder(folder)
    sizes_file = folder / "sizes.json"
    declared = json.loads(sizes_file.read_text()) if sizes_file.exists() else {}
    per_shard: Counter[str] = Counter()
    per_source: Counter[str] = Counter()
    axes: Counter[str] = Counter()
    words, captions_per_sample, examples = [], [], []
    with_negative = 0
    unreadable = 0
    sampler = RuleSampler(sample, seed)
    for scan in scans:
        per_shard[scan.path.name] = len(scan.members)
        for key, data in read_members(scan):
            try:
                meta = parse_meta(data.get("json", b""))
            except ValueError:
                unreadable += 1  # named by --verify; here it only must not stop the statistics
                continue
            per_source[meta.get("source")] += 1
            sampler.add(str(meta.get("source")), key, meta)
            captions_per_sample.append(len(meta["captions"]))
            with_negative += any(n is not None for n in meta["hard_negatives"])
            for caption in meta["captions"]:
                words.append(len(caption.split()))
                for axis, swap in HARD_NEGATIVES.items():
                    axes[axis] += swap(caption) is not None
            if len(examples) < show and any(meta["hard_negatives"]) and "jpg" in data:
                with Image.open(io.BytesIO(data["jpg"])) as image:
                    size = image.size
                examples.append({"key": key, "image_size": list(size), **meta})
    mismatched = {s: (declared.get(s), per_shard.get(s, 0)) for s in set(declared) | set(per_shard)}
    mismatched = {s: v for s, v in mismatched.items() if v[0] != v[1]}
    samples = sum(per_shard.values())
    return {
        "folder": str(folder),
        "shards": len(per_shard),
        "samples": samples,
        "sizes_json_mismatches": mismatched,
        "damage": damage,
        "unreadable_json_members": unreadable,
        "per_source": dict(per_source),
        "samples_with_hard_negative": with_negative,
        "captions": len(words),
        "captions_per_sample": _summary(captions_per_sample),
        "words_per_caption": _summary(words),
        "captions_mentioning_axis": dict(axes),
        "examples": examples,
        # per source, per rule: {"captions": n, "sample": [{"key", "caption", "negative"}, ...]}
        "negative_rules": sampler.result(),
        "negative_sample_seed": seed if sample > 0 else None,
    }


def _summary(values: list[int]) -> dict:
    if not values:
        return {}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 2),
        "max": max(values),
    }


def print_report(stats: dict) -> None:
    print(f"{stats['folder']}: {stats['samples']} samples in {stats['shards']} shards")
    if stats["sizes_json_mismatches"]:
        print(f"  sizes.json disagrees with the shards (declared, found): {stats['sizes_json_mismatches']}")
    if stats["damage"] or stats["unreadable_json_members"]:
        print(
            f"  DAMAGED: {len(stats['damage'])} file(s), {stats['unreadable_json_members']} unreadable json members; "
            "run with --verify for the details"
        )
    print(f"  per source: {stats['per_source']}")
    print(f"  samples with a hard negative: {stats['samples_with_hard_negative']}")
    print(f"  captions per sample: {stats['captions_per_sample']}")
    print(f"  words per caption: {stats['words_per_caption']}")
    print(f"  captions mentioning each axis: {stats['captions_mentioning_axis']}")
    for example in stats["examples"]:
        print(f"  - {example['key']} ({example['source']} id {example['id']}, {example['image_size']} px)")
        for caption, negative in zip(example["captions"], example["hard_negatives"], strict=True):
            print(f"      caption:  {caption}")
            print(f"      negative: {negative}")
    for source, rules in stats.get("negative_rules", {}).items():
        print(f"  {source}: captions per negative rule: " + ", ".join(f"{r} {v['captions']}" for r, v in rules.items()))
    if stats.get("negative_sample_seed") is not None:
        print(f"  random (caption, negative) pairs per source and rule (seed {stats['negative_sample_seed']}):")
        for source, rules in stats["negative_rules"].items():
            for rule, entry in rules.items():
                print(f"  [{source} / {rule}] {len(entry['sample'])} of {entry['captions']} captions")
                for pair in entry["sample"]:
                    print(f"    - {pair['key']}")
                    print(f"      caption:  {pair['caption']}")
                    print(f"      negative: {pair['negative']}")


# --- --verify -----------------------------------------------------------------------------------------------


def verify_shard(path: Path, expected: ShardExpectation | None) -> tuple[int, list[str], bool]:
    """(samples found, problems, sha256 compared): structure, counts, size and sha256, then every member decoded."""
    scan = scan_shard(path, expected, sha256=True)
    problems = list(scan.problems)
    bad = []
    for key, data in read_members(scan, ("json", "txt", "jpg")):
        for ext, payload in data.items():
            problem = _member_problem(ext, payload)
            if problem:
                bad.append(f"sample {key!r}: {ext} member: {problem}")
    if bad:
        problems.append(f"{len(bad)} member(s) do not decode: " + "; ".join(bad[:SAMPLE_PROBLEMS_KEPT]))
        if len(bad) > SAMPLE_PROBLEMS_KEPT:
            problems[-1] += f"; and {len(bad) - SAMPLE_PROBLEMS_KEPT} more"
    compared = bool(expected is not None and expected.sha256 and scan.sha256)
    return len(scan.members), problems, compared


def _member_problem(ext: str, payload: bytes) -> str | None:
    try:
        if ext == "json":
            parse_meta(payload)
        elif ext == "txt":
            payload.decode("utf-8")
        else:
            with Image.open(io.BytesIO(payload)) as image:
                image.load()  # every byte, as training will
    except DECODE_ERRORS as err:  # ValueError covers bad UTF-8 and bad JSON
        return f"{type(err).__name__}: {err}"
    return None


def _default_sigterm() -> None:
    """Forked workers drop an inherited Python SIGTERM handler, so Pool.terminate() can always stop them."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _verify_job(job: tuple[Path, ShardExpectation | None]) -> tuple[int, list[str], bool]:
    return verify_shard(*job)


def _verify_indexed(indexed: tuple[int, tuple]) -> tuple[int, tuple]:
    index, job = indexed
    return index, _verify_job(job)


def verify(folder: Path, workers: int = 1, reindex: bool = False, progress: bool = True) -> dict:
    """Checks every shard; a folder without sizes.json is damage unless `reindex`, which verifies what is there and,
    when all of it is intact, writes sizes.json with the counts found (so training reads the folder as it is).
    `progress`: a bar over the bytes read (the real data is hundreds of GB)."""
    plan = plan_folder(folder, "index" if reindex else "refuse")
    damage = dict(plan.damage)
    jobs = [(tar, plan.expected.get(tar.name) if plan.expected is not None else None) for tar in plan.tars]
    sizes = [tar.stat().st_size if tar.exists() else 0 for tar, _ in jobs]
    bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="verify", disable=not progress, leave=False)
    results: list = [None] * len(jobs)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(min(workers, len(jobs)), initializer=_default_sigterm) as pool:
            # unordered, so the bar moves as shards finish; placed back by index
            for index, result in pool.imap_unordered(_verify_indexed, list(enumerate(jobs)), chunksize=1):
                results[index] = result
                bar.update(sizes[index])
            pool.close()  # workers leave on their own; the with-block's terminate() is then a no-op
            pool.join()
    else:
        for index, job in enumerate(jobs):
            results[index] = _verify_job(job)
            bar.update(sizes[index])
    bar.close()
    samples = 0
    hashed = 0
    for (tar, _), (found, problems, compared) in zip(jobs, results, strict=True):
        samples += found
        hashed += compared
        if problems:
            damage.setdefault(str(tar), []).extend(problems)
    reindexed = None
    if reindex and plan.expected is None and not damage:
        counts = {tar.name: found for (tar, _), (found, _, _) in zip(jobs, results, strict=True)}
        (Path(folder) / "sizes.json").write_text(json.dumps(counts, indent=1))
        reindexed = {"samples": samples, "shards": len(counts)}
    return {
        "folder": str(folder),
        "shards": len(plan.tars),
        "reindexed": reindexed,
        "listed_in_sizes_json": None if plan.expected is None else len(plan.expected),
        "samples": samples,
        "sha256_compared": hashed,
        "damage": damage,
    }


def verify_report(result: dict) -> str:
    folder = result["folder"]
    if not result["damage"]:
        if result.get("reindexed"):
            checked = f"no sizes.json: reindexed, {result['reindexed']['samples']} samples found, sizes.json written"
        elif result["listed_in_sizes_json"] is None:
            checked = "no sizes.json: tar structure and decoding only"
        else:
            checked = f"counts match sizes.json, sha256 of {result['sha256_compared']} matches manifest.json"
        return (
            f"verified {result['shards']} shards, {result['samples']} samples in {folder} "
            f"({checked}; every member decodes)"
        )
    lines = [
        f"{folder}: {len(result['damage'])} damaged file(s) among {result['shards']} shards "
        f"({result['samples']} samples found); do not train on this folder:"
    ]
    for path, problems in result["damage"].items():
        name = Path(path).name if Path(path).parent == Path(folder) else path
        lines.append(f"  {name}: {'; '.join(problems)}")
    lines.append(
        "  To repair: delete the damaged shards and rerun data_prep.build_shards with the same arguments "
        "(it rewrites only missing shards)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.inspect_shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--show", type=int, default=3, help="samples with hard negatives to print")
    parser.add_argument(
        "--sample", type=int, default=0, help="random (caption, negative) pairs to print per source and per rule"
    )
    parser.add_argument("--seed", type=int, default=0, help="--sample: random seed")
    parser.add_argument("--json", type=Path, help="also write the statistics (or the --verify result) here")
    parser.add_argument("--verify", action="store_true", help="check counts, sha256 and that every member decodes")
    parser.add_argument("--workers", type=int, default=1, help="--verify: shards checked in parallel")
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="--verify of a folder without sizes.json: verify what is there and, if intact, write sizes.json",
    )
    args = parser.parse_args(argv)
    try:
        if args.verify:
            stats = verify(args.folder, args.workers, reindex=args.reindex)
        else:
            stats = inspect(args.folder, args.show, args.sample, args.seed)
    except ShardError as err:  # no shards at all
        print(f"inspect_shards: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    if args.verify:
        report = verify_report(stats)
        print(report, file=sys.stderr if stats["damage"] else sys.stdout)
        return 1 if stats["damage"] else 0
    print_report(stats)
    return 1 if stats["sizes_json_mismatches"] or stats["damage"] or stats["unreadable_json_members"] else 0


if __name__ == "__main__":
    sys.exit(main())
