"""models/memory.py and the frozen LLM2Vec tower's memory behaviour (bf16, no gradients, chunks), on real models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may try the network (set before any HF import)

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models import build_model, parameter_table
from models.config import ConnectorConfig, ImageTowerConfig, LLM2VecConfig, ModelConfig, TextTowerConfig
from models.memory import (
    GIB,
    PAPER_LLM_ARCHITECTURES,
    check_fits,
    estimate_for_config,
    estimate_for_model,
    format_memory_estimate,
    model_on_meta,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "a ball to the left of a box",
    "a red cube",
    "a dog behind a tree, next to a small blue car parked under the old bridge",
    "two cups",
    "a chair in front of a table with a lamp on it",
    "a cat",
    "a green bottle to the right of a mug on a shelf",
]
PAPER_LLM = "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp"


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


def tiny_llm2vec(**llm2vec) -> ModelConfig:
    llm = {"base_model": "tiny-llm2vec", "max_length": 64, "dtype": "fp32", **llm2vec}
    return ModelConfig(
        name="tiny-clip",
        text=TextTowerConfig(tower="llm2vec", llm2vec=LLM2VecConfig(**llm), connector=ConnectorConfig(hidden_dim=128)),
    )


def paper_llm2vec(image_locked: bool) -> ModelConfig:
    return ModelConfig(
        name="siglip-vit-l16-384",
        image=ImageTowerConfig(locked=image_locked),
        text=TextTowerConfig(tower="llm2vec", llm2vec=LLM2VecConfig(base_model=PAPER_LLM)),
    )


def llama_2_7b_config():
    """Llama-2-7B's dimensions (meta-llama/Llama-2-7b-chat-hf config.json), built here: nothing is downloaded."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )


def saved_for_backward_bytes(model: torch.nn.Module, run) -> int:
    """Bytes of the tensors autograd saves for backward while `run()` executes, the model's weights excluded."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(saved.values())


def part(est, name: str):
    return next(p for p in est.parts if p.part == name)


# --- the frozen LLM2Vec tower ---------------------------------------------------------------------------------------


def test_llm2vec_chunks_give_the_unchunked_embeddings(cache, monkeypatch):
    whole = build_model(tiny_llm2vec(chunk_size=0), cache_dir=cache)
    chunked = build_model(tiny_llm2vec(chunk_size=3), cache_dir=cache)
    chunked.model.load_state_dict(whole.model.state_dict())  # same connector init in both
    text = whole.tokenizer(TEXTS)
    assert (text["attention_mask"][:, 0] == 0).any()  # padded rows: chunks keep the batch's padding

    passes = []
    encoder = chunked.model.text_tower.llm2vec
    real_forward = encoder.forward

    def counted_forward(features):
        passes.append(len(features["input_ids"]))
        return real_forward(features)

    monkeypatch.setattr(encoder, "forward", counted_forward)
    with torch.no_grad():
        expected = whole.model.encode_text(text)
        got = chunked.model.encode_text(text)
    assert passes == [3, 3, 1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert set(text) == {"input_ids", "attention_mask", "embed_mask"}  # the caller's batch is left as it was


def test_llm2vec_runs_in_bf16_without_gradients_or_saved_activations(cache):
    bundle = build_model(tiny_llm2vec(dtype="bf16", chunk_size=2), cache_dir=cache)
    model = bundle.model.train()
    llm = model.text_tower.llm2vec.model
    assert {p.dtype for p in llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.text_tower.connector.parameters()} == {torch.float32}

    grad_enabled = []  # no_grad inside the LLM: autograd records no graph there, so it keeps no activations
    llm.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    text = bundle.tokenizer(TEXTS)
    features = model.encode_text(text)
    assert grad_enabled == [False] * 4  # four chunks of at most 2 captions
    assert features.requires_grad  # the connector still trains
    features.sum().backward()
    assert all(p.grad is None for p in llm.parameters())
    assert all(p.grad is not None for p in model.text_tower.connector.parameters())

    est = estimate_for_model(model, tiny_llm2vec(dtype="bf16", chunk_size=2), 7, "bf16")
    assert part(est, "llm").weight_bytes == 2 * sum(p.numel() for p in llm.parameters())
    assert "2 of 7 seqs per pass" in part(est, "llm").activations_kept


def test_negative_chunk_size_is_refused(cache):
    with pytest.raises(ValueError, match="chunk_size"):
        build_model(tiny_llm2vec(chunk_size=-1), cache_dir=cache)


# --- exact parameter, gradient and optimizer bytes -------------------------------------------------------------------


TINY_CONFIGS = {
    "clip, image locked": ModelConfig(name="tiny-clip"),
    "siglip, image unlocked": ModelConfig(name="tiny-siglip", image=ImageTowerConfig(locked=False)),
    "siglip, last 2 blocks": ModelConfig(name="tiny-siglip", image=ImageTowerConfig(unlocked_last_blocks=2)),
    "clip + llm2vec": tiny_llm2vec(),
}


@pytest.mark.parametrize("label", TINY_CONFIGS)
def test_estimate_counts_the_real_parameters_gradients_and_adamw_states(cache, label):
    cfg = TINY_CONFIGS[label]
    bundle = build_model(cfg, cache_dir=cache)
    model = bundle.model.train()
    est = estimate_for_model(model, cfg, micro_batch=4, precision="fp32", num_processes=1, zero_stage=0)

    table = {row["part"]: row for row in parameter_table(model)}
    assert [p.part for p in est.parts] == list(table)
    for p in est.parts:
        assert (p.trainable_params, p.frozen_params) == (table[p.part]["trainable"], table[p.part]["frozen"])
    assert est.weight_bytes == sum(p.numel() * p.element_size() for p in model.parameters())

    # The real thing: one AdamW step, then the bytes of the gradients and of the optimizer's two moments.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(torch.randn(4, 3, 64, 64), bundle.tokenizer(TEXTS[:4]))
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    if out["logit_bias"] is not None:
        logits = logits + out["logit_bias"]
    logits.logsumexp(-1).sum().backward()
    optimizer.step()
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    moments = sum(state[k].nbytes for state in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    assert est.gradient_bytes == grads
    assert est.optimizer_bytes == moments


def test_zero_and_ddp_split_what_they_split(cache):
    cfg = ModelConfig(name="tiny-siglip", image=ImageTowerConfig(locked=False))
    model = build_model(cfg, cache_dir=cache).model
    one = estimate_for_model(model, cfg, 4, "bf16", num_processes=1, zero_stage=0)
    ddp = estimate_for_model(model, cfg, 4, "bf16", num_processes=4, zero_stage=0)
    z1, z2, z3 = (estimate_for_model(model, cfg, 4, "bf16", num_processes=4, zero_stage=s) for s in (1, 2, 3))
    assert ddp.gradient_bytes == 2 * one.gradient_bytes  # DDP's bucket copy
    assert (z1.optimizer_bytes, z1.gradient_bytes) == (
        pytest.approx(one.optimizer_bytes / 4, abs=8),
        one.gradient_bytes,
    )
    assert z2.gradient_bytes == pytest.approx(one.gradient_bytes / 4, abs=8)
    assert z2.weight_bytes == one.weight_bytes and z3.weight_bytes == pytest.approx(one.weight_bytes / 4, abs=8)
    assert z3.activation_bytes == one.activation_bytes


# --- activations -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip"])
def test_activation_formula_is_near_what_autograd_saves(cache, name):
    cfg = ModelConfig(name=name, image=ImageTowerConfig(locked=False), text=TextTowerConfig(locked=True))
    model = build_model(cfg, cache_dir=cache).model.train()
    pixels = torch.randn(16, 3, 64, 64)
    saved = saved_for_backward_bytes(model, lambda: model.image_tower(pixels))
    estimated = part(estimate_for_model(model, cfg, 16, "fp32"), "image").activation_bytes
    # Rough by design; on CPU the attention also keeps its heads x tokens^2 scores, which fused GPU attention does not.
    assert 0.8 <= saved / estimated <= 1.5

    checkpointed = replace(cfg, grad_checkpointing=True)
    model = build_model(checkpointed, cache_dir=cache).model.train()
    saved_checkpointed = saved_for_backward_bytes(model, lambda: model.image_tower(pixels))
    assert saved_checkpointed < saved / 4
    assert saved_checkpointed <= part(estimate_for_model(model, checkpointed, 16, "fp32"), "image").activation_bytes


def test_frozen_towers_keep_one_block_and_unlocked_blocks_keep_theirs(cache):
    locked = ModelConfig(name="tiny-clip")
    model = build_model(locked, cache_dir=cache).model.train()
    assert saved_for_backward_bytes(model, lambda: model.image_tower(torch.randn(8, 3, 64, 64))) == 0
    frozen = part(estimate_for_model(model, locked, 8, "fp32"), "image")
    assert frozen.activations_kept == "1 block (frozen)"

    last_two = ModelConfig(name="tiny-clip", image=ImageTowerConfig(unlocked_last_blocks=2))
    model = build_model(last_two, cache_dir=cache).model
    two = part(estimate_for_model(model, last_two, 8, "fp32"), "image")
    assert two.activations_kept == "2 of 4 blocks" and two.activation_bytes == 2 * frozen.activation_bytes
    assert part(estimate_for_model(model, last_two, 8, "bf16"), "image").activation_bytes == frozen.activation_bytes


# --- paper sizes on the meta device ----------------------------------------------------------------------------------


def vit_parameters(vision: dict, embed_dim: int) -> int:
    """open_clip's VisionTransformer, counted from its config: stem, blocks (12 w^2 + 13 w each), ln_post, proj."""
    w, layers, patch = vision["width"], vision["layers"], vision["patch_size"]
    tokens = (vision["image_size"] // patch) ** 2 + 1
    return 3 * patch * patch * w + w + tokens * w + 2 * w + layers * (12 * w * w + 13 * w) + 2 * w + w * embed_dim


def text_transformer_parameters(text: dict, embed_dim: int) -> int:
    w = text["width"]
    embeddings = text["vocab_size"] * w + text["context_length"] * w
    return embeddings + text["layers"] * (12 * w * w + 13 * w) + 2 * w + w * embed_dim


def test_clip_vit_l14_336_on_the_meta_device_has_open_clips_parameter_count(cache):
    import open_clip

    oc = open_clip.get_model_config("ViT-L-14-336-quickgelu")
    image = vit_parameters(oc["vision_cfg"], oc["embed_dim"])
    whole = image + text_transformer_parameters(oc["text_cfg"], oc["embed_dim"]) + 1  # + logit scale
    assert image == 304_293_888 and whole == 427_944_193  # ~304M image tower, ~428M CLIP: the known figures

    cfg = ModelConfig(name="clip-vit-l14-336")
    model = model_on_meta(cfg, cache_dir=cache)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert sum(p.numel() for p in model.parameters()) == whole
    est = estimate_for_model(model, cfg, micro_batch=128, precision="bf16")
    assert part(est, "image").frozen_params == image and part(est, "image").trainable_params == 0
    assert part(est, "image").activations_kept == "1 block (frozen)"
    assert part(est, "text").activations_kept == "12 of 12 blocks"
    assert est.weight_bytes == 4 * whole
    assert est.gradient_bytes == 4 * (whole - image) and est.optimizer_bytes == 8 * (whole - image)


def test_7b_llm2vec_does_not_fit_24_gib_unlocked_and_fits_80_gib_frozen_in_bf16(cache):
    config = llama_2_7b_config()
    h, i, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    llama_parameters = vocab * h + layers * (4 * h * h + 3 * h * i + 2 * h) + h  # LlamaModel: no LM head
    assert llama_parameters == 6_607_343_616  # Llama-2-7B's 6.74B less its 131M LM head

    unlocked = estimate_for_config(paper_llm2vec(image_locked=False), 128, "bf16", 4, 0, llm_config=config)
    llm = part(unlocked, "llm")
    assert (llm.frozen_params, llm.trainable_params, llm.weight_bytes) == (llama_parameters, 0, 2 * llama_parameters)
    assert llm.gradient_bytes == llm.optimizer_bytes == 0
    problems = check_fits(unlocked, 24 * GIB)
    assert len(problems) == 1
    assert "largest: image activations" in problems[0] and "lower the micro-batch" in problems[0]
    assert "gradient checkpointing" in problems[0]

    frozen = estimate_for_config(paper_llm2vec(image_locked=True), 128, "bf16", 4, 0, llm_config=config)
    assert check_fits(frozen, 80 * GIB) == []
    assert part(frozen, "image").trainable_params == 0 and part(frozen, "connector").trainable_params > 0

    # The same LLM from the built-in table of the paper's models (what a recipe gets offline).
    assert part(estimate_for_config(paper_llm2vec(True), 128, "bf16"), "llm").frozen_params == llama_parameters
    assert PAPER_LLM in PAPER_LLM_ARCHITECTURES


def test_fp32_llm_that_does_not_fit_is_told_to_use_bf16(cache):
    locked = paper_llm2vec(image_locked=True)
    cfg = replace(locked, text=replace(locked.text, llm2vec=LLM2VecConfig(base_model=PAPER_LLM, dtype="fp32")))
    est = estimate_for_config(cfg, 32, "bf16", llm_config=llama_2_7b_config())
    assert part(est, "llm").weight_bytes == 4 * part(est, "llm").frozen_params
    problems = check_fits(est, 24 * GIB)
    assert problems and "largest: llm frozen weights" in problems[0] and "dtype=bf16" in problems[0]


def test_format_prints_every_part_and_the_total(cache):
    cfg = tiny_llm2vec()
    est = estimate_for_model(build_model(cfg, cache_dir=cache).model, cfg, 8, "bf16", 2, 2, texts_per_sample=2)
    table = format_memory_estimate(est)
    assert "micro-batch 8, bf16, 2 processes, ZeRO stage 2" in table
    for name in ("image", "llm", "connector", "head", "all"):
        assert any(line.startswith(name) for line in table.splitlines())
    assert f"{est.total_bytes / GIB:.2f}" in table.splitlines()[-1]


def test_memory_module_loads_neither_accelerate_nor_wandb():
    code = "import sys, models.memory; print(sorted(m for m in ('accelerate', 'wandb', 'llm2vec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- two-pass gradient accumulation ----------------------------------------------------------------------------------


def test_two_pass_accumulation_keeps_one_micro_batch_of_activations_plus_the_local_features(cache):
    cfg = ModelConfig(name="tiny-siglip", image=ImageTowerConfig(locked=False))
    model = build_model(cfg, cache_dir=cache).model
    one_pass_16 = estimate_for_model(model, cfg, 16, "bf16", texts_per_sample=2)
    one_pass_64 = estimate_for_model(model, cfg, 64, "bf16", texts_per_sample=2)
    two_pass = estimate_for_model(model, cfg, 16, "bf16", texts_per_sample=2, accumulation=4)

    assert one_pass_16.feature_bytes == one_pass_64.feature_bytes == 0  # one pass keeps no copy of the features
    assert two_pass.activation_bytes == one_pass_16.activation_bytes  # one micro-batch of activations ...
    assert one_pass_64.activation_bytes == 4 * one_pass_16.activation_bytes  # ... not the global batch's
    embed_dim = 64  # tiny-siglip
    assert two_pass.feature_bytes == 2 * 4 * 16 * (1 + 2) * embed_dim * 4  # features + gradients, fp32
    assert two_pass.total_bytes == one_pass_16.total_bytes + two_pass.feature_bytes
    assert two_pass.total_bytes < one_pass_64.total_bytes
    for stage in (1, 2, 3):  # the features are every process's own: ZeRO does not split them
        sharded = estimate_for_model(model, cfg, 16, "bf16", 4, stage, texts_per_sample=2, accumulation=4)
        assert sharded.feature_bytes == two_pass.feature_bytes
    with pytest.raises(ValueError, match="accumulation"):
        estimate_for_model(model, cfg, 16, "bf16", accumulation=0)


def test_feature_bytes_are_what_the_two_pass_step_keeps(cache):
    """The trainer's own FeatureLeaves and their gradients, for 3 micro-batches of 4 with hard negatives."""
    from train.data import Batch
    from train.finetune import FeatureLeaves
    from train.losses import build_loss

    cfg = ModelConfig(name="tiny-clip")
    bundle = build_model(cfg, cache_dir=cache)
    model = bundle.model.train()
    micro, accumulation = 4, 3
    outputs, batches = [], []
    with torch.no_grad():
        for a in range(accumulation):
            captions = TEXTS[a : a + micro]
            negatives = [caption.replace("left", "right") for caption in captions]
            text = bundle.tokenizer(captions + negatives)
            batch = Batch(torch.randn(micro, 3, 64, 64), text, torch.ones(micro, dtype=torch.bool), list("abcd"))
            outputs.append(model(batch.pixels, batch.text))
            batches.append(batch)
    leaves = FeatureLeaves.of(outputs, batches)
    loss = build_loss("negclip")(
        leaves.image, leaves.text, leaves.scale, leaves.bias,
        negative_features=leaves.negatives, negative_mask=leaves.negative_mask,
    )  # fmt: skip
    grads = leaves.gradients(loss)
    kept = [leaves.image, leaves.text, leaves.negatives, grads.image, grads.text, grads.negatives]
    est = estimate_for_model(model, cfg, micro, "fp32", texts_per_sample=2, accumulation=accumulation)
    assert est.feature_bytes == sum(t.nbytes for t in kept)


def test_paper_batches_accumulate_for_a_few_mib_and_the_table_says_so(cache):
    clip = ModelConfig(name="clip-vit-l14-336")
    one_pass = estimate_for_config(clip, 128, "bf16", 1, 0, texts_per_sample=2, cache_dir=cache)
    accumulated = estimate_for_config(clip, 128, "bf16", 1, 0, texts_per_sample=2, accumulation=4, cache_dir=cache)
    assert accumulated.accumulation == 4
    assert accumulated.feature_bytes == 2 * 512 * 3 * 768 * 4  # 9 MiB for the paper's global batch of 512
    assert accumulated.activation_bytes == one_pass.activation_bytes
    assert check_fits(accumulated, 80 * GIB) == []

    table = format_memory_estimate(accumulated)
    assert "accumulation 4" in table.splitlines()[0]
    assert "note: two-pass accumulation: activations of one micro-batch of 128; +9.0 MiB of features" in table
    assert "two-pass" not in format_memory_estimate(one_pass)


def test_too_large_a_micro_batch_is_told_that_accumulation_keeps_one_micro_batch(cache):
    est = estimate_for_config(paper_llm2vec(image_locked=False), 128, "bf16", 4, 0, accumulation=2, cache_dir=cache)
    problems = check_fits(est, 24 * GIB)
    assert len(problems) == 1 and "now 128 x accumulation 2" in problems[0]
    assert "keep the activations of one micro-batch" in problems[0]
