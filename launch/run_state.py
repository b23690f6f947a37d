"""Where a run stands, read from its folder alone: not started, part trained, trained, or trained and evaluated.

A run is trained when one of its checkpoints has reached the total step count (from the shards' sizes.json,
the global batch, epochs and max_steps); evaluated when every checkpoint, the starting weights included, has a
result with metrics for every benchmark asked for (a result file without metrics, say from an eval that found no
items, is not a result). Re-running a sweep skips `done` runs, evaluates `trained` ones and
resumes the rest with train.resume=latest (a fresh start when there is no checkpoint yet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from train.checkpoints import STATE, list_checkpoints
from train.config import RecipeConfig


class RunState(StrEnum):
    NEW = "new"  # no checkpoint yet (the folder may exist from a start that died before its first checkpoint)
    PARTIAL = "partial"  # checkpoints short of the last step: resume
    TRAINED = "trained"  # trained to the last step, some results missing: evaluate
    DONE = "done"  # trained and evaluated: skip


class Action(StrEnum):
    TRAIN = "train"  # a fresh start (train.resume=latest finds nothing) then eval
    RESUME = "resume"  # continue from the latest checkpoint, then eval
    EVAL = "eval"
    SKIP = "skip"


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    step: int  # optimizer steps of the newest checkpoint (0 = none)
    total_steps: int | None  # None when the shards' sizes are unknown here
    missing_results: int  # (checkpoint, benchmark) results still to compute

    @property
    def action(self) -> Action:
        return {
            RunState.NEW: Action.TRAIN,
            RunState.PARTIAL: Action.RESUME,
            RunState.TRAINED: Action.EVAL,
            RunState.DONE: Action.SKIP,
        }[self.state]

    def describe(self) -> str:
        total = "?" if self.total_steps is None else str(self.total_steps)
        text = f"{self.state.value} (step {self.step}/{total}"
        if self.state in (RunState.TRAINED, RunState.DONE) and self.missing_results:
            text += f", {self.missing_results} results missing"
        return text + ")"


def shard_samples(folders: Sequence[str]) -> int | None:
    """Samples in the shard folders from their sizes.json (written by build_shards); None if any is missing."""
    total = 0
    for folder in folders:
        try:
            sizes = json.loads((Path(folder) / "sizes.json").read_text())
        except (OSError, ValueError):
            return None
        total += sum(int(n) for n in sizes.values())
    return total


def steps_per_epoch(cfg: RecipeConfig) -> int | None:
    samples = shard_samples(cfg.data.shards)
    return None if samples is None else samples // cfg.train.global_batch_size


def total_steps(cfg: RecipeConfig) -> int | None:
    """The optimizer steps a run makes, as train/finetune.py computes them."""
    per_epoch = steps_per_epoch(cfg)
    if per_epoch is None:
        return None
    steps = per_epoch * cfg.train.epochs
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps else steps


def newest_step(run_dir: Path) -> int:
    found = list_checkpoints(run_dir / "checkpoints")
    return int(json.loads((found[-1] / STATE).read_text())["step"]) if found else 0


def has_result(folder: Path, benchmark: str, label_fixes: str, scoring: str = "official") -> bool:
    """A result scored with these label fixes and scoring mode that holds metrics (empty `metrics` is no result)."""
    from eval.report import read_result
    from eval.run import is_scored

    if not is_scored(folder, benchmark, label_fixes, scoring):
        return False
    metrics = (read_result(folder, benchmark) or {}).get("metrics")
    return isinstance(metrics, dict) and bool(metrics)


def missing_results(run_dir: Path, benchmarks: Sequence[str], label_fixes: str, scoring: str = "official") -> int:
    """(checkpoint, benchmark) pairs without a result, counting the starting weights (step_0)."""
    from eval.run import run_checkpoints

    eval_dir = run_dir / "eval"
    return sum(
        not has_result(eval_dir / checkpoint.name, benchmark, label_fixes, scoring)
        for checkpoint in run_checkpoints(run_dir)
        for benchmark in benchmarks
    )


def run_status(cfg: RecipeConfig, benchmarks: Sequence[str] | None, evaluate: bool = True) -> RunStatus:
    """The state of `output_dir/run_name`; `benchmarks` None = the run's eval.benchmarks."""
    run_dir = Path(cfg.output_dir) / cfg.run_name
    total = total_steps(cfg)
    step = newest_step(run_dir)
    if step == 0:
        return RunStatus(RunState.NEW, 0, total, 0)
    if total is None or step < total:
        return RunStatus(RunState.PARTIAL, step, total, 0)
    benchmarks = benchmarks or cfg.eval.benchmarks
    missing = missing_results(run_dir, benchmarks, cfg.eval.label_fixes, cfg.eval.scoring) if evaluate else 0
    return RunStatus(RunState.TRAINED if missing else RunState.DONE, step, total, missing)
