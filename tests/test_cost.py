"""train/cost.py and launch.sweep --estimate: FLOPs counted on the meta device, GPU-hours with and without caches."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from launch import sweep
from models.config import LLM2VecConfig, ModelConfig, TextTowerConfig
from train import cost
from train.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_vit_l14_336_image_forward_agrees_with_a_hand_count():
    # CLIP ViT-L/14-336 from its architecture: 24 layers, width 1024, MLP 4096, 336/14 = 24 x 24 = 576 patches plus
    # the class token = 577 tokens; 2 FLOPs per multiply-add.
    layers, width, mlp, tokens, patches = 24, 1024, 4096, 577, 576
    patch_embedding = 2 * patches * (14 * 14 * 3) * width
    attention = 2 * 2 * tokens**2 * width  # QK^T and AV
    projections = 2 * 4 * tokens * width**2  # Q, K, V and output
    mlp_flops = 2 * 2 * tokens * width * mlp  # up and down
    final_projection = 2 * width * 768
    hand = patch_embedding + layers * (attention + projections + mlp_flops) + final_projection  # 381.9 GFLOP

    flops = cost.model_flops(ModelConfig(name="clip-vit-l14-336"), 0)
    image = flops.parts["image"]
    assert image.tokens == tokens and not image.trains and image.attention == "counted"
    assert image.forward == pytest.approx(hand, rel=0.02)
    # the text tower trains: forward + backward is about three forwards (no input gradient at the embedding)
    text = flops.parts["text"]
    assert text.trains and text.tokens == 77 and 2.5 * text.forward < text.train < 3.1 * text.forward


def test_llama_2_7b_forward_agrees_with_a_hand_count_and_attention_is_counted():
    llm = LLM2VecConfig(base_model="McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp")  # architecture known offline
    model_cfg = ModelConfig(name="tiny-clip", text=TextTowerConfig(tower="llm2vec", llm2vec=llm))
    tokens, layers, width, mlp = 128, 32, 4096, 11008
    hand = layers * (2 * tokens * 4 * width**2 + 2 * tokens * 3 * width * mlp + 2 * 2 * tokens**2 * width)
    part = cost.model_flops(model_cfg, tokens).parts["llm"]
    assert part.forward == pytest.approx(hand, rel=0.02) and part.attention == "counted" and not part.trains


def test_attention_the_counter_misses_is_added_analytically(monkeypatch):
    counted = cost.model_flops(ModelConfig(name="tiny-clip"), 0).parts["image"]
    monkeypatch.setattr(cost, "ATTENTION_OPS", ("no-such-op",))  # as if FlopCounterMode saw no attention op
    flops = cost.model_flops.__wrapped__(ModelConfig(name="tiny-clip"), 0)
    image = flops.parts["image"]
    from models.memory import _image_shape, model_on_meta

    shape = _image_shape(model_on_meta(ModelConfig(name="tiny-clip")).image_tower)
    assert image.attention == "added" and counted.attention == "counted"
    assert image.forward == pytest.approx(counted.forward + shape.layers * 4 * shape.tokens**2 * shape.width)
    assert any("image tower: FlopCounterMode saw" in note for note in flops.notes)


def test_a_recipe_table_has_every_part_and_the_caches():
    # The released profile crops the locked tower's images (data.augment): its image forward runs every epoch.
    released = cost.estimate_run(load_recipe(ROOT / "recipes" / "clip_llm2vec_neg.yaml"))
    image, llm, _ = released.parts
    assert not image.cached and image.cached_gflop == image.uncached_gflop == image.forward_gflop and llm.cached
    assert [c.kind for c in released.caches] == ["text"]
    # Our choice (the eval transform) makes it cacheable.
    est = cost.estimate_run(load_recipe(ROOT / "recipes" / "clip_llm2vec_neg.yaml", ["data.augment=false"]))
    assert [p.part for p in est.parts] == ["image", "llm", "connector"]
    assert est.samples == cost.PAPER_DATA.samples == 558_128 + 665_298 - 40_688
    assert (
        est.processes == 4 and est.accumulation == 1 and est.texts_per_sample == pytest.approx(1 + 13_218 / 1_182_738)
    )
    image, llm, connector = est.parts
    assert image.cached and llm.cached and not connector.cached and connector.trains
    assert llm.uncached_gflop == pytest.approx(est.texts_per_sample * llm.forward_gflop)  # caption, real negatives
    assert est.cached_training_gpu_hours < 0.01 * est.uncached_gpu_hours
    kinds = {c.kind: c for c in est.caches}
    assert kinds["image"].forwards == est.samples
    assert kinds["text"].forwards == est.samples + cost.PAPER_DATA.samples_with_negative
    table = cost.format_run(est)
    for label in ("image tower", "LLM2Vec LLM", "connector", "cached total", "LLM cache", "image-feature cache"):
        assert label in table
    assert "128 (assumed" in table and "samples assumed" in table

    unlocked = cost.estimate_run(load_recipe(ROOT / "recipes" / "siglip_unlocked_neg.yaml"))
    image, text = unlocked.parts
    assert image.trains and text.trains and not image.cached and unlocked.caches == []
    assert unlocked.accumulation == 2  # 512 = 64 x 4 x 2: two passes, one more forward of each part
    assert image.uncached_gflop == pytest.approx(image.train_gflop + image.forward_gflop)
    assert text.tokens == 64 and "fwd+bwd" in cost.format_run(unlocked)
    # a frozen part runs once per step even in two passes (pass 2 reuses its outputs)
    two_pass = cost.estimate_run(load_recipe(ROOT / "recipes" / "clip_llm2vec_neg.yaml", ["data.batch_size=64"]))
    image, llm, _ = two_pass.parts
    assert two_pass.passes == 2 and image.uncached_gflop == pytest.approx(image.forward_gflop)
    assert llm.uncached_gflop == pytest.approx(two_pass.texts_per_sample * llm.forward_gflop)


def test_a_sweep_counts_a_shared_cache_once(world_shards, tmp_path, capsys):
    out = tmp_path / "cost.json"
    argv = ["launch/sweeps/tiny_grid.yaml", "--estimate", f"data.shards=[{world_shards}]"]
    argv += ["--output-dir", str(tmp_path / "runs"), "--gpu", "a100", "--utilisation", "0.5", "--out", str(out)]
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "image 1" in printed and "Totals" in printed
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 4  # tiny_clip_finetune and tiny_clip_neg, seeds 0 and 1: one image-feature cache
    (image_cache,) = data["caches"]
    assert image_cache["kind"] == "image" and len(image_cache["runs"]) == 4
    assert image_cache["forwards"] == sum(json.loads((world_shards / "sizes.json").read_text()).values())
    totals = data["totals"]
    assert totals["cache_gpu_hours"] == pytest.approx(image_cache["gpu_hours"])
    assert totals["unshared_cache_gpu_hours"] == pytest.approx(4 * image_cache["gpu_hours"])
    assert totals["cached_gpu_hours"] == pytest.approx(totals["cached_training_gpu_hours"] + image_cache["gpu_hours"])
    assert totals["cached_gpu_hours"] < totals["uncached_gpu_hours"]
    run = data["runs"][0]
    assert run["gpu"] == "a100" and run["utilisation"] == 0.5 and run["steps"] == 2 * (700 // 64)


def test_an_unknown_gpu_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match=r"unknown GPU 'v100': one of a100, h100, h200"):
        cost.gpu_peak("v100", "bf16")
    assert cost.main(["recipes/tiny_clip_neg.yaml", "--gpu", "v100"]) == 2
    assert "unknown GPU 'v100'" in capsys.readouterr().err
    assert sweep.main(["launch/sweeps/tiny_grid.yaml", "--estimate", "--utilisation", "40"]) == 2
    assert "utilisation 40.0" in capsys.readouterr().err


def test_the_command_runs_on_a_tiny_recipe_and_a_paper_recipe_without_downloading(world_shards, tmp_path):
    out = tmp_path / "tiny.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "train.cost", "recipes/tiny_clip_llm2vec_neg.yaml", f"data.shards=[{world_shards}]"]
    result = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| LLM2Vec LLM | no | 58 |" in result.stdout  # measured on the shards: each pass padded to its longest
    tiny = json.loads(out.read_text())
    assert tiny["samples"] == 700 and {c["kind"] for c in tiny["caches"]} == {"image", "text"}

    paper = cost.estimate_run(load_recipe(ROOT / "recipes" / "siglip_llm2vec_neg.yaml"), gpu="H200")
    assert paper.gpu == "h200" and [p.part for p in paper.parts] == ["image", "llm", "connector"]
    assert paper.parts[0].tokens == 576  # SigLIP: 24 x 24 patches, no class token


def test_cache_auto_is_estimated_as_the_run_decides(world_shards):
    """A smoke run shorter than one pass over the data builds no cache under cache=auto (train/cache.py's rule), so
    its estimate is uncached and says why; cache=on (or a run that covers the data) counts the build."""
    shards = f"data.shards=[{world_shards}]"
    smoke = cost.estimate_run(load_recipe("tiny_clip_neg", [shards, "train.max_steps=1", "optim.warmup_steps=0"]))
    assert smoke.caches == [] and smoke.cached_training_pflop == smoke.uncached_pflop
    assert any(a.startswith("cache=auto: 64 trained samples, fewer than the 700") for a in smoke.assumptions)
    forced = cost.estimate_run(
        load_recipe("tiny_clip_neg", [shards, "train.max_steps=1", "optim.warmup_steps=0", "cache=on"])
    )
    full = cost.estimate_run(load_recipe("tiny_clip_neg", [shards]))
    assert [c.kind for c in forced.caches] == [c.kind for c in full.caches] == ["image"]
    assert forced.cached_training_pflop < forced.uncached_pflop


def test_the_flop_floor_of_the_paper_grid_and_sweeps_estimated_together(capsys):
    """The 12-run grid (Table 5 + the unlocked SigLIP runs), estimated together: the LLM cache both sweeps read is
    built once; the floor counts what the math needs and every estimate is at least that."""
    assert cost.main(["paper_table5", "paper_unlocked", "profile=clipablate", "--floor", "--gpu", "h100"]) == 0
    printed = capsys.readouterr().out
    assert "## FLOP floor of paper_table5 + paper_unlocked" in printed and "| FLOP floor | 3.34e+19 | 9.4 |" in printed
    grid = cost.estimate_sweeps(["paper_table5", "paper_unlocked"], ["profile=clipablate"])
    assert len(grid.runs) == 12 and grid.runs[0].name == "paper_table5/clip_finetune"
    (llm_cache,) = [c for c in grid.caches if c.build.kind == "text" and "LLM" in c.build.what]
    assert len(llm_cache.runs) == 6  # 4 locked + 2 unlocked LLM2Vec runs, one build
    assert grid.floor_pflop <= grid.cached_pflop <= sum(r.uncached_pflop for r in grid.runs)
    # a run with every part training, in one pass, is at its floor
    native = cost.estimate_run(load_recipe("siglip_unlocked_neg", ["data.batch_size=128"]))
    assert native.passes == 1 and native.cached_pflop == pytest.approx(native.floor_pflop)
    # two passes pay one more forward of each trainable part over the floor
    two = cost.estimate_run(load_recipe("siglip_unlocked_neg"))
    extra = sum(p.items_per_sample * p.forward_gflop for p in two.parts) * two.steps * two.global_batch / 1e6
    assert two.passes == 2 and two.cached_pflop == pytest.approx(two.floor_pflop + extra)


def test_a_recipe_and_a_sweep_cannot_be_mixed(capsys):
    assert cost.main(["tiny_clip_neg", "tiny_grid"]) == 2
    assert "tiny_clip_neg is not a sweep" in capsys.readouterr().err


def test_the_utilisation_make_gpu_check_measured_replaces_the_assumption(tmp_path, monkeypatch):
    """bench/gpu_results.json from a GPU of the estimate's kind: each run takes the MFU of its closest step; another
    GPU kind, or no file, keeps the assumed 40%; --utilisation wins."""
    results = {"device_name": "NVIDIA H100 80GB HBM3", "parts": {
        "clip_neg": {"status": "ok", "summary": {"mfu": 0.31}},
        "siglip_unlocked_neg": {"status": "ok", "summary": {"mfu": 0.52}},
        "siglip_llm2vec_neg": {"status": "ok", "summary": {"mfu": 0.45}}}}  # fmt: skip
    (tmp_path / "gpu_results.json").write_text(json.dumps(results))
    monkeypatch.setattr(cost, "GPU_RESULTS", tmp_path / "gpu_results.json")
    for recipe, expected in (("clip_neg", 0.31), ("siglip_unlocked_neg", 0.52), ("siglip_llm2vec_neg", 0.45)):
        est = cost.estimate_run(load_recipe(recipe))
        assert est.utilisation == expected and any("measured by make gpu-check" in a for a in est.assumptions)
    assert cost.estimate_run(load_recipe("clip_neg"), gpu="a100").utilisation == cost.DEFAULT_UTILISATION
    assert cost.estimate_run(load_recipe("clip_neg"), utilisation=0.25).utilisation == 0.25
    monkeypatch.setattr(cost, "GPU_RESULTS", tmp_path / "absent.json")
    assert cost.estimate_run(load_recipe("clip_neg")).utilisation == cost.DEFAULT_UTILISATION


def test_llm_tokens_are_measured_on_the_shards_with_the_recipes_tokenizer(world_shards):
    """The LLM2Vec LLM's tokens per text come from a sample of the shards, tokenized as training does: the mean
    for cache builds, each pass padded to its longest for uncached steps; no shards: the stated assumption."""
    from models import build_model
    from train.data import ShardSamples, index_shards, sample_seed
    from train.text_lengths import expected_padded, measure_llm_tokens

    cfg = load_recipe("tiny_clip_llm2vec_neg", [f"data.shards=[{world_shards}]"])
    lengths = measure_llm_tokens(cfg, samples=10_000)  # every sample
    tokenizer = build_model(cfg.model).tokenizer  # the tokenizer training uses, from the whole model
    data = ShardSamples(index_shards([world_shards]), None, cfg.data.caption_policy, cfg.seed)
    texts = [t for i in range(len(data)) for t in data.caption(i, sample_seed(cfg.seed, 0, i)) if t is not None]
    direct = torch.cat([tokenizer([t])["attention_mask"].sum(dim=1) for t in texts]).double()
    assert lengths.texts == len(texts) and lengths.mean == pytest.approx(direct.mean().item())
    assert lengths.mean < lengths.padded_mean <= direct.max().item()
    est = cost.estimate_run(cfg)
    (llm,) = [p for p in est.parts if p.part == "llm"]
    assert llm.tokens == round(lengths.padded_mean)
    assert any(
        a.startswith(f"LLM2Vec tokens per text: {round(lengths.mean)} / {llm.tokens} (measured")
        for a in est.assumptions
    )
    assert expected_padded(np.array([5, 5, 5]), 4) == 5.0
    assert cost.estimate_run(load_recipe("siglip_llm2vec_neg")).parts[1].tokens == cost.ASSUMED_LLM_TOKENS


def test_an_alignment_head_counts_its_pair_scores_and_caches_patch_tokens_only_where_they_fit(
    world_shards, monkeypatch
):
    """tiny_clip_pacl_neg: the head is a part (its projections, and ~4 x patches x dim FLOPs per scored pair, every
    text of the global batch); its image cache holds patch tokens, kept only while they fit on the cache's disk."""
    shards = f"data.shards=[{world_shards}]"
    estimate = cost.estimate_run(load_recipe("tiny_clip_pacl_neg", [shards]))
    parts = {p.part: p for p in estimate.parts}
    assert parts["alignment"].trains and parts["image"].cached
    pairs = estimate.global_batch * estimate.texts_per_sample
    flops = cost.model_flops(load_recipe("tiny_clip_pacl_neg", [shards]).model, 0)
    assert flops.pair_flops == 4 * 64 * 64 and flops.patch_cache_width == 64 * 64
    assert parts["alignment"].forward_gflop * 1e9 == pytest.approx(
        flops.parts["alignment"].forward + pairs * flops.pair_flops
    )
    assert any("patch tokens (0.02 MB per image" in a for a in estimate.assumptions)
    monkeypatch.setattr("train.cache.shutil.disk_usage", lambda path: SimpleNamespace(free=1000))  # a full disk
    full = cost.estimate_run(load_recipe("tiny_clip_pacl_neg", [shards]))
    assert not {p.part: p for p in full.parts}["image"].cached
    assert any("a patch-token cache would need" in a for a in full.assumptions)


def test_a_token_level_loss_counts_its_per_sample_work_and_the_text_tower_in_every_pass(world_shards):
    """tiny_clip_sparc_neg, text tower locked (2 micro-batches per step): SPARC's token x patch work per sample is in
    the head's part, and the locked text tower runs in both passes with no text cache (the loss reads every token)."""
    shards = f"data.shards=[{world_shards}]"
    cfg = load_recipe("tiny_clip_sparc_neg", [shards, "model.text.locked=true"])
    estimate = cost.estimate_run(cfg)
    parts = {p.part: p for p in estimate.parts}
    flops = cost.model_flops(cfg.model, 0)
    length, patches, dim = 32, 64, 64  # tiny-clip: a 32-token context, 8 x 8 patches, 64 wide
    assert flops.sample_flops == 2 * length * dim * dim + 4 * length * patches * dim + 2 * length * length * dim
    pairs = estimate.global_batch * estimate.texts_per_sample
    expected = flops.parts["alignment"].forward + pairs * flops.pair_flops + flops.sample_flops
    assert parts["alignment"].forward_gflop * 1e9 == pytest.approx(expected)
    assert not parts["text"].trains and not parts["text"].cached
    text = flops.parts["text"].forward * estimate.texts_per_sample
    assert parts["text"].uncached_gflop * 1e9 == pytest.approx(2 * text)  # two passes
    pacl = cost.estimate_run(load_recipe("tiny_clip_pacl_neg", [shards, "model.text.locked=true"]))
    assert {p.part: p for p in pacl.parts}["text"].cached  # a pooled-feature cache serves PACL
    # LLM2Vec: the connector maps each of the LLM's tokens as well as the pooled state
    llm2vec = load_recipe("tiny_clip_llm2vec_pacl_neg", [shards]).model
    pooled_only = cost.model_flops(llm2vec, 40).parts["connector"]
    every_token = cost.model_flops(replace(llm2vec, head=replace(llm2vec.head, kind="sparc")), 40).parts["connector"]
    assert every_token.forward == pytest.approx(41 * pooled_only.forward)
