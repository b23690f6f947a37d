"""Recipes: typed loading, overrides, every problem reported at once, YAML round trip."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from train.config import RecipeConfig, load_recipe, path_problems, path_warnings
from train.config import main as config_main
from train.typed_config import ConfigError, to_yaml
from train.yaml_loading import DuplicateKeyError, StrictLoader, load_yaml_file, parse_yaml

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
HEAD_RECIPES = {  # beyond the paper: PACL, xattn and SPARC heads on the patch tokens (launch/sweeps/paper_heads.yaml)
    "clip_pacl_neg", "clip_llm2vec_pacl_neg", "siglip_pacl_neg", "siglip_llm2vec_pacl_neg",
    "tiny_clip_pacl_neg", "tiny_siglip_pacl_neg", "tiny_clip_llm2vec_pacl_neg",
    "clip_xattn_neg", "clip_llm2vec_xattn_neg", "siglip_xattn_neg", "siglip_llm2vec_xattn_neg", "tiny_clip_xattn_neg",
    "clip_sparc_neg", "clip_llm2vec_sparc_neg", "siglip_sparc_neg", "siglip_llm2vec_sparc_neg", "tiny_clip_sparc_neg",
}  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_shipped_recipe_validates_and_round_trips(tmp_path):
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} == PAPER_RECIPES | TINY_RECIPES | HEAD_RECIPES
    assert len(recipes) == 34
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
    path = write(tmp_path, "data: {shards: [s], batch_size: -1}\noptim: {lr: -1}\nwandb: {mode: loud}\n")
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


# --- strict YAML: duplicate keys, syntax errors ------------------------------------------------------------------


def test_a_key_given_twice_is_an_error_naming_the_file_and_both_lines(tmp_path):
    path = write(
        tmp_path,
        """\
        data: {shards: [s]}
        optim:
          lr: 1e-4
          warmup_steps: 5
        train:
          epochs: 2
          epochs: 3
        optim:
          lr: 1e-5
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert info.value.problems == [
        "key 'train.epochs' appears twice (lines 6 and 7)",
        "key 'optim' appears twice (lines 2 and 8)",
    ]
    assert str(info.value).startswith(f"{path}: 2 problems:")


def test_strict_yaml_checks_every_level_and_allows_merge_keys():
    with pytest.raises(DuplicateKeyError) as info:
        yaml.load("runs:\n  - {a: 1, b: 2}\n  - {a: 1, a: 2}\n", Loader=StrictLoader)
    assert info.value.problems == ["key 'runs[1].a' appears twice (both on line 3)"]
    assert isinstance(info.value, yaml.YAMLError)  # callers catching YAML errors catch it too
    text = "base: &b {lr: 1, wd: 2}\noptim:\n  <<: *b\n  lr: 3\n"  # overriding a merged key is what `<<` is for
    assert yaml.load(text, Loader=StrictLoader) == {"base": {"lr": 1, "wd": 2}, "optim": {"lr": 3, "wd": 2}}
    with pytest.raises(ConfigError, match=r"key 'on' appears twice \(lines 1 and 2\)"):
        parse_yaml("on: 1\non: 2\n", "x.yaml")


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, "data:\n  shards: [a, b\noptim: {lr: 1}\n"))
    (problem,) = info.value.problems
    assert problem.startswith("not valid YAML at line 3, column 6:"), problem
    assert "while parsing a flow sequence at line 2" in problem
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2, column 1: found character '\\t'"):
        load_recipe(write(tmp_path, "data:\n\tshards: [a]\n", "tab.yaml"))
    with pytest.raises(ConfigError, match="is a folder, not a recipe file"):
        load_recipe(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a text file"):
        load_recipe(tmp_path / "binary.yaml")


# --- the model name ----------------------------------------------------------------------------------------------


def test_an_unknown_model_name_is_reported_with_the_other_problems(tmp_path):
    path = write(tmp_path, "model: {name: tiny-clop}\ndata: {shards: [s]}\noptim: {lr: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    problems = info.value.problems
    assert len(problems) == 2 and problems[0] == "optim.lr: must be > 0"
    assert problems[1].startswith("model.name: unknown model 'tiny-clop'; did you mean 'tiny-clip'?")
    assert all(name in problems[1] for name in ("clip-vit-l14-336", "siglip-vit-l16-384", "tiny-siglip"))


def test_open_clip_names_need_a_pretrained_tag_file_or_random(tmp_path):
    path = write(tmp_path, "data: {shards: [s]}\n")
    assert load_recipe(path, ["model.name=ViT-B-32", "model.pretrained=openai"]).model.name == "ViT-B-32"
    assert load_recipe(path, ["model.name=ViT-B/32", "model.pretrained=random"]).model.pretrained == "random"
    assert load_recipe(path, ["model.name=ViT-B-32", "model.pretrained=/w/b32.bin"]).model.pretrained  # a path
    assert load_recipe(path, ["model.name=clip-vit-l14-336", "model.pretrained=openai"]).model.pretrained == "openai"
    cases = {
        ("model.name=ViT-B-32",): "model.name / model.pretrained: ViT-B-32 is an open_clip architecture without a "
        "preset: set one of its tags (openai, ",
        ("model.name=ViT-B-32", "model.pretrained=opanai"): "model.pretrained: 'opanai' is not one of its tags",
        ("model.name=hf-hub:org/model", "model.pretrained=openai"): "model.name / model.pretrained: hf-hub:org/model "
        "loads its own weights",
        ("model.name=ViT-B-33",): "model.name: unknown model 'ViT-B-33'; did you mean 'ViT-B-32'?",
        ("model.name=clip-vit-l14-336", "model.pretrained=opneai"): "model.pretrained: 'opneai' is not a tag of "
        "clip-vit-l14-336 (ViT-L-14-336-quickgelu: openai",
    }
    for overrides, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            load_recipe(path, list(overrides))
        assert [p[: len(expected)] for p in info.value.problems] == [expected], overrides


# --- folders the recipe names --------------------------------------------------------------------------------------


def test_missing_or_empty_shard_folders_are_problems_when_asked(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "a-000000.tar").write_bytes(b"")
    path = write(tmp_path, f"data: {{shards: [{tmp_path}/absent, {empty}, {full}]}}\neval: {{data_root: nowhere}}\n")

    cfg = load_recipe(path)  # paths="ignore": sweeps and tools that run before the data exists
    assert path_problems(cfg) == [
        f"data.shards[0]: {tmp_path}/absent: no such folder (write shards with python -m data_prep.build_shards)",
        f"data.shards[1]: {empty}: holds no *.tar shards (write shards with python -m data_prep.build_shards)",
    ]
    assert path_warnings(cfg) == ["eval.data_root: nowhere: no such folder (eval.run needs it, or --data-root)"]
    assert capsys.readouterr().err == ""

    with pytest.raises(ConfigError) as info:  # what train/finetune.py asks for, before it writes the run folder
        load_recipe(path, ["optim.lr=0", "model.pretrained=/no/weights.safetensors"], paths="error")
    assert info.value.problems == [
        "optim.lr: must be > 0",
        *path_problems(cfg),
        "model.pretrained: /no/weights.safetensors: no such weights file or folder",
    ]
    assert capsys.readouterr().err == ""  # warnings wait until the problems are fixed

    assert load_recipe(path, paths="warn") == cfg
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {path}: {w}" for w in [*path_problems(cfg), *path_warnings(cfg)]]

    fixed = load_recipe(path, [f"data.shards=[{full}]"], paths="error")  # a missing eval.data_root only warns
    assert fixed.data.shards == (str(full),)
    assert capsys.readouterr().err == f"warning: {path}: {path_warnings(cfg)[0]}\n"
    with pytest.raises(ConfigError) as info:  # a value that did not convert is not looked up on disk
        load_recipe(path, ["data.shards={a: 1}"], paths="error")
    assert [p.split(":")[0] for p in info.value.problems] == ["data.shards"]


# --- the command line ----------------------------------------------------------------------------------------------


def test_the_config_command_ends_every_mistake_with_a_message_and_status_2(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a-000000.tar").write_bytes(b"")
    good = write(tmp_path, f"data: {{shards: [{shards}]}}\n", "good.yaml")
    cases = {
        (str(tmp_path / "absent.yaml"),): "recipe file not found",
        (str(tmp_path),): "is a folder, not a recipe file",
        (str(write(tmp_path, "a: [1\n", "bad.yaml")),): "not valid YAML at line 2",
        (str(write(tmp_path, "seed: 1\nseed: 2\n", "twice.yaml")),): "key 'seed' appears twice (lines 1 and 2)",
        (str(good), "model.name=tiny-clop"): "did you mean 'tiny-clip'?",
        (str(good), "optim.lrr=1"): "optim.lrr: unknown key; did you mean 'optim.lr'?",
        (str(good), "data.shards=[nope]", "--check-paths"): "data.shards[0]: nope: no such folder",
    }
    for argv, expected in cases.items():
        assert config_main(list(argv)) == 2, argv
        out = capsys.readouterr()
        assert out.out == "" and expected in out.err and out.err.startswith(f"{argv[0]}: "), (argv, out.err)
    assert config_main([str(good), "data.shards=[nope]"]) == 0  # without --check-paths: a warning
    out = capsys.readouterr()
    assert out.err == f"warning: {good}: data.shards[0]: nope: no such folder (write shards with python -m " \
        "data_prep.build_shards)\n" and "shards:\n  - nope\n" in out.out  # fmt: skip
    assert config_main([str(good), "--check-paths"]) == 0 and capsys.readouterr().err == ""

    result = subprocess.run(
        [sys.executable, "-m", "train.config", str(tmp_path / "twice.yaml")], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"{tmp_path / 'twice.yaml'}: 1 problem:\n  - key 'seed' appears twice (lines 1 and 2)\n"


def test_every_shipped_yaml_file_reads_strictly():
    files = [*ROOT.glob("recipes/*.yaml"), *ROOT.glob("launch/sweeps/*.yaml"), *ROOT.glob("launch/accelerate/*.yaml")]
    assert len(files) >= 17 + 3 + 5
    for path in files:
        assert isinstance(load_yaml_file(path), dict), path
