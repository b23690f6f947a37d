"""The command lines of one run: training (with or without `accelerate launch`) and its evaluation.

One process needs no launcher: `python train/finetune.py` gets SIGTERM directly (accelerate's single-process
launcher would not forward it). Several processes go through `accelerate launch` with one of the configs in
launch/accelerate/ (torchrun underneath forwards SIGTERM to every worker).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from launch.plan import PlannedRun
from launch.sweep_config import ROOT, ResourceSpec

FINETUNE = ROOT / "train" / "finetune.py"
ACCELERATE_CONFIGS = ROOT / "launch" / "accelerate"


def shown_path(path: Path) -> str:
    """Relative to the working folder when inside it (readable commands), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def python() -> str:
    return sys.executable


def accelerate_config(resources: ResourceSpec) -> Path:
    if resources.gpus_per_run == 0:
        return ACCELERATE_CONFIGS / "cpu_2proc.yaml"  # MULTI_GPU on a GPU-less host: gloo processes
    if resources.zero_stage:
        return ACCELERATE_CONFIGS / f"deepspeed_zero{resources.zero_stage}.yaml"
    if resources.processes == 1:
        return ACCELERATE_CONFIGS / "single_gpu.yaml"
    return ACCELERATE_CONFIGS / "multi_gpu_bf16.yaml"


def accelerate_argv(run: PlannedRun, resources: ResourceSpec) -> list[str]:
    """`python -m accelerate.commands.launch ...` for one machine; multi-node options are added by the caller."""
    return [
        python(),
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        shown_path(accelerate_config(resources)),
        "--num_processes",
        str(resources.processes),
        "--mixed_precision",
        run.cfg.train.accelerate_mixed_precision,
    ]


def trainer_args(run: PlannedRun) -> list[str]:
    """finetune.py's own arguments: the recipe, then every override (run name, folder, resume included)."""
    return [shown_path(run.recipe_file), *run.overrides]


def train_argv(run: PlannedRun, resources: ResourceSpec) -> list[str]:
    """One machine (the local backend, or a one-node slurm task)."""
    if resources.processes == 1:
        return [python(), shown_path(FINETUNE), *trainer_args(run)]
    return [*accelerate_argv(run, resources), "--main_process_port", "0", shown_path(FINETUNE), *trainer_args(run)]


def eval_argv(run: PlannedRun, benchmarks: Sequence[str] = ()) -> list[str]:
    argv = [python(), "-m", "eval.run", "--run", str(run.run_dir)]
    return argv + (["--benchmarks", *benchmarks] if benchmarks else [])


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def child_env(cuda_devices: str | None, concurrent_runs: int = 1) -> dict[str, str]:
    """Environment of a run started by the local backend, with the GPUs it may use and, when runs share the machine,
    its share of the cores ($CLIPABLATE_CORES, from which each of its processes takes its torch threads)."""
    from train.cpu_threads import CORES_VARIABLE, usable_cores

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # logs fill as the run goes
    if cuda_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_devices
    if concurrent_runs > 1:
        env[CORES_VARIABLE] = str(max(1, usable_cores() // concurrent_runs))
    return env
