"""Nothing written is torn or silently wrong (issue 20): interrupts, torn logs, config guards, old run folders."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_finetune import finetune_cmd, metrics, run

from train.config import load_recipe
from train.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def start(world_shards: Path, tmp_path: Path, *settings: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "tiny_clip_finetune" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    return proc, tmp_path / "tiny_clip_finetune"


def test_a_first_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(world_shards, tmp_path):
    proc, run_dir = start(world_shards, tmp_path, "train.epochs=2", "train.log_every_steps=1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    assert "Ctrl-C: stopping after this step with a checkpoint" in err and "Traceback" not in err
    stopped_at = metrics(run_dir)[-1]["step"]
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{stopped_at}"


def test_a_second_ctrl_c_stops_at_once_in_one_line(world_shards, tmp_path):
    # Steps of the whole 512-sample batch take a second or more: both Ctrl-Cs land inside one step.
    proc, run_dir = start(world_shards, tmp_path, "train.epochs=50", "train.log_every_steps=1",
                          "data.batch_size=64", "train.global_batch_size=512", "optim.warmup_steps=1")  # fmt: skip
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "finetune: interrupted" in err and "Traceback" not in err


def back_to_step_2(run_dir: Path) -> None:
    """The run folder as a kill after checkpoint step_2 of a 4-step run leaves it: latest names step_2."""
    import shutil

    checkpoints = run_dir / "checkpoints"
    for later in checkpoints.glob("step_*"):
        if later.name != "step_2":
            shutil.rmtree(later)
    (checkpoints / "latest").write_text("step_2")


SHORT = ["train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1", "train.checkpoint_every_steps=2"]


def test_a_torn_last_metrics_line_is_dropped_on_resume(world_shards, tmp_path):
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    run_dir = tmp_path / "tiny_clip_finetune"
    back_to_step_2(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "epoch": 0, "lo')  # a kill in the middle of a write
    result = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"))
    assert "line 5 was cut short by an interrupted write; dropped" in result.stdout
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", "optim.lr: expected a finite number"),
        ("optim.lr=inf", "optim.lr: expected a finite number"),
        ("optim.weight_decay=-inf", "optim.weight_decay: expected a finite number"),
        ("run_name=../escaped", "run_name: '../escaped' is not a plain folder name"),
        ("run_name=/tmp/elsewhere", "run_name: '/tmp/elsewhere' is not a plain folder name"),
    ],
)
def test_config_guards(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(ROOT / "recipes" / "tiny_clip_neg.yaml", [override])


def test_a_run_started_before_the_schema_gained_a_key_resumes(world_shards, tmp_path):
    """A key added to the schema after a run started holds its default in that run: resuming is allowed."""
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    run_dir = tmp_path / "tiny_clip_finetune"
    back_to_step_2(run_dir)
    config = run_dir / "config.yaml"
    text = config.read_text()
    assert "  logit_scale_clamp: pretrained\n" in text
    config.write_text(text.replace("  logit_scale_clamp: pretrained\n", ""))  # as a config written before it
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"))
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_4"
