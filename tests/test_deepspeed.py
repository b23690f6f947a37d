"""train/finetune.py under DeepSpeed ZeRO-2 and ZeRO-3 (the shipped accelerate configs), one CPU process.

accelerate runs several DeepSpeed processes only on GPUs, so what runs here is the recipe's side of DeepSpeed:
the batch plan handed to the engine (accumulation boundary, loss scaling), the temperature clamp on the fp32
master copy, and checkpoints written and resumed through the engine's own partitioned state.
"""

import json
import sys

import pytest
import torch
from conftest import built_once
from safetensors.torch import load_file
from test_finetune import finetune_cmd, metrics, run

pytestmark = pytest.mark.system  # the system tier (make test-all, CI): DeepSpeed processes under accelerate

SETTINGS = ["train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1", "train.checkpoint_every_steps=2"]


def deepspeed_launcher(stage: int) -> list[str]:
    config = f"launch/accelerate/deepspeed_zero{stage}.yaml"
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "1",
            "--mixed_precision", "no"]  # fmt: skip


def weights(run_dir, checkpoint: str) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / checkpoint / "trainable.safetensors"))


@pytest.fixture(scope="module")
def plain(world_shards, tmp_path_factory):
    """The same recipe without DeepSpeed, the run both stages must match: trained once per test run, shared by the
    xdist workers."""
    out = built_once(
        tmp_path_factory,
        "deepspeed_plain",
        lambda out: run(finetune_cmd("tiny_clip_neg", world_shards, out, *SETTINGS)),
    )
    return out / "tiny_clip_neg"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_trains_and_resumes_as_the_plain_recipe(stage, plain, world_shards, tmp_path):
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "ds", *SETTINGS), deepspeed_launcher(stage))
    ds = tmp_path / "ds" / "tiny_clip_neg"
    assert (ds / "checkpoints" / "step_2" / "deepspeed" / "latest").exists()  # the engine's own resume state
    assert [r["loss"] for r in metrics(ds)] == pytest.approx([r["loss"] for r in metrics(plain)], rel=1e-5)
    expected, got = weights(plain, "step_4"), weights(ds, "step_4")
    assert got.keys() == expected.keys() and "logit_scale" in got
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)

    resume = [f"train.resume={ds / 'checkpoints' / 'step_2'}", "run_name=resumed"]
    result = run(
        finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "ds", *SETTINGS, *resume), deepspeed_launcher(stage)
    )
    assert "at step 2" in result.stdout
    resumed = weights(tmp_path / "ds" / "resumed", "step_4")
    for name in got:
        torch.testing.assert_close(resumed[name], got[name], rtol=1e-6, atol=1e-6, msg=name)
    state = json.loads((tmp_path / "ds" / "resumed" / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["step"] == 4
