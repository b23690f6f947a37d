"""The paper's architectures at full size with random weights (`model.pretrained: random`), on the CPU, offline.

CLIP ViT-L/14-336 and SigLIP ViT-L/16-384 as open_clip builds them (parameter counts, a forward pass, the tag's
preprocessing for random weights and for a weights file); a 1-layer Llama at Llama-2-7B's widths through llm2vec.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may try the network (set before any HF import)

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from models import ModelConfig, build_model
from models.config import ConnectorConfig, LLM2VecConfig, TextTowerConfig

pytestmark = [
    pytest.mark.usefixtures("offline_hub"),
    pytest.mark.system,
]  # system tier: real architectures at full size

# Parameter counts of open_clip 3.x's architectures (also checked against open_clip's own meta-device build below).
COUNTS = {
    "clip-vit-l14-336": {"total": 427_944_193, "image": 304_293_888},
    "siglip-vit-l16-384": {"total": 652_478_466, "image": 316_283_904},
}
OPEN_CLIP = {
    "clip-vit-l14-336": ("ViT-L-14-336-quickgelu", "openai"),
    "siglip-vit-l16-384": ("ViT-L-16-SigLIP-384", "webli"),
}
CAPTION = "a red ball to the left of a blue box"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_size_cache")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    torch.manual_seed(0)
    pixels = (torch.rand(300, 500, 3) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)  # not square: resize + crop and squash differ


def tag_transforms(open_clip_name: str, tag: str, monkeypatch) -> tuple:
    """What open_clip builds for `pretrained=tag`, on the meta device and without the download (never read)."""
    import open_clip

    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: "not-read")
    with torch.device("meta"):
        _, train, val = open_clip.create_model_and_transforms(
            open_clip_name, pretrained=tag, load_weights=False, device="meta"
        )
    return train, val


def assert_same_transforms(bundle, expected: tuple, image: Image.Image) -> None:
    train, val = expected
    assert repr(bundle.preprocess_eval) == repr(val) and repr(bundle.preprocess_train) == repr(train)
    assert torch.equal(bundle.preprocess_eval(image), val(image))


def open_clip_counts(open_clip_name: str) -> dict[str, int]:
    import open_clip

    with torch.device("meta"):
        model = open_clip.create_model(open_clip_name, load_weights=False, device="meta")
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "image": sum(p.numel() for p in model.visual.parameters()),
    }


def forward_one(bundle, image: Image.Image) -> dict:
    with torch.no_grad():
        return bundle.model(bundle.preprocess_eval(image)[None], bundle.tokenizer([CAPTION]))


def check_random_build(bundle, preset: str, image: Image.Image, monkeypatch) -> None:
    name, tag = OPEN_CLIP[preset]
    model = bundle.model
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "image": sum(p.numel() for p in model.image_tower.parameters()),
    }
    assert counts == COUNTS[preset] == open_clip_counts(name)
    assert bundle.info["open_clip_model"] == name and bundle.info["pretrained"] == "random"
    assert bundle.notes[0] == f"weights: random init (seed 0) of {name}, nothing pretrained"
    assert any(note.startswith(f"preprocess: the {tag!r} tag's") for note in bundle.notes)
    assert_same_transforms(bundle, tag_transforms(name, tag, monkeypatch), image)
    out = forward_one(bundle, image)
    dim = bundle.info["embed_dim"]
    assert out["image_features"].shape == out["text_features"].shape == (1, dim)
    assert torch.isfinite(out["image_features"]).all() and torch.isfinite(out["text_features"]).all()
    assert bundle.model.max_logit_scale == pytest.approx(math.log(100))  # random init: log(1/0.07) < log(100)


def test_clip_vit_l14_336_random_full_size(cache, image, monkeypatch):
    bundle = build_model(ModelConfig(name="clip-vit-l14-336", pretrained="random"), cache_dir=cache)
    check_random_build(bundle, "clip-vit-l14-336", image, monkeypatch)
    assert bundle.info["preprocess"]["resize_mode"] == "shortest" and bundle.info["image_size"] == [336, 336]
    tokens = bundle.tokenizer([CAPTION])["input_ids"]  # open_clip's bundled BPE: no stand-in needed
    assert tokens.shape == (1, 77) and tokens[0, 0] == 49406 and len(bundle.notes) == 2


def test_siglip_vit_l16_384_random_full_size_and_from_a_weights_file(cache, image, monkeypatch, tmp_path):
    from safetensors.torch import save_file

    bundle = build_model(ModelConfig(name="siglip-vit-l16-384", pretrained="random"), cache_dir=cache)
    check_random_build(bundle, "siglip-vit-l16-384", image, monkeypatch)
    # A random SigLIP starts as open_clip's training script starts one: logit scale ln 10, bias -10.
    assert bundle.model.logit_scale.item() == pytest.approx(math.log(10))
    assert bundle.model.logit_bias.item() == pytest.approx(-10.0)
    assert bundle.info["preprocess"]["resize_mode"] == "squash" and bundle.info["preprocess"]["mean"] == [0.5] * 3
    # The real tokenizer (timm/ViT-B-16-SigLIP, an HF repo) is not here: a stand-in with its interface, said so.
    note = [n for n in bundle.notes if n.startswith("tokenizer:")]
    assert len(note) == 1 and "stand-in" in note[0] and "timm/ViT-B-16-SigLIP" in note[0] and "needs the hub" in note[0]
    tokens = bundle.tokenizer([CAPTION, "a box"])["input_ids"]
    assert tokens.shape == (2, 64) and int(tokens.max()) < 32000
    for row in tokens:  # the text, </s> (1), then <pad> (0) to the context length
        length = int((row != 0).sum())
        assert 1 < length < 20 and row[length - 1] == 1 and (row[length:] == 0).all()

    # A weights file of the preset (here in a folder that also holds the tokenizer, as a Hugging Face snapshot):
    # open_clip alone would give it CLIP's transforms; the build gives it the webli tag's, as when named.
    folder = tmp_path / "ViT-L-16-SigLIP-384"
    folder.mkdir()
    expected = {k: v.contiguous() for k, v in bundle.model.open_clip_state_dict().items()}
    save_file(expected, str(folder / "open_clip_model.safetensors"))
    bundle.tokenizer.open_clip_tokenizer.save_pretrained(str(folder))
    reference = forward_one(bundle, image)
    del bundle
    weights = str(folder / "open_clip_model.safetensors")
    loaded = build_model(ModelConfig(name="siglip-vit-l16-384", pretrained=weights), cache_dir=cache)
    assert_same_transforms(loaded, tag_transforms("ViT-L-16-SigLIP-384", "webli", monkeypatch), image)
    assert loaded.notes == [
        "preprocess: the 'webli' tag's (mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), interpolation bicubic, "
        "resize_mode squash), as when open_clip loads 'webli'",
        f"tokenizer: timm/ViT-B-16-SigLIP's, from {folder}",
    ]
    got = loaded.model.open_clip_state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    # Same weights and transforms give the same image features; the text side also needs the same tokenizer.
    with torch.no_grad():
        text = loaded.model.encode_text(loaded.tokenizer([CAPTION]))
    assert torch.equal(text, reference["text_features"])


def test_llm2vec_at_llama2_7b_widths_equals_llm2vec_encode(cache, tmp_path):
    """1 of Llama-2-7B's 32 layers at its real widths: the tower's pooled embedding is LLM2Vec.encode's."""
    from models.llm2vec_text import (
        LLM2VecTextTower,
        LLM2VecTokenizer,
        fit_doc_max_length,
        llm_notes,
        load_llm2vec,
        write_random_llama,
    )

    folder = write_random_llama(tmp_path / "llama", layers=1, dtype="fp32")
    encoder = load_llm2vec(str(folder), max_length=64, dtype="fp32")
    config = encoder.model.config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size, config.vocab_size) == (
        4096,
        32,
        11008,
        32000,
    )
    assert config.num_hidden_layers == 1 and type(encoder.model).__name__ == "LlamaBiModel"
    assert config._name_or_path == "meta-llama/Llama-2-7b-chat-hf"  # llm2vec wraps captions in Llama-2's template
    long = " ".join(["a small red ball lies to the left of a large blue box on the wooden table"] * 6)
    texts = [CAPTION, long]
    for instruction in ("", "Describe the image:"):
        encoder.doc_max_length = 400
        encoder.doc_max_length = fit_doc_max_length(encoder, instruction)
        tokenizer = LLM2VecTokenizer(encoder, instruction)
        tokens = tokenizer(texts)
        kept = tokens["input_ids"][1][tokens["attention_mask"][1].bool()]
        assert len(kept) < 64 and encoder.tokenizer.decode(kept).endswith(" [/INST]")
        with torch.no_grad():
            ours = LLM2VecTextTower(encoder, embed_dim=1024).frozen_features(tokens)
        theirs = encoder.encode(
            [[instruction, t] for t in texts], batch_size=2, show_progress_bar=False, convert_to_tensor=True
        )
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)

    # base_model="random:llama-2-7b-chat:1" builds the same model in memory, with the LLaVA-width connector.
    cfg = ModelConfig(
        name="tiny-clip",
        text=TextTowerConfig(
            tower="llm2vec",
            llm2vec=LLM2VecConfig(base_model="random:llama-2-7b-chat:1", max_length=64, dtype="fp32"),
            connector=ConnectorConfig(hidden_dim=64),
        ),
    )
    bundle = build_model(cfg, cache_dir=cache)
    built = bundle.model.text_tower.llm2vec.model.state_dict()
    loaded = encoder.model.state_dict()
    assert built.keys() == loaded.keys() and all(torch.equal(built[k], loaded[k]) for k in built)
    assert bundle.notes == [
        "llm: random weights (seed 0) at llama-2-7b-chat widths, 1 of 32 layers, nothing pretrained",
        f"tokenizer: stand-in byte-level BPE (vocab {len(encoder.tokenizer)}), the real one "
        "(meta-llama/Llama-2-7b-chat-hf) needs the hub",
    ]
    assert llm_notes(encoder, str(folder)) == bundle.notes  # the folder records what it is
    assert bundle.info["llm2vec"]["chat_template_name"] == "meta-llama/Llama-2-7b-chat-hf"
    assert bundle.model.connector[0].in_features == 4096
