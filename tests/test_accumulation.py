"""Exact global-batch loss under accumulation: the loss and gradients of one optimizer step are those of the whole
global batch (64 samples), whatever the micro-batch and the number of processes, for all four losses (float64,
tiny models, the real Trainer); and a finetune run with accumulation ends with the weights of one without."""

import sys

import pytest
import torch
from conftest import built_once
from safetensors.torch import load_file
from test_finetune import finetune_cmd, metrics, run

pytestmark = (
    pytest.mark.system
)  # the system tier (make test-all, CI): multi-process exactness of the loss and gradients

LAUNCH_2 = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate/cpu_2proc.yaml"]
CASES = ["tiny_clip_neg:clip", "tiny_clip_neg:negclip", "tiny_siglip_neg:siglip", "tiny_siglip_neg:siglip_neg",
         "tiny_clip_llm2vec_neg:negclip", "tiny_clip_pacl_neg:negclip", "tiny_siglip_pacl_neg:siglip_neg", "tiny_clip_sparc_neg:negclip"]  # fmt: skip


SPLITS = [("1x64", 64, None), ("1x4x16", 16, None), ("2x2x16", 16, LAUNCH_2)]


@pytest.fixture(scope="module")
def one_step(world_shards, tmp_path_factory):
    """Loss and gradients of the first global batch: 1 process x 1 micro-batch of 64, 1 x 4 x 16, 2 x 2 x 16
    (computed once per test run, shared by the xdist workers)."""

    def compute(out):
        for name, micro_batch, launcher in SPLITS:
            run(
                ["tests/accumulation_worker.py", str(out / f"{name}.pt"), str(world_shards), str(micro_batch)], launcher
            )

    out = built_once(tmp_path_factory, "accumulation", compute)
    return {name: torch.load(out / f"{name}.pt", weights_only=True) for name, _, _ in SPLITS}


@pytest.mark.parametrize("case", CASES)
def test_one_step_is_the_global_batch_for_any_micro_batch_and_process_count(one_step, case):
    whole, four, two = (one_step[name][case] for name in ("1x64", "1x4x16", "2x2x16"))
    assert (whole["accumulation"], four["accumulation"], two["accumulation"]) == (1, 4, 2)
    assert whole["grads"], "no gradients were computed"
    # The LLM's rotary embedding is computed in float32 (transformers' inv_freq) at positions that shift with the
    # left padding, and each micro-batch pads to its own longest text: float32-rounding differences, not float64.
    # Measured: loss 2.5e-10 relative, gradients 1.2e-8 of their largest entry. (Pass 2 reusing pass 1's LLM
    # outputs is bit-identical to running the LLM again.)
    llm = "llm2vec" in case
    for other in (four, two):
        assert other["loss"] == pytest.approx(whole["loss"], rel=1e-8 if llm else 1e-12, abs=1e-12)
        assert other["grads"].keys() == whole["grads"].keys()
        for name, grad in whole["grads"].items():
            if llm:
                assert (other["grads"][name] - grad).abs().max() <= 1e-6 * grad.abs().max(), name
            else:
                torch.testing.assert_close(other["grads"][name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_a_run_with_accumulation_ends_with_the_weights_of_one_without(world_shards, tmp_path):
    settings = ["train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1", "train.global_batch_size=64"]
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "one", *settings, "data.batch_size=64"))
    result = run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "four", *settings, "data.batch_size=16"))
    assert "= 16 x 1 processes x 4 accumulation (two-pass" in result.stdout
    one, four = tmp_path / "one" / "tiny_clip_neg", tmp_path / "four" / "tiny_clip_neg"
    for a, b in zip(metrics(one), metrics(four), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a = load_file(str(one / "checkpoints" / "step_4" / "trainable.safetensors"))
    b = load_file(str(four / "checkpoints" / "step_4" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
