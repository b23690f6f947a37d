"""A first start lists every missing piece at once, before any weights load (models/weights_preflight.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.config import load_recipe
from train.typed_config import ConfigError


def fake_cached(hub_cache: Path, repo: str, filename: str, text: str = "{}") -> None:
    """A file as huggingface_hub's cache lays it out (refs/main -> snapshots/<revision>/<file>)."""
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).write_text(text)


def test_every_missing_piece_of_a_paper_recipe_is_listed_in_one_message(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from train import finetune

    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(finetune, "build_model", lambda cfg: pytest.fail("weights were loaded"))
    args = ["siglip_llm2vec_neg", f"output_dir={tmp_path / 'runs'}", f"data.shards=[{tmp_path / 'none'}]"]
    assert finetune.cli(args) == 2
    err = capsys.readouterr().err
    for needed in (
        "data.shards[0]:",  # the shards
        "`huggingface-cli download timm/ViT-L-16-SigLIP-384`",  # SigLIP's weights
        "`huggingface-cli download timm/ViT-B-16-SigLIP`",  # its tokenizer
        "`huggingface-cli download McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp`",  # the LLM2Vec adapter
        "`huggingface-cli download meta-llama/Llama-2-7b-chat-hf` (gated: accept its licence",  # the LLM it adapts
    ):
        assert needed in err, err
    assert "initialized randomly" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written

    # what is in the cache is not asked for; the adapter's own record names its base once it is there
    fake_cached(hub, "timm/ViT-L-16-SigLIP-384", "open_clip_model.safetensors")
    base = {"base_model_name_or_path": "meta-llama/Llama-2-7b-chat-hf"}
    fake_cached(hub, "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp", "adapter_config.json", json.dumps(base))
    with pytest.raises(ConfigError) as err:
        load_recipe("siglip_llm2vec_neg", [f"data.shards=[{tmp_path}]"], paths="error")
    problems = "\n".join(err.value.problems)
    assert "timm/ViT-L-16-SigLIP-384" not in problems and "LLM2Vec-Llama-2-7b-chat-hf-mntp`" not in problems
    assert "timm/ViT-B-16-SigLIP" in problems and "meta-llama/Llama-2-7b-chat-hf" in problems


def test_online_nothing_is_asked_for(tmp_path, monkeypatch):
    """A connected machine downloads at first use: the preflight asks only where the hub is off."""
    import huggingface_hub.constants

    from models.weights_preflight import missing_weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    cfg = load_recipe("siglip_llm2vec_neg").model
    assert len(missing_weights(cfg)) == 4  # offline (the tests' setting): weights, tokenizer, adapter, gated base
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert missing_weights(cfg) == []


def test_tiny_and_random_models_need_nothing(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"")
    for recipe, extra in (("tiny_clip_llm2vec_neg", []), ("clip_neg", ["model.pretrained=random"])):
        load_recipe(recipe, [f"data.shards=[{tmp_path}]", *extra], paths="error")  # no ConfigError
