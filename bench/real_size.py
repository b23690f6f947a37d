"""A small shard folder for the real-size benchmark: the feature cache is built over every sample of its shards,
and a real-size image tower forward takes seconds per image on a CPU, so the folder holds only a few samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

from data_prep import build_shards
from data_prep.toyworld import generate

# tqdm's final line of train.cache's image pass: "image features: 100%|...| 4/4 [00:25<00:00, ...]"
IMAGE_PASS = re.compile(r"image features: 100%\|[^|]*\| (\d+)/\d+ \[(?:(\d+):)?(\d+):(\d+)<")


def small_shards(scratch: Path, samples: int) -> Path:
    """Shards of the first `samples` LCS-558K items of a small generated world."""
    world = scratch / "real-size-world"
    generate(world, seed=0, scale="small")
    llava = world / "llava"
    items = json.loads((llava / "blip_laion_cc_sbu_558k.json").read_text())[:samples]
    subset = scratch / "real-size-items.json"
    subset.write_text(json.dumps(items))
    out = scratch / "real-size-shards"
    args = ["--dataset", "lcs558k", "--json", str(subset), "--image-root", str(llava / "images"), "--out", str(out)]
    assert build_shards.main([*args, "--workers", "1"]) == 0
    written = json.loads((out / "manifest.json").read_text())["counts"]["samples_written"]
    if written != samples:
        raise RuntimeError(f"real-size shards: {written} samples written, expected {samples}")
    return out


def image_pass_seconds(log: Path) -> float | None:
    """Seconds of train.cache's image-feature pass (its progress bar's elapsed time), or None if not logged."""
    found = IMAGE_PASS.findall(log.read_text().replace("\r", "\n"))
    if not found:
        return None
    _, hours, minutes, seconds = found[-1]
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)


def measured_seconds(log: Path, run_name: str, steps: int) -> float:
    """Seconds from step 1's end to step `steps`' end, from the elapsed time of the run's progress bar
    ("<run_name>: ...| k/<steps> [MM:SS<"): metrics.jsonl rounds samples/s to 0.1, too coarse at seconds a step.
    The bar's own clock (1 s resolution) is read, not the arrival of its output, which comes in bursts."""
    update = re.compile(re.escape(run_name) + r":[^|]*\|[^|]*\| (\d+)/" + str(steps) + r" \[(?:(\d+):)?(\d+):(\d+)<")
    first: dict[int, int] = {}
    for count, hours, minutes, seconds in update.findall(log.read_text().replace("\r", "\n")):
        first.setdefault(int(count), int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    if 1 not in first or steps not in first:
        raise RuntimeError(f"{run_name}: no progress update for step 1 or {steps} in {log}")
    return first[steps] - first[1]
