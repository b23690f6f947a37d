"""Reads a shard folder back and prints what is in it.

    python -m data_prep.inspect_shards data/llava_shards [--show 3] [--json stats.json]

Counts per shard (checked against sizes.json), per source, a few decoded samples with their hard
negatives, caption length statistics, and how many captions mention each spatial axis.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import webdataset as wds
from PIL import Image

from data_prep.negatives import HARD_NEGATIVES


def read_samples(folder: Path):
    """Yields (shard file name, key, metadata, jpeg bytes) for every sample, shards in name order."""
    for shard in sorted(folder.glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            yield shard.name, sample["__key__"], json.loads(sample["json"]), sample["jpg"]


def inspect(folder: Path, show: int = 3) -> dict:
    sizes_file = folder / "sizes.json"
    declared = json.loads(sizes_file.read_text()) if sizes_file.exists() else {}
    per_shard: Counter[str] = Counter()
    per_source: Counter[str] = Counter()
    axes: Counter[str] = Counter()
    words, captions_per_sample, examples = [], [], []
    with_negative = 0
    for shard, key, meta, jpeg in read_samples(folder):
        per_shard[shard] += 1
        per_source[meta["source"]] += 1
        captions_per_sample.append(len(meta["captions"]))
        with_negative += any(n is not None for n in meta["hard_negatives"])
        for caption in meta["captions"]:
            words.append(len(caption.split()))
            for axis, swap in HARD_NEGATIVES.items():
                axes[axis] += swap(caption) is not None
        if len(examples) < show and any(meta["hard_negatives"]):
            with Image.open(io.BytesIO(jpeg)) as image:
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
        "per_source": dict(per_source),
        "samples_with_hard_negative": with_negative,
        "captions": len(words),
        "captions_per_sample": _summary(captions_per_sample),
        "words_per_caption": _summary(words),
        "captions_mentioning_axis": dict(axes),
        "examples": examples,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.inspect_shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--show", type=int, default=3, help="samples with hard negatives to print")
    parser.add_argument("--json", type=Path, help="also write the statistics here")
    args = parser.parse_args(argv)
    if not any(args.folder.glob("*.tar")):
        print(f"inspect_shards: {args.folder}: no .tar shards here", file=sys.stderr)
        return 2
    stats = inspect(args.folder, args.show)
    print_report(stats)
    if args.json:
        args.json.write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return 1 if stats["sizes_json_mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
