"""A first run on a machine whose caches are empty: nothing may depend on files an earlier run left behind."""

from test_finetune import finetune_cmd, metrics, run

from models.memory import model_on_meta
from train.config import load_recipe


def test_the_meta_device_estimate_builds_the_tiny_llm_folder_on_an_empty_cache(tmp_path):
    """The estimate used to build tiny-llm2vec inside `torch.device("meta")`, which save_pretrained refuses."""
    cache = tmp_path / "empty-cache"
    cfg = load_recipe("recipes/tiny_clip_llm2vec_neg.yaml").model
    model = model_on_meta(cfg, cache_dir=cache)
    assert all(p.is_meta for p in model.parameters())
    weights = list((cache / "tiny-llm2vec").glob("*.safetensors"))
    assert weights and all(w.stat().st_size > 10_000 for w in weights)  # real tensors on disk, not meta stubs


def test_finetune_with_an_llm2vec_tower_runs_on_an_empty_cache(world_shards, tmp_path):
    cache = tmp_path / "empty-cache"
    env_cache = {"CLIPABLATE_CACHE": str(cache)}
    args = finetune_cmd("tiny_clip_llm2vec_neg", world_shards, tmp_path / "runs", "train.max_steps=1",
                        "optim.warmup_steps=0")  # fmt: skip
    result = run(args, env=env_cache)
    assert "memory estimate per process (as on a GPU)" in result.stdout  # a CPU run: one line, no GPU table
    assert [r["step"] for r in metrics(tmp_path / "runs" / "tiny_clip_llm2vec_neg")] == [1]
    assert (cache / "tiny-llm2vec" / "config.json").exists()
