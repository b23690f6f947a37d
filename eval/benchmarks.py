"""Benchmark name -> `run(scorer, data_root, *, label_fixes, limit, scoring) -> BenchmarkResult`, and what it reads.

One file per benchmark family (whatsup, spatial_qa, mmvp_vlm); the registry binds each name to its variant. `SPECS`
also gives each benchmark's inputs (files and images under a data root), label-fix rules and tie rule: what
`eval.run` compares with a result's provenance before reusing it.

`limit` (default 0: everything) scores only a benchmark's first examples, a partial result (`eval.run --limit`):
the first rows of COCO-/GQA-spatial, the first pairs of MMVP-VLM, and for What'sUp the object pairs of its first
rows, whole. `inputs(data_root, limit=...)` then lists only the files and images those examples read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

from eval import mmvp_vlm, spatial_qa, whatsup
from eval.common import BenchmarkResult, Inputs, Scorer

BenchmarkFn = Callable[..., BenchmarkResult]


@dataclass(frozen=True)
class BenchmarkSpec:
    run: BenchmarkFn  # (scorer, data_root, *, label_fixes, limit=0, scoring="official") -> BenchmarkResult
    inputs: Callable[..., Inputs]  # (data_root, *, limit=0) -> the files and images `run` reads
    label_fix_rules: Callable[[str], list[list[str]]]  # label-fix mode -> the fixes it applies
    tie_rules: dict[str, str]  # scoring mode -> the tie rule it applies
    # Under scoring=released, whether the features come from fp16 autocast (What'sUp, COCO, GQA in eval_clip.py) or
    # fp32 (its MMVP scoring runs without autocast).
    fp16_when_released: bool

    def tie_rule(self, scoring: str = "official") -> str:
        return self.tie_rules[scoring]

    def precision(self, scoring: str) -> str:
        return "fp16" if scoring == "released" and self.fp16_when_released else "fp32"


def _spec(module: ModuleType, **variant: str) -> BenchmarkSpec:
    return BenchmarkSpec(
        run=partial(module.run, **variant),
        inputs=partial(module.inputs, **variant),
        label_fix_rules=partial(module.label_fix_rules, **variant),
        tie_rules=module.TIE_RULES,
        fp16_when_released=module.FP16_WHEN_RELEASED,
    )


SPECS: dict[str, BenchmarkSpec] = {
    "whatsup_a": _spec(whatsup, subset="A"),
    "whatsup_b": _spec(whatsup, subset="B"),
    "coco_spatial_one": _spec(spatial_qa, source="coco", objects="one"),
    "coco_spatial_two": _spec(spatial_qa, source="coco", objects="two"),
    "gqa_spatial_one": _spec(spatial_qa, source="gqa", objects="one"),
    "gqa_spatial_two": _spec(spatial_qa, source="gqa", objects="two"),
    "mmvp_vlm": _spec(mmvp_vlm),
    # MMVP's 300 images scored like MMVP-VLM from the authors' Questions-clip.csv (one statement per image)
    "mmvp_clip": _spec(mmvp_vlm, layout="mmvp_clip"),
}
BENCHMARKS: dict[str, BenchmarkFn] = {name: spec.run for name, spec in SPECS.items()}


class UnknownBenchmark(KeyError):
    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def get_spec(name: str) -> BenchmarkSpec:
    if name not in SPECS:
        raise UnknownBenchmark(f"unknown benchmark {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


def get_benchmark(name: str) -> BenchmarkFn:
    return get_spec(name).run


def run_benchmark(
    name: str,
    scorer: Scorer,
    data_root: Path | str,
    *,
    label_fixes: str = "paper",
    limit: int = 0,
    scoring: str = "official",
) -> BenchmarkResult:
    return get_benchmark(name)(scorer, Path(data_root), label_fixes=label_fixes, limit=limit, scoring=scoring)
