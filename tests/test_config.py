"""Recipes: typed loading, overrides, every problem reported at once, YAML round trip."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from train.config import RecipeConfig, load_recipe
from train.typed_config import ConfigError, to_yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPES = {
    "clip_finetune", "clip_neg", "clip_llm2vec", "clip_llm2vec_neg",
    "siglip_finetune", "siglip_neg", "siglip_llm2vec", "siglip_llm2vec_neg",
    "siglip_unlocked_finetune", "siglip_unlocked_neg",
    "siglip_llm2vec_unlocked_finetune", "siglip_llm2vec_unlocked_neg",
}  # fmt: skip
TINY_RECIPES = {
    "tiny_clip_finetune",
    "tiny_clip_neg",
    "tiny_siglip_finetune",
    "tiny_siglip_neg",
    "tiny_clip_llm2vec_neg",
}


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_shipped_recipe_validates_and_round_trips(tmp_path):
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} == PAPER_RECIPES | TINY_RECIPES
    assert len(recipes) == 17
    for path in recipes:
        cfg = load_recipe(path)
        assert cfg.run_name == path.stem
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert f"# Run: accelerate launch train/finetune.py recipes/{path.stem}.yaml" in header
        again = load_recipe(write(tmp_path, to_yaml(cfg), f"{path.stem}.yaml"))
        assert again == cfg


def test_paper_recipes_carry_the_papers_hyperparameters():
    for name in PAPER_RECIPES:
        cfg = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.epochs) == (5e-6, 50, 5)
        assert cfg.train.global_batch_size == 512 and cfg.optim.schedule == "cosine"
        assert cfg.model.image.locked == ("unlocked" not in name)
        assert cfg.loss.uses_hard_negatives == name.endswith("_neg")
        assert (cfg.model.text.tower == "llm2vec") == ("llm2vec" in name)
        assert cfg.data.caption_policy == ("concat" if "llm2vec" in name else "random")


def test_values_are_converted_by_declared_type(tmp_path):
    path = write(
        tmp_path,
        """
        optim: {lr: 5e-6, warmup_steps: 1e2}
        data: {shards: one_folder, batch_size: "16"}
        model: {image: {locked: no}}
        """,
    )
    cfg = load_recipe(path)
    assert cfg.optim.lr == 5e-6 and isinstance(cfg.optim.lr, float)  # PyYAML reads 5e-6 as a string
    assert cfg.optim.warmup_steps == 100 and isinstance(cfg.optim.warmup_steps, int)
    assert cfg.data.shards == ("one_folder",)
    assert cfg.data.batch_size == 16
    assert cfg.model.image.locked is False


def test_overrides_follow_the_recipe_and_keep_text_verbatim(tmp_path):
    path = write(tmp_path, "data: {shards: [a]}\n")
    cfg = load_recipe(
        path,
        [
            "optim.lr=1e-5",
            "data.batch_size=64",
            "data.shards=[x, y]",
            "run_name=no",
            "model.pretrained=1e-5",
            "model.text.locked=yes",
            "model.image.unlocked_last_blocks=2",
            "train.precision=bf16",
        ],
    )
    assert cfg.optim.lr == 1e-5
    assert cfg.data.batch_size == 64
    assert cfg.data.shards == ("x", "y")
    assert cfg.run_name == "no"  # a str field keeps the typed text, not YAML's False
    assert cfg.model.pretrained == "1e-5"
    assert cfg.model.text.locked is True and cfg.model.image.unlocked_last_blocks == 2
    assert cfg.train.precision == "bf16"
    assert cfg.optim.warmup_steps == RecipeConfig().optim.warmup_steps  # untouched keys keep schema defaults


def test_five_mistakes_are_all_reported_with_key_paths(tmp_path):
    path = write(
        tmp_path,
        """
        data:
          shards: [shards]
          batch_size: many          # 1: wrong type
        optim:
          shedule: cosine           # 2: unknown key (typo)
          warmup_steps: 100         # 5: longer than training
        loss:
          name: negclp              # 3: bad choice
        train:
          precision: no             # 4: YAML boolean where a choice is expected
          max_steps: 10
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = str(info.value)
    assert text.startswith(f"{path}: 5 problems:")
    assert any(p.startswith("data.batch_size: expected an integer") for p in problems)
    assert any(p.startswith("optim.shedule: unknown key; did you mean 'optim.schedule'?") for p in problems)
    assert any(p.startswith("loss.name: 'negclp' is not a valid choice (did you mean 'negclip'?)") for p in problems)
    assert any(p.startswith("train.precision: False is not a valid choice") for p in problems)
    assert any(p.startswith("optim.warmup_steps / train.max_steps: warmup (100 steps)") for p in problems)


def test_the_cli_reports_problems_without_a_traceback(tmp_path):
    path = write(tmp_path, "data: {shards: [s], batch_size: 0}\noptim: {lr: -1}\nwandb: {mode: loud}\n")
    result = subprocess.run(
        [sys.executable, "-m", "train.config", str(path), "seed=abc", "optim.nope=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for key in ("data.batch_size", "optim.lr", "wandb.mode", "seed", "optim.nope"):
        assert f"  - {key}" in result.stderr, result.stderr
    assert result.stderr.startswith(f"{path}: 5 problems:")


def test_cross_field_checks_skip_keys_that_already_failed(tmp_path):
    path = write(tmp_path, "data: {shards: [s]}\noptim: {warmup_steps: lots}\ntrain: {max_steps: 10}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert info.value.problems == ["optim.warmup_steps: expected an integer, got string 'lots'"]


def test_structural_mistakes_are_reported(tmp_path):
    path = write(tmp_path, "model: tiny-clip\ndata: {shards: [s]}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path, ["novalue", "data.batch_size=2", "data.batch_size.x=3"])
    problems = info.value.problems
    assert "override 'novalue': expected key.sub=value" in problems
    assert any(p.startswith("model: expected a mapping of keys") for p in problems)
    assert any(p.startswith("data.batch_size.x: conflicts") for p in problems)


def test_missing_and_unparsable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(write(tmp_path, "a: [1, 2\n"))


def test_empty_shards_and_frozen_everything_are_rejected(tmp_path):
    path = write(tmp_path, "model: {text: {locked: true}}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert info.value.problems == [
        "model.image.locked / model.text.locked: both towers are frozen: nothing would train",
        "data.shards: at least one shard folder is required",
    ]
