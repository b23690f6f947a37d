"""Benchmark name -> `run(scorer, data_root, *, label_fixes) -> BenchmarkResult`.

One file per benchmark family (whatsup, spatial_qa, mmvp_vlm); the registry binds each name to its variant.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from eval import mmvp_vlm, spatial_qa, whatsup
from eval.common import BenchmarkResult, Scorer

BenchmarkFn = Callable[..., BenchmarkResult]

BENCHMARKS: dict[str, BenchmarkFn] = {
    "whatsup_a": partial(whatsup.run, subset="A"),
    "whatsup_b": partial(whatsup.run, subset="B"),
    "coco_spatial_one": partial(spatial_qa.run, source="coco", objects="one"),
    "coco_spatial_two": partial(spatial_qa.run, source="coco", objects="two"),
    "gqa_spatial_one": partial(spatial_qa.run, source="gqa", objects="one"),
    "gqa_spatial_two": partial(spatial_qa.run, source="gqa", objects="two"),
    "mmvp_vlm": mmvp_vlm.run,
}


class UnknownBenchmark(KeyError):
    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def get_benchmark(name: str) -> BenchmarkFn:
    if name not in BENCHMARKS:
        raise UnknownBenchmark(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def run_benchmark(name: str, scorer: Scorer, data_root: Path | str, *, label_fixes: str = "paper") -> BenchmarkResult:
    return get_benchmark(name)(scorer, Path(data_root), label_fixes=label_fixes)
