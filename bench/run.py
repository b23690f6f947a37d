"""Benchmarks behind `make bench`: each figure is a ratio against a baseline measured in the same run.

    python bench/run.py [--scale medium|small] [--out bench]

Writes bench/results.json and bench/results.md. Measured here:
- build_shards samples/s with 1 and 2 workers against a plain single-process converter (json.load, PIL
  decode, webdataset ShardWriter), on the generated world's two LLaVA datasets.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import webdataset as wds
from PIL import Image

from data_prep import build_shards
from data_prep.llava_items import clean_caption
from data_prep.provenance import code_version
from data_prep.toyworld import generate


def plain_converter(inputs: list[tuple[str, Path, Path]], out: Path) -> int:
    """The obvious single-process conversion: the baseline every faster path is compared with."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with wds.ShardWriter(str(out / "plain-%06d.tar"), maxcount=10000, verbose=0) as sink:
        for dataset, json_path, root in inputs:
            for index, item in enumerate(json.loads(json_path.read_text())):
                if "image" not in item:
                    continue
                try:
                    data = (root / item["image"]).read_bytes()
                    with Image.open(io.BytesIO(data)) as image:
                        image.load()
                except (OSError, SyntaxError):
                    continue
                captions = [clean_caption(t["value"]) for t in item["conversations"] if t["from"] == "gpt"]
                meta = {"id": item["id"], "source": dataset, "image": item["image"], "captions": captions}
                sink.write({"__key__": f"{dataset}_{index}", "jpg": data, "json": meta, "txt": captions[0]})
                written += 1
    return written


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_build_shards(world: Path, scratch: Path) -> dict:
    llava = world / "llava"
    inputs = [
        ("lcs558k", llava / "blip_laion_cc_sbu_558k.json", llava / "images"),
        ("mix665k", llava / "llava_v1_5_mix665k.json", llava),
    ]
    args = []
    for dataset, json_path, root in inputs:
        args += ["--dataset", dataset, "--json", str(json_path), "--image-root", str(root)]
    seconds, samples = timed(lambda: plain_converter(inputs, scratch / "plain"))
    rows = {"plain single-process (baseline)": {"seconds": seconds, "samples": samples}}
    for workers in (1, 2):
        out = scratch / f"ours-{workers}"

        def run(out=out, workers=workers):
            assert build_shards.main([*args, "--out", str(out), "--workers", str(workers), "--shard-size", "1000"]) == 0
            return json.loads((out / "manifest.json").read_text())["counts"]["samples_written"]

        seconds, samples = timed(run)
        rows[f"build_shards, {workers} worker{'s' if workers > 1 else ''}"] = {"seconds": seconds, "samples": samples}
    base = rows["plain single-process (baseline)"]
    for row in rows.values():
        row["samples_per_s"] = round(row["samples"] / row["seconds"], 1)
        row["ratio_vs_baseline"] = round(row["samples_per_s"] / base["samples_per_s"], 2)
        row["seconds"] = round(row["seconds"], 3)
    return rows


def markdown(results: dict) -> str:
    lines = [f"# Benchmarks ({results['machine']})", ""]
    for name, rows in results["benchmarks"].items():
        lines += [
            f"## {name}",
            "",
            "| variant | samples | seconds | samples/s | ratio vs baseline |",
            "|---|---|---|---|---|",
        ]
        for variant, row in rows.items():
            lines.append(
                f"| {variant} | {row['samples']} | {row['seconds']} | {row['samples_per_s']} | "
                f"{row['ratio_vs_baseline']}x |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium"), help="generated world size")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="clipablate-bench-"))
    try:
        print(f"generating a {args.scale} world in {scratch} ...", flush=True)
        generate(scratch / "world", seed=0, scale=args.scale)
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} "
            f"{platform.python_version()}",
            "scale": args.scale,
            "code": code_version(),
            "benchmarks": {
                "build_shards (LCS-558K + DataMix-665K format)": bench_build_shards(scratch / "world", scratch)
            },
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
