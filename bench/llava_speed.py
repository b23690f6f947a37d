"""LLaVA eval examples per second, batched against one example at a time, for the generative and perplexity protocols.

    python bench/llava_speed.py [--examples 24] [--rounds 2]

Runs `eval.llava.run` (the code `python -m eval.llava` runs) on the tiny random LLaVA (models/tiny_llava.py) over
the small generated world's What'sUp A and COCO-spatial one-object questions, once with --batch-size 1 (the
baseline) and once with --batch-size 8, for the generative protocol (greedy decoding, 16 new tokens) and the
choice protocol (the perplexity of each option letter). The model is loaded once and shared, so the figures are
scoring only; each run writes a fresh output folder, so nothing is resumed. Rounds alternate between the variants;
each row reports its best round. On the tiny model a batch is cheap, so the ratio shows what batching saves in
per-call overhead (Python, tokenizer, image processor); on a 7B model on a GPU the saving is larger, and is not
measured here.

`bench_llava()` returns a benchmark in bench/run.py's format ({"how", "columns", "rows"} with ratio_vs_baseline).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `python bench/llava_speed.py`
    sys.path.insert(0, str(REPO))

BENCHMARKS = ("whatsup_a", "coco_spatial_one")
PROTOCOLS = {"generative": "generative (greedy, 16 new tokens)", "choice": "choice (option-letter perplexity)"}
BATCHED = 8


def bench_llava(world: Path | None = None, *, examples: int = 24, rounds: int = 2) -> dict:
    """`examples` questions per benchmark; `world`: a generated world (a small one is made when None)."""
    import torch

    from data_prep.toyworld import generate
    from eval import llava
    from eval.report import read_scores
    from models.tiny_llava import build_tiny_llava

    scratch = Path(tempfile.mkdtemp(prefix="clipablate-llava-bench-"))
    try:
        if world is None:
            world = scratch / "world"
            generate(world, seed=0, scale="small")
        model = build_tiny_llava(scratch / "tiny_llava")
        runner = llava.LlavaRunner(model, device="cpu", dtype="float32")
        variants = {
            (protocol, batch): f"{label}, {'one at a time (baseline)' if batch == 1 else f'batches of {batch}'}"
            for protocol, label in PROTOCOLS.items()
            for batch in (1, BATCHED)
        }
        best: dict[tuple[str, int], float] = {}
        scored: dict[tuple[str, int], int] = {}

        def once(protocol: str, batch: int, limit: int, tag: str) -> tuple[float, int]:
            out = scratch / f"out-{protocol}-{batch}-{tag}"
            start = time.perf_counter()
            results = llava.run(
                model, world / "bench", out, benchmarks=BENCHMARKS, protocol=protocol, limit=limit,
                batch_size=batch, max_new_tokens=16, progress=False, runner=runner,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            examples = sum(len(read_scores(out, name)) for name in results)
            shutil.rmtree(out)
            return seconds, examples

        for protocol, batch in variants:  # warm-up: first calls, allocator
            once(protocol, batch, 1, "warm")
        for round_ in range(rounds):
            for protocol, batch in variants:
                seconds, scored[protocol, batch] = once(protocol, batch, examples, str(round_))
                best[protocol, batch] = min(best.get((protocol, batch), float("inf")), seconds)
        rows = {}
        for (protocol, batch), name in variants.items():
            rows[name] = {
                "examples": scored[protocol, batch],
                "batch_size": batch,
                "seconds": round(best[protocol, batch], 3),
                "examples_per_s": round(scored[protocol, batch] / best[protocol, batch], 2),
            }
        for protocol in PROTOCOLS:
            base = rows[variants[protocol, 1]]["examples_per_s"]
            for batch in (1, BATCHED):
                rows[variants[protocol, batch]]["ratio_vs_baseline"] = round(
                    rows[variants[protocol, batch]]["examples_per_s"] / base, 2
                )
        return {
            "how": (
                f"eval.llava.run on the tiny random LLaVA (models/tiny_llava.py, fp32, CPU, {torch.get_num_threads()} "
                f"threads) over the small world's {' and '.join(BENCHMARKS)} questions; the model loaded once, "
                f"scoring only; best of {rounds} alternating rounds (bench/llava_speed.py). Each protocol's baseline "
                "is its own one-at-a-time run; the answers are the same either way (tests/test_llava_eval.py)."
            ),
            "columns": {
                "examples": "examples",
                "batch_size": "batch",
                "seconds": "seconds",
                "examples_per_s": "examples/s",
            },
            "rows": rows,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python bench/llava_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=24, help="questions per benchmark")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    result = bench_llava(examples=args.examples, rounds=args.rounds)
    print(result["how"])
    for name, row in result["rows"].items():
        print(f"  {name}: {row['examples_per_s']} examples/s, {row['ratio_vs_baseline']}x baseline")
    return result


if __name__ == "__main__":
    main()
