"""Shared fixtures: one small toy world (clean and dirty) generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.toyworld import generate


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small, clean, seed 0."""
    out = tmp_path_factory.mktemp("toyworld") / "world"
    generate(out, seed=0, scale="small", dirty=False)
    return out


@pytest.fixture(scope="session")
def dirty_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small, seed 0, with the broken inputs of real LLaVA data (--dirty)."""
    out = tmp_path_factory.mktemp("toyworld") / "dirty_world"
    generate(out, seed=0, scale="small", dirty=True)
    return out


@pytest.fixture(scope="session")
def world_shards(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean world's two LLaVA datasets converted into one shard folder (left/right hard negatives)."""
    from data_prep import build_shards

    out = tmp_path_factory.mktemp("world_shards")
    llava = world / "llava"
    args = ["--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json")]
    args += ["--image-root", str(llava / "images")]
    args += ["--dataset", "mix665k", "--json", str(llava / "llava_v1_5_mix665k.json"), "--image-root", str(llava)]
    assert build_shards.main([*args, "--out", str(out), "--shard-size", "128"]) == 0
    return out


@pytest.fixture
def offline_hub(monkeypatch):
    """Hugging Face offline even if huggingface_hub / transformers were imported before HF_HUB_OFFLINE was set."""
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True)
