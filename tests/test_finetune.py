"""train/finetune.py end to end on the generated world: every tiny recipe, resume after a kill, 1 vs 2 processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.checkpoints import list_checkpoints
from train.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = sorted(p.stem for p in (ROOT / "recipes").glob("tiny_*.yaml"))


def finetune_cmd(recipe: str, shards: Path, out: Path, *overrides: str) -> list[str]:
    return [
        "train/finetune.py",
        f"recipes/{recipe}.yaml",
        f"data.shards=[{shards}]",
        f"output_dir={out}",
        f"cache_dir={out}/feature_cache",
        "data.workers=0",
        *overrides,
    ]


def run(
    args: list[str], launcher: list[str] | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})}
    cmd = (launcher or [sys.executable]) + args
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", TINY)
def test_every_tiny_recipe_trains_and_leaves_a_self_describing_run(recipe, world_shards, tmp_path):
    result = run(finetune_cmd(recipe, world_shards, tmp_path, "train.max_steps=3", "optim.warmup_steps=1",
                              "train.log_every_steps=1"))  # fmt: skip
    assert "trainable" in result.stdout and "frozen" in result.stdout  # the parameter table
    assert "micro-batch: auto: " not in result.stdout  # the recipe's micro-batch
    run_dir = tmp_path / recipe
    assert (run_dir / "config.yaml").exists() and (run_dir / "starts.jsonl").exists()
    start = json.loads((run_dir / "starts.jsonl").read_text().splitlines()[0])
    assert start["argv"][0] == f"recipes/{recipe}.yaml" and "git_commit" in start["code"]
    # the torch threads it chose, and why: its share of the cores unless OMP_NUM_THREADS or the recipe says
    assert start["cpu_threads"] >= 1 and start["cpu_threads_from"]
    records = metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert {"lr", "samples_per_s", "data_wait_share", "epoch"} <= set(records[0])
    # the text tower encodes the captions and the real hard negatives only (no copies for samples without one)
    global_batch = load_recipe(run_dir / "config.yaml").train.global_batch_size
    assert [r["texts_per_step"] for r in records] == [global_batch + r.get("negatives_per_step", 0) for r in records]
    if "neg" in recipe:
        assert any(r["negatives_per_step"] > 0 for r in records)
    checkpoint = run_dir / "checkpoints" / "step_3"
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_3"
    assert (checkpoint / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    weights = load_file(str(checkpoint / "trainable.safetensors"))
    assert weights and "logit_scale" in weights
    # readable as every other file of the run (the umask's mode; safetensors alone writes 0600)
    modes = {p.name: p.stat().st_mode & 0o777 for p in checkpoint.iterdir()}
    assert set(modes.values()) == {(run_dir / "config.yaml").stat().st_mode & 0o777}, modes
    if "llm2vec" in recipe:  # the frozen LLM is rebuilt from the config, never stored
        assert all("llm" not in name or "connector" in name for name in weights), list(weights)[:10]


@pytest.mark.system
@pytest.mark.parametrize(
    ("workers", "kill_after_step"),
    [(0, 6), (2, 7)],  # right after checkpoint step_6 / mid-way between step_6 and step_9, with 2 loader workers
    ids=["after-checkpoint-0-workers", "mid-way-2-workers"],
)
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(world_shards, tmp_path, workers, kill_after_step):
    settings = [
        "train.epochs=2",
        "train.checkpoint_every_steps=3",
        "train.log_every_steps=1",
        f"data.workers={workers}",
    ]
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "whole", *settings))
    whole = tmp_path / "whole" / "tiny_clip_neg"

    killed_dir = tmp_path / "killed"
    partial = killed_dir / "tiny_clip_neg"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *finetune_cmd("tiny_clip_neg", world_shards, killed_dir, *settings)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reached() -> bool:
        if kill_after_step % 3 == 0:
            return (partial / "checkpoints" / f"step_{kill_after_step}").exists()
        log = partial / "metrics.jsonl"
        return log.exists() and any(f'"step": {kill_after_step},' in line for line in log.read_text().splitlines())

    deadline = time.time() + 300
    while not reached() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = [r["step"] for r in metrics(partial)]
    total = metrics(whole)[-1]["step"]
    assert kill_after_step <= done_before_kill[-1] < total, (
        "the run must be killed mid-way for this test to mean anything"
    )
    # train.resume=latest takes the newest intact checkpoint: a kill between a checkpoint's rename and the update of
    # `latest` leaves the newer one complete, and resume rightly starts there.
    last_checkpoint = list_checkpoints(partial / "checkpoints")[-1].name

    result = run(finetune_cmd("tiny_clip_neg", world_shards, killed_dir, *settings, "train.resume=latest"))
    assert f"resumed from {partial / 'checkpoints' / last_checkpoint}" in result.stdout
    final = "epoch_2"
    a = load_file(str(whole / "checkpoints" / final / "trainable.safetensors"))
    b = load_file(str(partial / "checkpoints" / final / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # Each step is logged once: the lines after the checkpoint, logged before the kill, were dropped and redone.
    assert [r["step"] for r in metrics(partial)] == [r["step"] for r in metrics(whole)] == list(range(1, total + 1))
    resumed = {r["step"]: r["loss"] for r in metrics(partial)}
    assert all(resumed[r["step"]] == r["loss"] for r in metrics(whole))


def start_in_background(world_shards: Path, tmp_path: Path, *settings: str) -> tuple[subprocess.Popen, Path]:
    """tiny_clip_finetune started in a subprocess, returned once its first metrics line is written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "tiny_clip_finetune" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    return proc, tmp_path / "tiny_clip_finetune"


def test_a_signal_stops_at_a_step_boundary_with_a_checkpoint(world_shards, tmp_path):
    settings = ["train.epochs=2", "train.log_every_steps=1", "train.resume=latest"]
    proc, _ = start_in_background(world_shards, tmp_path, *settings)
    proc.send_signal(signal.SIGUSR1)  # what `sbatch --signal=B:USR1@180` sends before the time limit
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    stopped_at = metrics(tmp_path / "tiny_clip_finetune")[-1]["step"]
    checkpoints = tmp_path / "tiny_clip_finetune" / "checkpoints"
    assert (checkpoints / "latest").read_text() == f"step_{stopped_at}"
    assert f"stopped on a signal at step {stopped_at}" in err
    result = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings))
    assert f"resumed from {checkpoints / f'step_{stopped_at}'}" in result.stdout
    assert (checkpoints / "latest").read_text() == "epoch_2"


@pytest.mark.system
def test_two_processes_give_the_loss_curve_of_one(world_shards, tmp_path):
    settings = ["train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1"]
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "one", *settings))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate/cpu_2proc.yaml"]
    result = run(
        finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "two", *settings, "data.batch_size=16"), launcher
    )
    assert "= 16 x 2 processes x 2 accumulation" in result.stdout
    one = metrics(tmp_path / "one" / "tiny_clip_neg")
    two = metrics(tmp_path / "two" / "tiny_clip_neg")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr"] == b["lr"]


@pytest.mark.system
def test_train_launch_passes_the_trainers_exit_code_without_a_launcher_traceback(world_shards, tmp_path):
    """`python -m train.launch` (clipablate launch) = accelerate launch train/finetune.py: two processes train; a
    second start over the finished run fails on both ranks with finetune's exit 1, reported in one line."""
    launcher = [sys.executable, "-m", "train.launch", "--config_file", "launch/accelerate/cpu_2proc.yaml"]
    args = finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, "train.max_steps=1", "optim.warmup_steps=0")[1:]
    run(args, launcher)
    assert [r["step"] for r in metrics(tmp_path / "tiny_clip_finetune")] == [1]
    again = run(args, launcher, check=False)
    # both ranks stop with finetune's exit 1; torchrun may stop the second before it fails on its own
    assert again.returncode == 1 and re.search(r"launch: rank \d \(of [12] failed\) exited with 1", again.stderr)
    assert "Traceback" not in again.stderr and "train.resume=latest" in again.stderr


@pytest.mark.system
def test_train_compile_gives_the_losses_and_weights_of_eager(world_shards, tmp_path):
    """train.compile=true compiles the trainable text tower (tiny_clip_neg: the image tower is locked) with dynamic
    shapes, as the hard negatives vary the text rows: the same losses and weights within float tolerance, the same
    checkpoint names. Its speed is make gpu-check's to measure."""
    settings = ["train.max_steps=3", "optim.warmup_steps=1", "train.log_every_steps=1", "cache=off"]
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "eager", *settings))
    compiled = run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "compiled", *settings, "train.compile=true"))
    assert "torch.compile (train.compile): text tower" in compiled.stdout
    eager, built = tmp_path / "eager" / "tiny_clip_neg", tmp_path / "compiled" / "tiny_clip_neg"
    assert [r["loss"] for r in metrics(built)] == pytest.approx([r["loss"] for r in metrics(eager)], rel=1e-4)
    a = load_file(str(eager / "checkpoints" / "step_3" / "trainable.safetensors"))
    b = load_file(str(built / "checkpoints" / "step_3" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-5, msg=name)


def test_a_finished_run_is_not_overwritten_and_a_resume_must_keep_the_config(world_shards, tmp_path):
    settings = ["train.max_steps=2", "optim.warmup_steps=1"]
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings))
    again = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings), check=False)
    assert again.returncode == 1 and "train.resume=latest" in again.stderr and "Traceback" not in again.stderr
    changed = run(
        finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *settings, "optim.lr=1", "train.resume=latest"),
        check=False,
    )
    assert changed.returncode == 1 and "config changed since the run started" in changed.stderr
    assert "optim.lr: 0.0001 -> 1.0" in changed.stderr and "Traceback" not in changed.stderr


def test_an_auto_micro_batch_on_a_cpu_is_one_pass(world_shards, tmp_path):
    result = run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "data.batch_size=0", "train.max_steps=1",
                              "optim.warmup_steps=0"))  # fmt: skip
    assert "micro-batch: auto: 64, one pass (no device memory limit)" in result.stdout
    assert "global batch 64 = 64 x 1 processes x 1 accumulation" in result.stdout


def test_a_smoke_run_can_be_extended_and_its_logging_changed_on_resume(world_shards, tmp_path):
    """max_steps, W&B, workers, logging: allowed on resume (the method is the same); the schedule keeps the first
    start's length unless train.stretch_schedule; config.yaml and starts.jsonl say what changed."""
    settings = ["train.max_steps=2", "optim.warmup_steps=1", "train.log_every_steps=1"]
    for name in ("kept", "stretched"):
        run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path / name, *settings))
    more = ["train.max_steps=4", "train.resume=latest", "data.workers=1", "wandb.project=another"]
    kept = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path / "kept", *settings, *more))
    stretched = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path / "stretched", *settings, *more,
                                 "train.stretch_schedule=true"))  # fmt: skip
    changes = "data.workers: 0 -> 1; train.max_steps: 2 -> 4; wandb.project: 'clipablate' -> 'another'"
    assert f"resume with changes: {changes}" in kept.stdout
    assert "keeps its length of 2 steps from the first start, so steps 3-4 run at its final lr" in kept.stdout
    assert "stretched from 2 to 4 steps" in stretched.stdout
    run_dir = tmp_path / "kept" / "tiny_clip_finetune"
    lrs = [r["lr"] for r in metrics(run_dir)]
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4] and lrs[2:] == [0.0, 0.0]  # cosine ended at step 2
    stretched_lrs = [r["lr"] for r in metrics(tmp_path / "stretched" / "tiny_clip_finetune")]
    assert stretched_lrs[:2] == lrs[:2] and stretched_lrs[2] > 0  # the schedule spread over 4 steps
    starts = [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]
    assert starts[1]["config_changes"]["train.max_steps"] == [2, 4]
    assert load_recipe(run_dir / "config.yaml").train.max_steps == 4  # what the run now is
    assert json.loads((run_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text())["schedule_steps"] == 2


def test_a_run_folder_stands_where_a_recipe_goes_even_after_a_move(world_shards, tmp_path):
    """`finetune.py RUN_FOLDER` continues that run, in that folder, though it was moved after its first start; the
    other tools read the same folder the same way."""
    from eval.run import parse_args
    from train.config import load_recipe

    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path / "first", "train.max_steps=2",
                     "optim.warmup_steps=1", "train.log_every_steps=1"))  # fmt: skip
    moved = tmp_path / "moved" / "renamed"
    moved.parent.mkdir()
    (tmp_path / "first" / "tiny_clip_finetune").rename(moved)
    cfg = load_recipe(moved)
    assert (cfg.output_dir, cfg.run_name) == (str(moved.parent), "renamed")  # the folder, not the recorded place
    assert load_recipe(moved, [f"output_dir={tmp_path}/elsewhere"]).output_dir == f"{tmp_path}/elsewhere"
    resumed = run(["train/finetune.py", str(moved), "train.max_steps=3"])
    assert "resume with changes" in resumed.stdout and [r["step"] for r in metrics(moved)] == [1, 2, 3]
    assert not (tmp_path / "first" / "tiny_clip_finetune").exists()
    assert parse_args([str(moved)]).run == parse_args(["--run", str(moved)]).run == moved
    with pytest.raises(SystemExit):
        parse_args([str(moved), "--run", str(moved)])  # given twice


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_samples(world_shards, tmp_path, monkeypatch, capsys):
    from train import finetune

    real_build_loss = finetune.build_loss
    calls = {"n": 0}

    def poisoned(name, similarity=None):
        loss_fn = real_build_loss(name, similarity)

        def compute(*args, **kwargs):
            calls["n"] += 1
            loss = loss_fn(*args, **kwargs)
            return loss * float("nan") if calls["n"] == 3 else loss  # one global-batch loss per step: step 3

        return compute

    monkeypatch.setattr(finetune, "build_loss", poisoned)
    args = finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "train.max_steps=6", "optim.warmup_steps=1",
                        "train.checkpoint_every_steps=1")[1:]  # fmt: skip
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    assert finetune.cli(args) == 1
    # In-process training gives the caller its signal handlers back (a flag-only SIGTERM handler left behind made a
    # later fork pool impossible to terminate).
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before
    err = capsys.readouterr().err
    assert "loss is nan at step 3" in err and "batch sample keys on rank 0: [" in err
    checkpoints = tmp_path / "tiny_clip_neg" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_1", "step_2"]
    assert (checkpoints / "latest").read_text() == "step_2"


def test_non_finite_gradients_are_never_applied(world_shards, tmp_path, monkeypatch, capsys):
    """A finite loss with NaN gradients (step 3): the step is not applied, the run stops naming step and samples."""
    from train import finetune

    # 2 backward passes per step (2 micro-batches): calls 5 and 6 are step 3
    poison_text_gradients(monkeypatch, finetune, float("nan"), lambda call: call >= 5)
    args = finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "train.max_steps=6", "optim.warmup_steps=1",
                        "train.checkpoint_every_steps=1", "train.log_every_steps=1")[1:]  # fmt: skip
    assert finetune.cli(args) == 1
    err = capsys.readouterr().err
    assert "gradients are not finite (norm nan) at step 3" in err and "the step was not applied" in err
    assert "batch sample keys on rank 0: [" in err
    run_dir = tmp_path / "tiny_clip_neg"
    assert [r["step"] for r in metrics(run_dir)] == [1, 2]
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_1", "step_2"]
    assert (checkpoints / "latest").read_text() == "step_2"
    weights = load_file(str(checkpoints / "step_2" / "trainable.safetensors"))
    assert all(w.isfinite().all() for w in weights.values())


def poison_text_gradients(monkeypatch, finetune, factor: float, on_call) -> None:
    """Multiplies one trainable text-tower parameter's gradient by `factor` in the backward calls (counted from 1)
    that `on_call` picks, in the models finetune builds."""
    real_build_model = finetune.build_model
    calls = {"n": 0}

    def poisoned(cfg):
        bundle = real_build_model(cfg)
        param = next(p for p in bundle.model.text_tower.parameters() if p.requires_grad)

        def hook(grad):
            calls["n"] += 1
            return grad * factor if on_call(calls["n"]) else grad

        param.register_hook(hook)
        return bundle

    monkeypatch.setattr(finetune, "build_model", poisoned)


def test_a_checkpoint_is_never_written_with_non_finite_weights(world_shards, tmp_path, monkeypatch, capsys):
    from train import finetune

    real_clamp = finetune.clamp_logit_scale
    steps = {"n": 0}

    def corrupting(param, ceiling, deepspeed):
        real_clamp(param, ceiling, deepspeed)
        steps["n"] += 1
        if steps["n"] == 3:  # finite gradients, but after step 3 a weight is NaN (as an overflowing update would be)
            with torch.no_grad():
                param.fill_(float("nan"))

    monkeypatch.setattr(finetune, "clamp_logit_scale", corrupting)
    args = finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "train.max_steps=6", "optim.warmup_steps=1",
                        "train.checkpoint_every_steps=1")[1:]  # fmt: skip
    assert finetune.cli(args) == 1
    err = capsys.readouterr().err
    assert "weights are not finite after step 3" in err and "checkpoint step_3 not written" in err
    checkpoints = tmp_path / "tiny_clip_neg" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_1", "step_2"]
    assert (checkpoints / "latest").read_text() == "step_2"


def test_one_wandb_run_per_run_folder_across_resumes(world_shards, tmp_path):
    """The id is stored in the run folder: a resumed start logs to the same W&B run (offline: a second offline-run
    folder with the same id, which `wandb sync` appends); resuming a finished run opens none."""
    settings = ["optim.warmup_steps=1", "train.log_every_steps=1", "wandb.mode=offline", "wandb.group=sweep-a"]
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, "train.max_steps=2", *settings))
    run_dir = tmp_path / "tiny_clip_finetune"
    train_id = json.loads((run_dir / "wandb_ids.json").read_text())["train"]
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, "train.max_steps=3", "train.resume=latest",
                     *settings))  # fmt: skip
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{train_id}") for p in offline)
    [log] = list(offline[-1].glob("*.wandb"))
    record = log.read_bytes()
    assert b"train/loss" in record and b"recipe:tiny_clip_finetune" in record and b"sweep:sweep-a" in record
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, "train.max_steps=3", "train.resume=latest",
                     *settings))  # fmt: skip
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2  # nothing left to train: no W&B run


def test_a_run_that_cannot_fit_the_gpu_stops_before_loading_weights(world_shards, tmp_path, monkeypatch, capsys):
    from train import finetune

    monkeypatch.setattr(finetune, "device_total_bytes", lambda device: 2**20)  # a 1 MiB "GPU"
    monkeypatch.setattr(finetune, "build_model", lambda cfg: pytest.fail("weights were loaded"))
    args = finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "train.max_steps=2", "optim.warmup_steps=1")[1:]
    assert finetune.cli(args) == 2  # a config error, as in every tool
    captured = capsys.readouterr()
    assert "GPU memory per device (estimate)" in captured.out
    assert "memory estimate (train.check_memory=false to start anyway)" in captured.err and "GiB" in captured.err


@pytest.mark.parametrize(("recipe", "frozen"), [("tiny_clip_neg", "image"), ("tiny_clip_llm2vec_neg", "both")])
def test_the_two_pass_step_runs_frozen_parts_once_per_micro_batch(world_shards, tmp_path, monkeypatch, recipe, frozen):
    """Pass 2 of an accumulated step starts from pass 1's outputs of the frozen parts (locked image tower, the
    LLM2Vec LLM): they run once per micro-batch, the trainable parts twice (their equality with the one-pass step,
    over 1 and 2 processes, is tests/test_accumulation.py's)."""
    from accelerate import Accelerator

    from models import build_model
    from train import finetune
    from train.data import BatchPlan, Collate, ShardSamples, epoch_loader, index_shards
    from train.finetune import Trainer

    cfg = load_recipe(recipe, [f"data.shards=[{world_shards}]", "data.batch_size=16", "train.global_batch_size=32",
                               "cache=off", "optim.warmup_steps=1", f"cache_dir={tmp_path}"])  # fmt: skip
    bundle = build_model(cfg.model, cache_dir=tmp_path)
    model = bundle.model
    index = index_shards(cfg.data.shards)
    plan = BatchPlan(len(index), 32, 16, 1)
    trainer = Trainer(cfg, Accelerator(cpu=True), model, plan, total_steps=10, run_dir=tmp_path / "run")
    samples = ShardSamples(index, bundle.preprocess_train, cfg.data.caption_policy, cfg.seed)
    stream = epoch_loader(samples, plan, Collate(bundle.tokenizer, with_negatives=True), epoch=0, rank=0)
    calls = {"image": 0, "text": 0}
    text_part = model.text_tower.llm2vec if model.connector is not None else model.text_tower
    model.image_tower.register_forward_hook(lambda *_: calls.__setitem__("image", calls["image"] + 1))
    text_part.register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1))
    batches = [next(stream), next(stream)]
    loss = trainer.accumulate_gradients(batches)
    assert calls == ({"image": 2, "text": 4} if frozen == "image" else {"image": 2, "text": 2})
    grads = [p.grad.clone() for p in trainer.trainable]
    assert any(g.abs().sum() > 0 for g in grads)
    # bit-identical to running the frozen parts again in pass 2
    trainer.optimizer.zero_grad(set_to_none=True)
    monkeypatch.setattr(finetune, "reuse_frozen", lambda batch, out: batch)
    assert trainer.accumulate_gradients(batches) == loss
    assert all(torch.equal(p.grad, g) for p, g in zip(trainer.trainable, grads, strict=True))
