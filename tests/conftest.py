"""Shared fixtures: one small toy world (clean and dirty) generated once per test session.

Every cache a test run could read or fill (ours, Hugging Face's, W&B's, torch's, matplotlib's, XDG's) points at a
fresh temporary folder, set here before anything else is imported, so the suite passes on a machine that has
never run it and never passes only because an earlier run left files behind. Subprocesses inherit the variables.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_FRESH_HOME = Path(tempfile.mkdtemp(prefix="clipablate-tests-"))
FRESH_CACHE_VARIABLES = {
    "CLIPABLATE_CACHE": "clipablate",
    "HF_HOME": "huggingface",
    "HF_DATASETS_CACHE": "huggingface/datasets",
    "TORCH_HOME": "torch",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "MPLCONFIGDIR": "matplotlib",
    "TRITON_CACHE_DIR": "triton",
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_CONFIG_DIR": "wandb-config",
    "WANDB_DATA_DIR": "wandb-data",
}
for _variable, _folder in FRESH_CACHE_VARIABLES.items():
    os.environ[_variable] = str(_FRESH_HOME / _folder)
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded, ever
# Under pytest-xdist (make test: -n 2) each worker takes its share of the cores for torch's threads, and so do the
# processes it starts: two workers with torch's default of every core each would oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

import pytest  # noqa: E402

from data_prep.toyworld import generate  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_FRESH_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_home() -> Path:
    """The temporary folder that every cache variable of this test run points into."""
    return _FRESH_HOME


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills, made once per test run: under pytest-xdist the first worker that needs it builds it
    (under a file lock) and the others reuse it. Tests only read these folders."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    shared = tmp_path_factory.getbasetemp().parent  # common to the workers of this run
    out, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small, clean, seed 0."""
    folder = built_once(tmp_path_factory, "toyworld", lambda out: generate(out / "world", seed=0, scale="small"))
    return folder / "world"


@pytest.fixture(scope="session")
def medium_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Medium (about 10x small: 9,250 images, about 20 s), clean, seed 0: for learning-signal tests."""
    folder = built_once(
        tmp_path_factory, "medium_toyworld", lambda out: generate(out / "world", seed=0, scale="medium")
    )
    return folder / "world"


@pytest.fixture(scope="session")
def medium_shards(medium_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The medium world's LLaVA data as shards (about 7,000 samples)."""
    return built_once(tmp_path_factory, "medium_shards", lambda out: llava_shards(medium_world, out, 1024))


@pytest.fixture(scope="session")
def dirty_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small, seed 0, with the broken inputs of real LLaVA data (--dirty)."""

    def build(out: Path) -> None:
        generate(out / "dirty_world", seed=0, scale="small", dirty=True)

    return built_once(tmp_path_factory, "dirty_toyworld", build) / "dirty_world"


@pytest.fixture(scope="session")
def world_shards(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean world's two LLaVA datasets converted into one shard folder (left/right hard negatives)."""
    return built_once(tmp_path_factory, "world_shards", lambda out: llava_shards(world, out, 128))


def llava_shards(world: Path, out: Path, shard_size: int) -> None:
    """A generated world's LCS-558K and DataMix-665K files as one shard folder, as make demo converts them."""
    from data_prep import build_shards

    llava = world / "llava"
    args = ["--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json")]
    args += ["--image-root", str(llava / "images")]
    args += ["--dataset", "mix665k", "--json", str(llava / "llava_v1_5_mix665k.json"), "--image-root", str(llava)]
    assert build_shards.main([*args, "--out", str(out), "--shard-size", str(shard_size), "--overwrite"]) == 0


@pytest.fixture
def offline_hub(monkeypatch):
    """Hugging Face offline even if huggingface_hub / transformers were imported before HF_HUB_OFFLINE was set."""
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True)
