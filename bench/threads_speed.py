"""Training steps/s with one busy process beside the run: the default thread count against hand-set counts.

    python bench/threads_speed.py SHARDS [--rounds 2] [--steps 24]

A CPU-bound process (a Python loop) runs beside each training run, as a sweep's other run or a CI job would. The
run is recipes/tiny_clip_neg.yaml as shipped (1 data worker), trained for `steps` steps from scratch with the
feature cache off: with its default (train.cpu_threads=0: the cores / processes - data workers, train/cpu_threads.py),
and with train.cpu_threads=1 .. the number of cores set by hand, in alternating rounds; steps/s over the steps after
the first 4, best round per row. The baseline is the best hand-set count of the run, so a ratio of 1.0 means the
default loses nothing; torch's own default (every core, the old behaviour) is the row with OMP_NUM_THREADS unset
and cpu_threads = the core count.

`bench_threads(shards)` returns a table in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUSY = "while True:\n    pass\n"
WARMUP_STEPS = 4


def _steps_per_s(metrics: Path, batch: int) -> float:
    """Steps/s over the logged windows after WARMUP_STEPS (each line covers the steps since the one before)."""
    steps = seconds = 0.0
    done = 0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        window = record["step"] - done
        if done >= WARMUP_STEPS:
            steps += window
            seconds += window * batch / record["samples_per_s"]
        done = record["step"]
    return steps / seconds


def _train(shards: Path, out: Path, name: str, threads: int, steps: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CLIPABLATE_CORES")}
    env["PYTHONUNBUFFERED"] = "1"
    args = [sys.executable, "train/finetune.py", "tiny_clip_neg", f"data.shards=[{shards}]", f"output_dir={out}",
            f"run_name={name}", f"train.max_steps={steps}", "train.log_every_steps=2", "optim.warmup_steps=1",
            "cache=off", "wandb.mode=disabled", f"train.cpu_threads={threads}"]  # fmt: skip
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"finetune exited with {done.returncode}:\n{done.stderr[-3000:]}")
    start = json.loads((out / name / "starts.jsonl").read_text().splitlines()[0])
    return _steps_per_s(out / name / "metrics.jsonl", 64), start["cpu_threads"]


def bench_threads(shards: Path, *, rounds: int = 2, steps: int = 24) -> dict:
    cores = len(os.sched_getaffinity(0))
    variants = {
        "default (train.cpu_threads=0)": 0,
        **{f"train.cpu_threads={n} by hand": n for n in range(1, cores + 1)},
    }
    best: dict[str, tuple[float, int]] = {}
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        with tempfile.TemporaryDirectory(prefix="clipablate-threads-") as scratch:
            for r in range(rounds):
                for i, (label, threads) in enumerate(variants.items()):
                    rate, used = _train(shards, Path(scratch), f"r{r}-{i}", threads, steps)
                    if label not in best or rate > best[label][0]:
                        best[label] = (rate, used)
    finally:
        busy.kill()
        busy.wait()
    rows = {label: {"threads": used, "steps_per_s": round(rate, 3)} for label, (rate, used) in best.items()}
    hand = [label for label in rows if label.endswith("by hand")]
    baseline = max(hand, key=lambda label: rows[label]["steps_per_s"])
    for row in rows.values():
        row["ratio_vs_baseline"] = round(row["steps_per_s"] / rows[baseline]["steps_per_s"], 2)
    return {
        "how": (
            f"tiny_clip_neg (1 data worker, cache off), {steps} steps from scratch, steps/s after step {WARMUP_STEPS}, "
            f"best of {rounds} alternating rounds, with one CPU-bound process running beside it on {cores} cores. "
            f"Baseline: the best hand-set count ({baseline}); train.cpu_threads={cores} is torch's default of every "
            "core, what a run used before."
        ),
        "columns": {"threads": "torch threads", "steps_per_s": "steps/s"},
        "rows": rows,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python bench/threads_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    print(json.dumps(bench_threads(args.shards, rounds=args.rounds, steps=args.steps), indent=1))
