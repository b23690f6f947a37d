"""models/: the tiny stand-ins go through the real open_clip / timm / llm2vec code paths; freezing; offline errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may try the network (set before any HF import)

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from models import MODELS, PAPER_MODELS, ContrastiveModel, WeightsUnavailableError, build_model, parameter_table
from models.cache import build_once
from models.config import ConnectorConfig, ImageTowerConfig, LLM2VecConfig, ModelConfig, TextTowerConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["tiny-clip", "tiny-siglip"]
LEFT, RIGHT = "a ball to the left of a box", "a ball to the right of a box"
# Per family: the block list and what follows the last block (what unlocked_last_blocks also unlocks).
VIT_BLOCKS = {"tiny-clip": "image_tower.transformer.resblocks", "tiny-siglip": "image_tower.trunk.blocks"}
VIT_TAIL = {
    "tiny-clip": {"image_tower.ln_post.weight", "image_tower.ln_post.bias", "image_tower.proj"},
    "tiny-siglip": {"image_tower.trunk.norm.weight", "image_tower.trunk.norm.bias"},  # + trunk.attn_pool.*
}


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


def tiny_llm2vec_config(**llm2vec) -> ModelConfig:
    return ModelConfig(
        name="tiny-clip",
        text=TextTowerConfig(
            tower="llm2vec",
            llm2vec=LLM2VecConfig(**{"base_model": "tiny-llm2vec", "max_length": 64, "dtype": "fp32", **llm2vec}),
            connector=ConnectorConfig(hidden_dim=128),
        ),
    )


def batch(bundle, n: int = 4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = Image.new("RGB", (90, 70), (200, 30, 30))
    pixels = torch.stack([bundle.preprocess_eval(image)] * n)
    texts = [LEFT, RIGHT, "a red cube under a chair", "a dog behind a tree"]
    return pixels + 0.1 * torch.arange(n).view(n, 1, 1, 1), bundle.tokenizer((texts * n)[:n])


def loss_of(out: dict) -> torch.Tensor:
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    if out["logit_bias"] is not None:
        logits = logits + out["logit_bias"]
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))


def test_import_models_loads_neither_accelerate_nor_wandb():
    code = "import sys, models; print(sorted(m for m in ('accelerate', 'wandb', 'llm2vec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tiny_presets_are_built_from_the_same_open_clip_classes(cache):
    import open_clip
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import QuickGELU, TextTransformer, VisionTransformer
    from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

    from models.tiny_open_clip import TINY_OPEN_CLIP, load_tiny_open_clip

    clip = load_tiny_open_clip(TINY_OPEN_CLIP["tiny-clip"], "", cache)
    assert type(clip.model) is open_clip.CLIP and isinstance(clip.model.visual, VisionTransformer)
    assert isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(clip.tokenizer, open_clip.SimpleTokenizer)
    siglip = load_tiny_open_clip(TINY_OPEN_CLIP["tiny-siglip"], "", cache)
    assert type(siglip.model) is open_clip.CustomTextCLIP and isinstance(siglip.model.visual, TimmModel)
    assert isinstance(siglip.model.visual.trunk, TimmVisionTransformer) and isinstance(
        siglip.model.text, TextTransformer
    )
    assert siglip.model.visual.trunk.global_pool == "map"  # SigLIP's attention-pool head
    assert type(siglip.tokenizer).__name__ == "HFTokenizer"

    bundle = build_model(ModelConfig(name="tiny-siglip"), cache_dir=cache)
    assert bundle.info["open_clip_class"] == "CustomTextCLIP" and bundle.info["mirrors"] == "ViT-L-16-SigLIP-384"
    assert bundle.model.logit_scale.exp().item() == pytest.approx(10.0)
    assert bundle.model.logit_bias.item() == pytest.approx(-10.0)
    assert bundle.info["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    bundle = build_model(ModelConfig(name="tiny-clip"), cache_dir=cache)
    assert bundle.info["open_clip_class"] == "CLIP" and bundle.model.logit_bias is None
    json.dumps(bundle.info)


@pytest.mark.parametrize("name", TINY)
def test_transforms_tokenizer_encoders_and_backward(cache, name):
    bundle = build_model(ModelConfig(name=name), cache_dir=cache)
    image = Image.new("RGB", (120, 80), (10, 200, 30))
    assert bundle.preprocess_train(image).shape == bundle.preprocess_eval(image).shape == (3, 64, 64)
    assert "Flip" not in repr(bundle.preprocess_train)  # left/right is the signal here
    tokens = bundle.tokenizer([LEFT, RIGHT])
    assert isinstance(tokens, dict) and tokens["input_ids"].dtype == torch.long and tokens["input_ids"].shape[0] == 2

    model = bundle.model.train()
    pixels, text = batch(bundle)
    image_features, text_features = model.encode_image(pixels), model.encode_text(text)
    assert image_features.shape == text_features.shape == (4, bundle.info["embed_dim"])
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(4))
    out = model(pixels, text)
    assert set(out) == {"image_features", "text_features", "logit_scale", "logit_bias"}
    loss_of(out).backward()
    assert model.logit_scale.grad is not None
    assert all(p.grad is not None for p in model.text_tower.parameters())
    assert all(p.grad is None for p in model.image_tower.parameters())  # locked by default


def test_tiny_init_is_deterministic_and_cached(tmp_path, cache):
    first = build_model(ModelConfig(name="tiny-siglip"), cache_dir=cache).model.state_dict()
    fresh = build_model(ModelConfig(name="tiny-siglip"), cache_dir=tmp_path).model.state_dict()
    assert first.keys() == fresh.keys() and all(torch.equal(first[k], fresh[k]) for k in first)
    built = (tmp_path / "tiny-siglip" / "open_clip_model.safetensors").stat().st_mtime_ns
    build_model(ModelConfig(name="tiny-siglip"), cache_dir=tmp_path)
    assert (tmp_path / "tiny-siglip" / "open_clip_model.safetensors").stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("name", TINY)
def test_unlocked_last_blocks_means_the_same_for_clip_and_siglip(cache, name, blocks):
    bundle = build_model(ModelConfig(name=name, image=ImageTowerConfig(unlocked_last_blocks=blocks)), cache_dir=cache)
    model = bundle.model
    names = [n for n, _ in model.named_parameters() if n.startswith("image_tower.")]
    depth = len(model.image_tower.get_submodule(VIT_BLOCKS[name].removeprefix("image_tower.")))
    last = tuple(f"{VIT_BLOCKS[name]}.{i}." for i in range(depth - blocks, depth))
    expected = {n for n in names if n.startswith(last) or n in VIT_TAIL[name] or ".attn_pool." in n}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("image_tower.")}
    assert trainable == expected
    assert {n.split(".")[len(VIT_BLOCKS[name].split("."))] for n in trainable if n.startswith(VIT_BLOCKS[name])} == {
        str(i) for i in range(depth - blocks, depth)
    }

    model.train()
    blocks_module = model.image_tower.get_submodule(VIT_BLOCKS[name].removeprefix("image_tower."))
    assert [b.training for b in blocks_module] == [False] * (depth - blocks) + [True] * blocks
    loss_of(model(*batch(bundle))).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None and n.startswith("image_tower.")} == expected


def test_unlocked_last_blocks_beyond_the_depth_is_an_error(cache):
    with pytest.raises(ValueError, match="has 4 blocks"):
        build_model(ModelConfig(name="tiny-clip", image=ImageTowerConfig(unlocked_last_blocks=5)), cache_dir=cache)


@pytest.mark.parametrize("name", TINY)
def test_parameter_table_counts_every_parameter(cache, name):
    cfg = ModelConfig(name=name, image=ImageTowerConfig(unlocked_last_blocks=1))
    model = build_model(cfg, cache_dir=cache).model
    rows = parameter_table(model)
    assert [r["part"] for r in rows] == ["image", "text", "head"]
    assert sum(r["total"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(r["trainable"] for r in rows) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(r["trainable"] + r["frozen"] == r["total"] for r in rows)
    assert (
        rows[0]["trainable"] > 0
        and rows[0]["frozen"] > 0
        and rows[2]
        == {
            "part": "head",
            "trainable": 2 if name == "tiny-siglip" else 1,
            "frozen": 0,
            "total": 2 if name == "tiny-siglip" else 1,
        }
    )


@pytest.mark.parametrize("name", TINY)
def test_locked_text_tower_gets_no_grads_and_stays_in_eval(cache, name):
    cfg = ModelConfig(name=name, image=ImageTowerConfig(locked=False), text=TextTowerConfig(locked=True))
    bundle = build_model(cfg, cache_dir=cache)
    model = bundle.model.train()
    assert not any(m.training for m in model.text_tower.modules())
    assert all(m.training for m in model.image_tower.modules())
    loss_of(model(*batch(bundle))).backward()
    assert all(p.grad is None for p in model.text_tower.parameters())
    assert all(p.grad is not None for p in model.image_tower.parameters())
    assert model.logit_scale.grad is not None
    rows = {r["part"]: r for r in parameter_table(model)}
    assert rows["text"]["trainable"] == 0 and rows["image"]["frozen"] == 0


def test_locked_image_tower_stays_in_eval_after_train(cache):
    model = build_model(ModelConfig(name="tiny-siglip"), cache_dir=cache).model
    model.train()
    assert not any(m.training for m in model.image_tower.modules())
    assert all(m.training for m in model.text_tower.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_grad_checkpointing_gives_the_same_gradients(cache):
    cfg = ModelConfig(name="tiny-siglip", image=ImageTowerConfig(unlocked_last_blocks=2))
    plain, checkpointed = (build_model(c, cache_dir=cache) for c in (cfg, replace(cfg, grad_checkpointing=True)))
    assert checkpointed.model.text_tower.text.transformer.grad_checkpointing
    grads = []
    for bundle in (plain, checkpointed):
        model = bundle.model.train()
        loss_of(model(*batch(bundle))).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad)


@pytest.mark.parametrize("name", TINY)
def test_pretrained_file_is_loaded_with_open_clip(cache, tmp_path, name):
    from safetensors.torch import save_file

    bundle = build_model(ModelConfig(name=name), cache_dir=cache)
    with torch.no_grad():
        for param in bundle.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    weights = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in bundle.model.open_clip_state_dict().items()}, str(weights))
    pixels, text = batch(bundle)
    reloaded = build_model(ModelConfig(name=name, pretrained=str(weights)), cache_dir=cache)
    default = build_model(ModelConfig(name=name), cache_dir=cache)
    expected = bundle.model(pixels, text)
    got = reloaded.model(pixels, text)
    for key in ("image_features", "text_features", "logit_scale"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert not torch.allclose(default.model(pixels, text)["text_features"], expected["text_features"])
    assert reloaded.info["pretrained"] == str(weights)


def test_llm2vec_tower_runs_the_real_llm2vec_frozen(cache):
    from llm2vec import LLM2Vec
    from llm2vec.models import LlamaBiModel

    bundle = build_model(tiny_llm2vec_config(), cache_dir=cache)
    model = bundle.model.train()
    assert isinstance(model.text_tower.llm2vec, LLM2Vec) and isinstance(model.text_tower.llm2vec.model, LlamaBiModel)
    assert not model.text_tower.llm2vec.training and model.text_tower.connector.training
    assert bundle.info["llm2vec"]["llm_class"] == "LlamaBiModel" and bundle.info["text_tower"] == "llm2vec"
    assert [r["part"] for r in parameter_table(model)] == ["image", "llm", "connector", "head"]

    pixels, text = batch(bundle)
    assert set(text) == {"input_ids", "attention_mask", "embed_mask"}
    assert (text["attention_mask"][:, 0] == 0).any()  # llm2vec pads on the left
    loss_of(model(pixels, text)).backward()
    assert all(p.grad is None for p in model.text_tower.llm2vec.parameters())
    assert all(p.grad is not None for p in model.text_tower.connector.parameters())
    with torch.no_grad():
        left, right = model.encode_text(bundle.tokenizer([LEFT, RIGHT]))
    assert not torch.allclose(left, right, atol=1e-4)

    # The tokenizer: Llama's ids (<s>=1, </s>=2 also the pad), left padding to the longest caption, and only the
    # caption's own tokens in embed_mask.
    tokenizer = model.text_tower.llm2vec.tokenizer
    short, long = "a box", "a red ball to the left of a blue box under the table"
    tokens = bundle.tokenizer([short, long])
    caption_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (short, long)]
    width = len(caption_ids[1]) + 1
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == tokens["embed_mask"].shape == (2, width)
    assert tokens["input_ids"][1].tolist() == [1, *caption_ids[1]]
    pad = width - len(caption_ids[0]) - 1
    assert tokens["input_ids"][0].tolist() == [2] * pad + [1, *caption_ids[0]]
    assert tokens["attention_mask"][0].tolist() == [0] * pad + [1] * (width - pad)
    assert tokens["embed_mask"].sum(dim=1).tolist() == [len(ids) for ids in caption_ids]


def test_llm2vec_tokenizer_follows_llm2vecs_instruction_convention(cache):
    bundle = build_model(tiny_llm2vec_config(instruction="Describe the image:"), cache_dir=cache)
    encoder = bundle.model.text_tower.llm2vec
    assert bundle.tokenizer.prepare(LEFT) == encoder._convert_to_str("Describe the image:", LEFT)  # no template
    assert bundle.tokenizer.prepare(LEFT) == "Describe the image: !@#$%^&*()" + LEFT
    with_instruction = bundle.tokenizer([LEFT])
    plain = build_model(tiny_llm2vec_config(), cache_dir=cache).tokenizer([LEFT])
    # Only the caption's tokens are pooled: the same count with and without the instruction.
    assert with_instruction["embed_mask"].sum() == plain["embed_mask"].sum()
    assert with_instruction["attention_mask"].sum() > plain["attention_mask"].sum()


def copy_of_tiny_llm2vec(cache: Path, tmp_path: Path, folder_name: str, recorded_name: str) -> Path:
    from models.tiny_llm2vec import tiny_llm2vec_folder

    copy = tmp_path / folder_name
    shutil.copytree(tiny_llm2vec_folder(cache), copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "_name_or_path": recorded_name}))
    return copy


def test_local_copy_of_the_llama2_mntp_model_keeps_the_llama2_chat_template(cache, tmp_path, caplog):
    from models.llm2vec_text import LLM2VecTokenizer, load_llm2vec

    local = copy_of_tiny_llm2vec(cache, tmp_path, "LLM2Vec-Llama-2-7b-chat-hf-mntp", str(tmp_path / "somewhere"))
    with caplog.at_level(logging.WARNING, logger="models.llm2vec_text"):
        encoder = load_llm2vec(str(local), dtype="fp32")
    assert encoder.model.config._name_or_path == "meta-llama/Llama-2-7b-chat-hf"
    assert "would skip the chat template" in caplog.text
    tokens = LLM2VecTokenizer(encoder)([LEFT])
    assert encoder.tokenizer.decode(tokens["input_ids"][0]).startswith("<s>[INST] " + LEFT)

    recorded = copy_of_tiny_llm2vec(cache, tmp_path, "anything", "meta-llama/Llama-2-7b-chat-hf")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.llm2vec_text"):
        encoder = load_llm2vec(str(recorded), dtype="fp32")
    assert encoder.model.config._name_or_path == "meta-llama/Llama-2-7b-chat-hf" and caplog.text == ""


LONG = " ".join(["a red ball to the left of a blue box on the table near the window"] * 8)  # > 64 tokens


def encode_like_llm2vec(encoder, instruction: str, texts: list[str]) -> torch.Tensor:
    """llm2vec's own LLM2Vec.encode on (instruction, caption) pairs, all in one batch (so padded as ours)."""
    pairs = [[instruction, text] for text in texts]
    return encoder.encode(pairs, batch_size=len(texts), show_progress_bar=False, convert_to_tensor=True)


@pytest.mark.parametrize("instruction", ["", "Describe the image:"])
def test_llm2vec_tower_equals_llm2vec_encode_for_short_and_long_captions(cache, tmp_path, instruction):
    from models.llm2vec_text import LLM2VecTextTower, LLM2VecTokenizer, fit_doc_max_length, load_llm2vec

    chat = copy_of_tiny_llm2vec(cache, tmp_path, "chat", "meta-llama/Llama-2-7b-chat-hf")  # with Llama-2's template
    encoder = load_llm2vec(str(chat), max_length=64, dtype="fp32")
    assert encoder.doc_max_length == 400  # llm2vec's default: longer than max_length, the whole text would be cut
    encoder.doc_max_length = fit_doc_max_length(encoder, instruction)
    assert 30 < encoder.doc_max_length < 64 - 10
    tokenizer = LLM2VecTokenizer(encoder, instruction)
    tower = LLM2VecTextTower(encoder, embed_dim=8)
    texts = [LEFT, LONG, "a dog behind a tree", LONG + " and a cat"]
    tokens = tokenizer(texts)
    # Long captions are cut (by words, as llm2vec) to doc_max_length and keep the chat template's closing part.
    assert tokens["attention_mask"].sum(dim=1).max() < 64
    for row in (1, 3):
        kept = tokens["input_ids"][row][tokens["attention_mask"][row].bool()]
        assert encoder.tokenizer.decode(kept).endswith(" [/INST]")
        pooled = tokens["input_ids"][row][tokens["embed_mask"][row].bool()]
        # llm2vec pools the caption (and the template's closing part after it), not the template's start/instruction
        assert encoder.tokenizer.decode(pooled).strip().startswith(LONG[:40])
    with torch.no_grad():
        ours = tower.frozen_features(tokens)
    torch.testing.assert_close(ours, encode_like_llm2vec(encoder, instruction, texts), rtol=0, atol=1e-6)
    # Each caption alone (no padding) too: llm2vec's encode of one caption is the same row.
    with torch.no_grad():
        alone = tower.frozen_features(tokenizer([LONG]))
    torch.testing.assert_close(alone, encode_like_llm2vec(encoder, instruction, [LONG]), rtol=0, atol=1e-6)


def test_doc_max_length_in_the_build_and_too_small_max_length(cache):
    bundle = build_model(tiny_llm2vec_config(), cache_dir=cache)
    info = bundle.info["llm2vec"]
    tokens = bundle.tokenizer([LONG])
    assert info["doc_max_length"] < info["max_length"] and tokens["embed_mask"].sum() == info["doc_max_length"]
    with pytest.raises(ValueError, match="leaves no room for a caption"):
        build_model(tiny_llm2vec_config(max_length=2), cache_dir=cache)


@pytest.mark.parametrize("hidden", [64, 128])  # 64 = tiny-clip's embed_dim: exactly LLaVA's design
def test_connector_is_llavas_mlp2x_gelu_with_a_chosen_hidden_width(cache, hidden):
    from models.llm2vec_text import mlp2_connector
    from models.parameters import grad_norm

    llava = mlp2_connector(4096, 768)  # hidden_dim <= 0: LLaVA-1.5's mlp2x_gelu, the hidden width = the output's
    assert [(m.in_features, m.out_features) for m in llava[::2]] == [(4096, 768), (768, 768)]
    hidden_dim = hidden

    cfg = tiny_llm2vec_config()
    cfg = replace(cfg, text=replace(cfg.text, connector=ConnectorConfig(hidden_dim=hidden_dim)))
    bundle = build_model(cfg, cache_dir=cache)
    model = bundle.model.train()
    connector = model.connector
    assert connector is model.text_tower.connector
    # LLaVA-1.5's mlp2x_gelu: Linear(in, out), GELU, Linear(out, out); here in = the LLM's width, out = embed_dim.
    assert [type(m).__name__ for m in connector] == ["Linear", "GELU", "Linear"]
    assert (connector[0].in_features, connector[0].out_features) == (64, hidden)
    assert (connector[2].in_features, connector[2].out_features) == (hidden, 64)
    assert bundle.info["llm2vec"]["connector_hidden_dim"] == hidden
    assert grad_norm(connector) is None
    loss_of(model(*batch(bundle))).backward()
    expected = torch.cat([p.grad.flatten() for p in connector.parameters()]).norm().item()
    assert grad_norm(connector) == pytest.approx(expected) and expected > 0
    native = build_model(ModelConfig(name="tiny-clip"), cache_dir=cache).model
    assert native.connector is None and grad_norm(native.connector) is None


@pytest.mark.parametrize("name", TINY)
def test_max_logit_scale_is_log100_or_the_pretrained_value_if_higher(cache, tmp_path, name):
    import math

    from safetensors.torch import save_file

    bundle = build_model(ModelConfig(name=name), cache_dir=cache)
    assert bundle.model.logit_scale.item() < math.log(100)  # CLIP's init log(1/0.07), SigLIP's log(10)
    assert bundle.model.max_logit_scale == bundle.info["max_logit_scale"] == pytest.approx(math.log(100))
    state = bundle.model.open_clip_state_dict()
    state["logit_scale"] = torch.full_like(state["logit_scale"], math.log(117.0))  # as a learned SigLIP scale
    weights = tmp_path / "hot.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    hot = build_model(ModelConfig(name=name, pretrained=str(weights)), cache_dir=cache)
    assert hot.model.max_logit_scale == pytest.approx(math.log(117.0))
    assert hot.model.max_logit_scale == hot.model.logit_scale.item()


def test_tag_preprocessing_is_what_open_clip_applies_for_the_tag():
    import open_clip

    from models.open_clip_models import implied_tag, tag_preprocess

    webli = tag_preprocess("ViT-L-16-SigLIP-384", "webli")
    assert webli == {
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    assert tag_preprocess("ViT-L-14-336-quickgelu", "openai")["mean"] == open_clip.OPENAI_DATASET_MEAN
    assert implied_tag("ViT-L-16-SigLIP-384") == "webli"  # its only tag
    tags = open_clip.list_pretrained_tags_by_model("ViT-B-32")  # openai, laion*, datacomp*: all CLIP's settings
    assert len(tags) > 1 and implied_tag("ViT-B-32") == tags[0]
    # Tags with different settings (ViT-L-14's laion2b_s32b_b82k uses mean/std 0.5): none is implied.
    assert tag_preprocess("ViT-L-14", "laion2b_s32b_b82k")["mean"] != tag_preprocess("ViT-L-14", "openai")["mean"]
    assert implied_tag("ViT-L-14") == ""


def test_random_pretrained_for_a_tiny_preset_is_its_own_init(cache):
    default = build_model(ModelConfig(name="tiny-siglip"), cache_dir=cache)
    random = build_model(ModelConfig(name="tiny-siglip", pretrained="random"), cache_dir=cache)
    a, b = default.model.state_dict(), random.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert random.notes == default.notes == []


def test_random_pretrained_builds_any_open_clip_architecture_seeded(cache):
    from models.open_clip_models import load_open_clip

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = load_open_clip("ViT-S-32-alt", "random", cache_dir=cache)  # 43M parameters, no tag at all
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is left as it was
    second = load_open_clip("ViT-S-32-alt", "random", cache_dir=cache)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # every process builds the same random model
    assert first.notes == [
        "weights: random init (seed 0) of ViT-S-32-alt, nothing pretrained",
        "preprocess: open_clip's defaults (no single tag of ViT-S-32-alt to take them from)",
    ]
    with pytest.raises(ValueError, match="'random'"):
        build_model(ModelConfig(name="ViT-S-32-alt", pretrained="randm"), cache_dir=cache)


def test_random_llm_spec_is_checked():
    from models.llm2vec_text import parse_random_spec, random_llm_config

    assert parse_random_spec("random:llama-2-7b-chat") == ("llama-2-7b-chat", None)
    assert parse_random_spec("random:llama-2-7b-chat:2") == ("llama-2-7b-chat", 2)
    config = random_llm_config("random:llama-2-7b-chat:2")
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size, config.vocab_size) == (
        4096,
        32,
        11008,
        32000,
    )
    assert config.num_hidden_layers == 2 and config._name_or_path == "meta-llama/Llama-2-7b-chat-hf"
    assert random_llm_config("tiny-llm2vec") is None
    for bad in ("random:llama-3", "random:llama-2-7b-chat:x", "random:llama-2-7b-chat:33"):
        with pytest.raises(ValueError, match="base_model"):
            parse_random_spec(bad)


def test_chat_model_without_a_known_template_warns(cache, tmp_path):
    from models.llm2vec_text import load_llm2vec

    local = copy_of_tiny_llm2vec(cache, tmp_path, "my-llama-chat-mntp", "/data/my-llama-chat")
    with pytest.warns(UserWarning, match="NO chat template"):
        encoder = load_llm2vec(str(local), dtype="fp32")
    assert encoder.model.config._name_or_path == "/data/my-llama-chat"


def test_unknown_model_name_lists_the_presets(cache):
    with pytest.raises(ValueError, match="unknown model.name='no-such-model'") as err:
        build_model(ModelConfig(name="no-such-model"), cache_dir=cache)
    assert all(name in str(err.value) for name in MODELS) and "open_clip" in str(err.value)


def test_paper_presets_name_what_they_load():
    assert set(MODELS) == {"clip-vit-l14-336", "siglip-vit-l16-384", "tiny-clip", "tiny-siglip"}
    assert (PAPER_MODELS["clip-vit-l14-336"].open_clip_name, PAPER_MODELS["clip-vit-l14-336"].pretrained) == (
        "ViT-L-14-336-quickgelu",
        "openai",
    )
    assert (PAPER_MODELS["siglip-vit-l16-384"].open_clip_name, PAPER_MODELS["siglip-vit-l16-384"].pretrained) == (
        "ViT-L-16-SigLIP-384",
        "webli",
    )


@pytest.mark.parametrize(
    ("preset", "missing"),
    [
        ("clip-vit-l14-336", ["timm/vit_large_patch14_clip_336.openai"]),
        ("siglip-vit-l16-384", ["timm/ViT-L-16-SigLIP-384", "tokenizer: Hugging Face repo timm/ViT-B-16-SigLIP"]),
    ],
)
def test_paper_presets_fail_offline_saying_what_is_missing(cache, preset, missing):
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        build_model(ModelConfig(name=preset), cache_dir=cache)
    message = str(err.value)
    assert f"model.name={preset}" in message and "model.pretrained=/path/to/" in message
    assert "Hugging Face cache" in message and all(m in message for m in missing)
    assert isinstance(err.value, FileNotFoundError)  # the trainer reports these without a traceback
    assert time.perf_counter() - started < 10  # fails before building a ViT-L


def test_missing_pretrained_file_is_named(cache):
    with pytest.raises(FileNotFoundError, match="/no/such.safetensors"):
        build_model(ModelConfig(name="tiny-clip", pretrained="/no/such.safetensors"), cache_dir=cache)


def test_inconsistent_config_is_refused(cache):
    cfg = ModelConfig(name="tiny-clip", image=ImageTowerConfig(locked=False, unlocked_last_blocks=1))
    with pytest.raises(ValueError, match="unlocking blocks needs locked=true"):
        build_model(cfg, cache_dir=cache)


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    from models.cache import resolve_cache_dir

    monkeypatch.setenv("CLIPABLATE_CACHE", str(tmp_path))
    assert resolve_cache_dir() == tmp_path and resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("CLIPABLATE_CACHE")
    assert resolve_cache_dir() == Path("~/.cache/clipablate").expanduser()


def test_concurrent_builds_leave_one_complete_folder(tmp_path):
    calls = []

    def slow_build(folder: Path) -> None:
        calls.append(folder)
        (folder / "part1").write_text("a")
        time.sleep(0.2)
        (folder / "part2").write_text("b")

    target = tmp_path / "thing"
    threads = [threading.Thread(target=build_once, args=(target, slow_build, {"v": 1})) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 2  # both built: each into its own temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]
    assert sorted(p.name for p in target.iterdir()) == ["clipablate_build.json", "part1", "part2"]
    build_once(target, lambda folder: calls.append(folder), {"v": 1})
    assert len(calls) == 2  # reused
    build_once(target, lambda folder: (folder / "new").write_text("c"), {"v": 2})
    assert sorted(p.name for p in target.iterdir()) == ["clipablate_build.json", "new"]  # stale: rebuilt


def test_contrastive_model_is_exported():
    assert ContrastiveModel.__module__ == "models.contrastive"
