"""The `clipablate` command: each subcommand is its `python -m` module, recipe and sweep names stand for files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPABLATE = [sys.executable, "-m", "clipablate"]  # what the console script `clipablate` runs


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLIPABLATE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_console_script_is_installed_with_the_project():
    script = Path(sys.executable).parent / "clipablate"
    assert script.exists(), "pip install -e . installs the clipablate command ([project.scripts])"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "subcommands:" in done.stdout  # no arguments: usage, exit 2


def test_a_subcommand_is_its_python_m_module_and_a_recipe_name_is_its_file():
    by_name = cli("config", "tiny_clip_neg", "optim.lr=2e-4")
    by_module = subprocess.run([sys.executable, "-m", "train.config", "recipes/tiny_clip_neg.yaml", "optim.lr=2e-4"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert by_name.returncode == by_module.returncode == 0
    assert by_name.stdout == by_module.stdout and "lr: 0.0002" in by_name.stdout


def test_unknown_names_list_the_alternatives_and_exit_2():
    unknown = cli("trian")
    assert unknown.returncode == 2 and "unknown subcommand 'trian'; one of: world, shards" in unknown.stderr
    recipe = cli("config", "tiny_clip_nge")
    assert recipe.returncode == 2 and "neither a recipe file nor a recipe name" in recipe.stderr
    assert "tiny_clip_neg" in recipe.stderr and "Traceback" not in recipe.stderr
    assert cli("--help").returncode == 0


def test_a_closed_pipe_ends_quietly():
    """`clipablate config clip_neg | head -1`: the reader is gone before the output is written (its end of the pipe
    is closed first, so every write fails with EPIPE): no traceback, no "Exception ignored" line."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([*CLIPABLATE, "config", "clip_neg", "--fidelity"], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_help_says_where_the_keys_are_and_describes_each_protocol():
    train = cli("train", "--help")
    assert train.returncode == 0 and "python -m train.config RECIPE" in train.stdout  # where the recipe keys are
    assert cli("train").returncode == 2  # no recipe: usage, exit 2
    llava = cli("llava", "--help")
    assert llava.returncode == 0 and "protocols (--protocol):" in llava.stdout
    for protocol in ("generative", "choice", "relaxed", "m3id", "vqascore"):
        assert f"  {protocol}: " in llava.stdout
    assert "python -m eval.llava table" in llava.stdout


def test_launch_checks_the_recipe_once_before_any_worker_and_keeps_the_trainers_exit_code():
    """A config error under `clipablate launch` is printed once, exit 2, no launcher traceback (plain accelerate
    launch prints it from rank 0 and then raises ChildFailedError, exit 1); a worker's own code comes through."""
    import subprocess as sp

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from train.launch import failure_code

    bad = cli("launch", "--config_file", "launch/accelerate/cpu_2proc.yaml", "tiny_clip_neg", "data.batch_size=abc")
    assert bad.returncode == 2 and bad.stderr.count("data.batch_size: expected an integer") == 1
    assert "Traceback" not in bad.stderr and "ChildFailedError" not in bad.stderr
    failures = {0: ProcessFailure(0, 10, -15, "<N/A>"), 1: ProcessFailure(1, 11, 75, "<N/A>")}
    failures[0].timestamp, failures[1].timestamp = 200, 100  # rank 1 failed first; the agent then stopped rank 0
    assert failure_code(ChildFailedError("finetune.py", failures)) == (75, "rank 1 (of 2 failed)")
    assert failure_code(sp.CalledProcessError(130, ["python"])) == (130, "the trainer")
    assert failure_code(ValueError("not a trainer failure")) is None
