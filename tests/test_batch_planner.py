"""train/batch_planner.py: data.batch_size 0 (auto) picks the largest micro-batch that fits by the memory estimate,
counting the frozen parts a cache replaces as freed; training frees them."""

import pytest
import torch

from models.contrastive import ReleasedPart
from train.batch_planner import plan_micro_batch, released_parts
from train.config import load_recipe

H100 = 80 * 10**9


def test_the_unlocked_llm2vec_run_fits_one_pass_once_the_cached_llm_is_freed():
    """Real SigLIP ViT-L/16-384 + the 7B LLM (built on the meta device): with the LLM in memory only two passes of
    64 fit an 80 GB GPU; its outputs come from the LLM cache, so training frees it and 128 fits in one pass."""
    cfg = load_recipe("siglip_llm2vec_unlocked_neg", ["profile=clipablate"])
    assert cfg.data.batch_size == 0
    released = released_parts(cfg, trained_samples=10**7, samples=1_182_738)
    assert released == {"llm"}  # the image tower trains: not cached
    freed = plan_micro_batch(cfg, 4, H100, released=released)
    kept = plan_micro_batch(cfg, 4, H100)
    assert (freed.micro_batch, freed.accumulation) == (128, 1) and "one pass" in freed.how
    assert (kept.micro_batch, kept.accumulation) == (64, 2)
    assert kept.tried[0][0] == 128 and kept.tried[0][1] > freed.tried[0][1] + 14  # the 7B LLM's bf16 weights
    # a smoke run under cache=auto builds no cache: nothing is freed
    assert released_parts(cfg, trained_samples=512, samples=1_182_738) == frozenset()


def test_auto_is_one_pass_without_a_device_limit_and_a_given_batch_is_kept():
    cfg = load_recipe("tiny_clip_neg", ["data.batch_size=0"])
    plan = plan_micro_batch(cfg, 2, None)
    assert (plan.micro_batch, plan.accumulation) == (cfg.train.global_batch_size // 2, 1)
    given = plan_micro_batch(load_recipe("tiny_clip_neg", ["data.batch_size=16"]), 1, H100)
    assert given.micro_batch == 16 and given.estimate is None


def test_a_released_part_holds_no_weights_and_refuses_to_run():
    from models import build_model

    bundle = build_model(load_recipe("tiny_clip_llm2vec_neg").model)
    model = bundle.model
    before = sum(p.numel() for p in model.parameters())
    connector = sum(p.numel() for p in model.connector.parameters())
    assert model.release_frozen_parts(image=True, text=True) == ["image tower", "LLM2Vec LLM"]
    after = sum(p.numel() for p in model.parameters())
    assert after == connector + model.logit_scale.numel() + (
        model.logit_bias.numel() if model.logit_bias is not None else 0
    )
    assert after < before and isinstance(model.image_tower, ReleasedPart)
    llm_width, embed = model.connector[0].in_features, model.connector[-1].out_features
    out = model(None, None, image_frozen=torch.randn(2, embed), text_frozen=torch.randn(3, llm_width))
    assert out["image_features"].shape == (2, embed) and out["text_features"].shape == (3, embed)
    with pytest.raises(RuntimeError, match="the image tower was freed"):
        model(torch.zeros(1, 3, 32, 32), None, text_frozen=torch.randn(1, llm_width))
