"""launch/ on a real SLURM scheduler, not a mock: a private one-node cluster (launch/slurm_local_cluster.sh) runs the
tiny grid as job arrays, and a training task warned of its time limit (USR1) checkpoints, requeues and resumes.

Needs root and the Debian packages: apt-get install -y slurmctld slurmd slurm-client munge
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eval.report import read_result
from launch.run_state import RunState, run_status
from train.config import load_recipe

pytestmark = pytest.mark.system  # the system tier (make test-all, CI): a real private SLURM cluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "launch" / "slurm_local_cluster.sh"
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
APT = "apt-get update && apt-get install -y slurmctld slurmd slurm-client munge"
WAIT_SECONDS = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    """Starts the private cluster once for this module; yields the environment that points at it."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"SLURM is not installed (missing {', '.join(missing)}); install it as root with: {APT}")
    if os.geteuid() != 0:
        pytest.fail("the private SLURM cluster needs root (slurmd starts jobs as their owner)")
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run([str(CLUSTER_SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    env = {
        **os.environ,
        "SLURM_CONF": str(folder / "slurm.conf"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_SILENT": "true",
    }
    try:
        yield env
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "stop", str(folder)], capture_output=True, text=True, timeout=180)


def sweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launch.sweep", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def submitted(stdout: str) -> dict[str, str]:
    """script kind (train / eval / eval-only) -> job id, from the sweep's output."""
    return {kind: job for kind, job in re.findall(r"submitted \S+-([a-z-]+)\.sbatch as job array (\d+)", stdout)}


def queue(env: dict[str, str]) -> str:
    return subprocess.run(["squeue", "--noheader", "-o", "%i %T %r"], capture_output=True, text=True, env=env).stdout


def wait_until(ready: Callable[[], bool], env: dict[str, str], what: str, logs: Path, timeout: float = WAIT_SECONDS):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(1)
    tails = "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*")))
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\nsqueue:\n{queue(env)}\n{tails}")


def status(run_dir: Path) -> RunState:
    if not (run_dir / "config.yaml").exists():
        return RunState.NEW
    return run_status(load_recipe(run_dir / "config.yaml"), None).state


def test_the_tiny_grid_trains_and_evaluates_as_job_arrays(cluster, world, world_shards, tmp_path):
    out = tmp_path / "tiny_grid"
    overrides = [f"data.shards=[{world_shards}]", f"eval.data_root={world / 'bench'}", "train.epochs=1"]
    result = sweep(cluster, "launch/sweeps/tiny_grid.yaml", "--backend", "slurm", "--output-dir", str(out), *overrides)
    jobs = submitted(result.stdout)
    assert set(jobs) == {"train", "eval"}, result.stdout
    names = ["tiny_clip_finetune-seed0", "tiny_clip_finetune-seed1", "tiny_clip_neg-seed0", "tiny_clip_neg-seed1"]
    twice = sweep(cluster, "launch/sweeps/tiny_grid.yaml", "--backend", "slurm", "--output-dir", str(out), *overrides)
    assert not submitted(twice.stdout), twice.stdout  # queued tasks are not submitted a second time
    assert twice.stdout.count("is still queued or running as") == 4

    def finished() -> bool:
        return all(status(out / n) == RunState.DONE for n in names) and not any(
            line.split("_")[0] in jobs.values() for line in queue(cluster).splitlines()
        )

    wait_until(finished, cluster, "4 runs trained and evaluated", out / "logs")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["slurm_train_task"] for r in manifest["runs"]] == [f"{jobs['train']}_{i}" for i in range(4)]
    assert [r["slurm_eval_task"] for r in manifest["runs"]] == [f"{jobs['eval']}_{i}" for i in range(4)]
    for name in names:
        run = out / name
        assert len((run / "starts.jsonl").read_text().splitlines()) == 1
        assert (run / "checkpoints" / "latest").read_text() == "epoch_1"
        assert read_result(run / "eval" / "epoch_1", "mmvp_vlm") is not None
        assert read_result(run / "eval" / "step_0", "whatsup_b") is not None
        assert "trainer exited with 0" in (out / "logs" / f"{name}.train.log").read_text(errors="replace")
    script = (out / "slurm").glob("*-train.sbatch")
    assert "#SBATCH --array=0-3" in next(script).read_text()

    again = sweep(cluster, "launch/sweeps/tiny_grid.yaml", "--backend", "slurm", "--output-dir", str(out), *overrides)
    assert "nothing to do" in again.stdout and not submitted(again.stdout)


def test_a_task_warned_of_its_time_limit_checkpoints_requeues_and_resumes(cluster, world, world_shards, tmp_path):
    """Two gloo processes under `accelerate launch`: USR1 to the batch shell -> SIGTERM to the job step ->
    torchrun forwards it -> the trainers checkpoint and exit 75 -> the shell requeues its array element."""
    spec = tmp_path / "requeue.yaml"
    spec.write_text(
        textwrap.dedent(
            """
            name: requeue
            recipes: [tiny_clip_neg]
            run_name: "{recipe}-2proc"
            overrides: {train.epochs: 2, train.log_every_steps: 1, data.workers: 0, data.batch_size: 16}
            resources: {gpus_per_run: 0, cpu_processes: 2}
            slurm: {signal_seconds: 60}
            """
        )
    )
    out = tmp_path / "out"
    overrides = [f"data.shards=[{world_shards}]", f"eval.data_root={world / 'bench'}"]
    result = sweep(cluster, str(spec), "--backend", "slurm", "--output-dir", str(out), *overrides)
    task = f"{submitted(result.stdout)['train']}_0"
    run = out / "tiny_clip_neg-2proc"
    metrics = run / "metrics.jsonl"

    def training() -> bool:
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 2

    wait_until(training, cluster, "the first training steps", out / "logs")
    # What SLURM sends `--signal=B:USR1@60` before the time limit: to the batch shell only.
    subprocess.run(["scancel", "--signal=USR1", "--batch", task], check=True, env=cluster)
    wait_until(lambda: status(run) == RunState.DONE, cluster, "the requeued run to finish", out / "logs")

    log = (out / "logs" / "tiny_clip_neg-2proc.train.log").read_text(errors="replace")  # 2 ranks write it
    assert "USR1: time limit near" in log and f"requeueing {task}" in log
    assert log.count("finetune: stopped on a signal at step") == 2  # both processes stopped at the same step
    resumed = re.search(r"resumed from (\S+)/checkpoints/step_(\d+) at step (\d+)", log)
    assert resumed and resumed.group(1) == str(run) and resumed.group(2) == resumed.group(3)
    assert 2 <= int(resumed.group(2)) < 20, "the signal must land mid-run for this test to mean anything"
    starts = [json.loads(line) for line in (run / "starts.jsonl").read_text().splitlines()]
    assert len(starts) == 2 and all("train.resume=latest" in s["argv"] for s in starts)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 21))  # resumed where it stopped: no step done twice, none skipped
    assert (run / "checkpoints" / "latest").read_text() == "epoch_2"
    assert json.loads((run / "checkpoints" / "epoch_2" / "trainer_state.json").read_text())["step"] == 20
    assert read_result(run / "eval" / "epoch_2", "whatsup_a") is not None  # eval waited for the requeued task
    job = subprocess.run(["scontrol", "show", "job", task], capture_output=True, text=True, env=cluster).stdout
    assert "Restarts=1" in job and "JobState=COMPLETED" in job
