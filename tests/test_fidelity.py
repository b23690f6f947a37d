"""The authors' released code as a profile, ours as switches: each released behaviour on real files (issue 18)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_finetune import finetune_cmd, metrics, poison_text_gradients

from data_prep.released_negatives import RELEASED_PHRASES, released_negative
from eval.benchmarks import run_benchmark
from eval.common import pick
from train.config import load_recipe
from train.profiles import LEDGER, PROFILES
from train.typed_config import ConfigError, flatten, to_plain

ROOT = Path(__file__).resolve().parents[1]


# --- 1. their hard-negative rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "negative"),
    [
        ("one on the left and one on the right", "one on the right and one on the right"),  # first phrase wins
        ("On the left, a tree.", None),  # case-sensitive
        ("the bus on the right side, a car to the left of it", "the bus on the left side, a car to the left of it"),
        ("he raised his left hand", None),  # no phrase, no negative
        (
            "a cup to the right of a box, a pen to the right of it",
            "a cup to the left of a box, a pen to the left of it",
        ),
        ("the lamp at the left", "the lamp at the right"),
    ],
)
def test_the_released_rule_pins_its_consequences(caption, negative):
    assert released_negative(caption) == negative


def test_the_released_table_is_leftright_json_in_its_order():
    assert [p for p, _ in RELEASED_PHRASES] == [
        "on the left", "on the right", "to the left", "to the right", "at the left", "at the right",
    ]  # fmt: skip
    assert all(released_negative(p) == o for p, o in RELEASED_PHRASES)


def test_the_rule_applies_to_the_caption_drawn_for_the_step_without_new_shards(world_shards):
    from train.data import ShardSamples, index_shards

    index = index_shards([world_shards])
    ours = ShardSamples(index, lambda image: image, "random", seed=3)
    theirs = ShardSamples(index, lambda image: image, "random", seed=3, negative_rule="released")
    differ = with_released = 0
    for i in range(len(index)):
        caption, negative = ours.caption(i, 11)
        caption_2, released = theirs.caption(i, 11)
        assert caption_2 == caption  # the same draw; only the negative differs
        assert released == released_negative(caption)
        assert negative in ours.meta(i)["hard_negatives"]
        differ += negative != released
        with_released += released is not None
    assert with_released > 0 and differ > 0


def test_manifest_and_inspect_count_both_rules(world_shards):
    manifest = json.loads((world_shards / "manifest.json").read_text())
    released = manifest["hard_negatives"]["released"]
    assert released["captions_with_negative"] > 0
    assert released["captions_differing_from_token_rules"] > 0
    assert {"identical_after_clip_truncation_token_rules", "identical_after_clip_truncation_released"} <= set(released)
    out = subprocess.run(
        [sys.executable, "-m", "data_prep.inspect_shards", str(world_shards), "--sample", "2", "--show", "0"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert "/ released-rule]" in out
    pairs = [line for line in out.splitlines() if line.strip().startswith("negative:")]
    assert pairs


def test_a_negative_equal_to_its_caption_after_truncation_is_no_negative():
    from models import build_model
    from models.config import ModelConfig
    from train.data import Collate

    bundle = build_model(ModelConfig(name="tiny-clip"))  # context length 32
    long = "a red cube " * 12
    captions = [long + "on the left", "a cup on the left"]
    negatives = [long + "on the right", "a cup on the right"]
    pixels = torch.zeros(3, 8, 8)
    batch = Collate(bundle.tokenizer, with_negatives=True)(
        [(pixels, c, n, str(i)) for i, (c, n) in enumerate(zip(captions, negatives, strict=True))]
    )
    assert batch.negative_mask.tolist() == [False, True]
    assert batch.negatives_identical == 1


# --- 2./3. the profile, our switches, the ledger -----------------------------------------------------------------


def paper_recipes() -> list[Path]:
    """The paper's recipes: not the tiny ones, nor those beyond the paper (an alignment head, profile clipablate)."""
    recipes = (p for p in (ROOT / "recipes").glob("*.yaml") if not p.stem.startswith("tiny_"))
    return sorted(p for p in recipes if load_recipe(p).model.head.kind == "dot")


@pytest.mark.parametrize("recipe", paper_recipes(), ids=lambda p: p.stem)
def test_every_paper_recipe_resolves_to_the_released_profile(recipe):
    flat = flatten(to_plain(load_recipe(recipe)))
    locked = flat["model.image.locked"]
    for point in LEDGER:
        if point.key == "data.augment" and not locked:
            continue  # an unlocked tower trains with random crops in every profile
        assert flat[point.key] == point.released, (recipe.stem, point.key)


def test_one_override_switches_one_point_and_the_recipe_file_outranks_the_profile(tmp_path):
    switched = load_recipe(ROOT / "recipes/clip_neg.yaml", ["train.precision=bf16"])
    assert switched.train.precision == "bf16" and switched.optim.weight_decay == 0.0
    ours = load_recipe(ROOT / "recipes/clip_neg.yaml", ["profile=clipablate"])
    assert {k: flatten(to_plain(ours))[k] for k in (p.key for p in LEDGER)} == {p.key: p.ours for p in LEDGER}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("profile: released\ndata: {shards: [x]}\noptim: {weight_decay: 0.3}\n")
    assert load_recipe(recipe).optim.weight_decay == 0.3
    assert PROFILES["released"]["optim"]["weight_decay"] == 0.0


def test_the_fidelity_sweep_turns_each_choice_on_alone(tmp_path):
    from launch.plan import plan_sweep
    from launch.sweep_config import load_sweep

    source = ROOT / "launch/sweeps/fidelity.yaml"
    plan = plan_sweep(load_sweep(source), source, tmp_path)
    released = flatten(PROFILES["released"])
    trained = [p.key for p in LEDGER if p.key != "eval.scoring"]  # the eval rule changes no training
    for recipe in ("clip_neg", "siglip_neg"):
        runs = [flatten(to_plain(run.cfg)) for run in plan.runs if run.recipe == recipe]
        assert len(runs) == 7
        switched = [[k for k in trained if r[k] != released[k]] for r in runs]
        assert switched[0] == [] and sorted(k for keys in switched[1:] for k in keys) == sorted(trained), switched
        assert all(len(keys) == 1 for keys in switched[1:])


def test_a_sigmoid_loss_needs_a_logit_bias(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: tiny-clip}\ndata: {shards: [x]}\nloss: {name: siglip_neg}\n")
    with pytest.raises(ConfigError, match="needs a model with a logit bias"):
        load_recipe(recipe)
    recipe.write_text("model: {name: tiny-siglip}\ndata: {shards: [x]}\nloss: {name: siglip_neg}\n")
    assert load_recipe(recipe).loss.name == "siglip_neg"


def test_random_siglip_starts_as_open_clips_siglip():
    from models.open_clip_models import random_init_kwargs

    assert random_init_kwargs("ViT-L-16-SigLIP-384") == {"init_logit_scale": math.log(10), "init_logit_bias": -10}
    assert random_init_kwargs("ViT-L-14-336-quickgelu") == {}


def test_released_gelu_builds_gelu_and_keeps_the_weights():
    from models import build_model
    from models.config import ModelConfig

    quick = build_model(ModelConfig(name="tiny-clip"))
    plain = build_model(ModelConfig(name="tiny-clip", released_gelu=True))
    assert quick.info["activation"] == "QuickGELU" and plain.info["activation"] == "GELU"
    for (name, a), (_, b) in zip(quick.model.state_dict().items(), plain.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    pixels = torch.randn(2, 3, *quick.info["image_size"])
    assert not torch.allclose(quick.model.encode_image(pixels), plain.model.encode_image(pixels))


# --- training under the released profile -------------------------------------------------------------------------


def test_released_profile_trains_with_crops_their_negatives_and_counts_scaler_skips(
    world_shards, tmp_path, monkeypatch
):
    """fp16 + scaler on a CPU process: inf gradients at step 2 are a skipped step, counted, and the run goes on."""
    from train import finetune

    # 2 micro-batches per step: backward calls 3 and 4 are step 2
    poison_text_gradients(monkeypatch, finetune, float("inf"), lambda call: call in (3, 4))
    args = finetune_cmd("tiny_clip_neg", world_shards, tmp_path, "profile=released", "train.precision=fp16",
                        "train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1")[1:]  # fmt: skip
    from accelerate.state import AcceleratorState

    # accelerate keeps one state per process: this run's fp16 must neither meet an earlier in-process run's
    # precision nor be left to later ones
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        assert finetune.cli(args) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    run_dir = tmp_path / "tiny_clip_neg"
    records = metrics(run_dir)
    assert [r["skipped_steps"] for r in records] == [0, 1, 0, 0]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert all("negatives_per_step" in r and "negatives_identical" in r for r in records)
    caches = json.loads((run_dir / "feature_caches.json").read_text())
    assert caches["image"] is None and any("data.augment=true" in note for note in caches["notes"])
    cfg = load_recipe(run_dir / "config.yaml")
    assert cfg.data.negative_rule == "released" and cfg.data.augment and cfg.optim.weight_decay == 0.0


@pytest.mark.parametrize(("clamp", "above_100"), [("log100", False), ("pretrained", True)])
def test_the_clamp_on_a_siglip_started_above_100(world_shards, tmp_path, clamp, above_100):
    import open_clip

    from models import build_model
    from models.config import ModelConfig

    bundle = build_model(ModelConfig(name="tiny-siglip"))
    start = tmp_path / "siglip_120.pt"
    state = {k: v.clone() for k, v in open_clip_state(bundle).items()}
    state["logit_scale"] = torch.tensor(math.log(120.0))
    torch.save(state, start)
    del open_clip
    from train import finetune

    args = finetune_cmd("tiny_siglip_neg", world_shards, tmp_path, f"model.pretrained={start}",
                        f"train.logit_scale_clamp={clamp}", "train.max_steps=2", "optim.warmup_steps=1",
                        "train.log_every_steps=1")[1:]  # fmt: skip
    assert finetune.cli(args) == 0
    scale = metrics(tmp_path / "tiny_siglip_neg")[0]["logit_scale"]
    assert (scale > 101) == above_100, scale
    assert scale <= 100.0 + 1e-3 or above_100


def open_clip_state(bundle) -> dict:
    return bundle.model.open_clip_state_dict()


# --- 4. CLIP eval as their script scores -------------------------------------------------------------------------


def test_the_released_tie_rule_counts_an_exact_tie_as_wrong():
    assert pick([0.3, 0.3, 0.1], "official") == 0
    assert pick([0.3, 0.3, 0.1], "released") == 1
    assert pick([0.31, 0.3, 0.1], "released") == 0
    assert pick([0.3, 0.1, 0.3], "released") == 2


def test_an_injected_exact_tie_on_real_files(world):
    """One What'sUp A image whose correct and opposite captions get the same score: correct under official, wrong
    under released; every result records its scoring."""
    from eval_doubles import OracleScorer

    class TiedScorer(OracleScorer):
        def text_features(self, texts):
            features = super().text_features(texts)
            for i, text in enumerate(texts):  # "right" captions read as "left": every left image ties
                if " right " in f" {text} ":
                    features[i] = super().text_features([text.replace("right", "left")])[0]
            return features

    scorer = TiedScorer(world)
    official = run_benchmark("whatsup_a", scorer, world / "bench")
    released = run_benchmark("whatsup_a", scorer, world / "bench", scoring="released")
    left = [e for e in official.examples if e["relation"] == "left_of"]
    assert left and all(e["two_way"]["correct"] for e in left)
    assert not any(e["two_way"]["correct"] for e in released.examples if e["relation"] == "left_of")
    assert official.details["scoring"]["mode"] == "official" and released.details["scoring"]["precision"] == "fp16"
    assert "strict" in released.details["tie_rule"]


def test_mmvp_clip_and_the_authors_image_folders(world, tmp_path):
    import shutil

    from eval_doubles import OracleScorer

    class Renamed(OracleScorer):  # knows the images under the authors' folder name too
        def image_features(self, paths):
            return super().image_features([p.replace("MMVP_Images", "MMVP Images") for p in paths])

    scorer = Renamed(world)
    result = run_benchmark("mmvp_clip", scorer, world / "bench")
    assert result.metrics["pairs/mean"] == 100.0 and result.details["images_folder"] == "MMVP/MMVP Images"
    root = tmp_path / "bench"
    shutil.copytree(world / "bench" / "MMVP", root / "MMVP")
    (root / "MMVP" / "MMVP Images").rename(root / "MMVP" / "MMVP_Images")
    vlm = root / "MMVP_VLM"
    vlm.mkdir()
    shutil.copy(world / "bench" / "MMVP_VLM" / "Questions.csv", vlm / "Questions.csv")
    (vlm / "MLLM_VLM_Images").mkdir()
    for folder in (world / "bench" / "MMVP_VLM").iterdir():
        if folder.is_dir():
            shutil.copytree(folder, vlm / "MLLM_VLM_Images" / folder.name)
    assert run_benchmark("mmvp_clip", scorer, root).details["images_folder"] == "MMVP/MMVP_Images"
    moved = run_benchmark("mmvp_vlm", scorer, root)
    assert moved.details["images_folder"] == "MMVP_VLM/MLLM_VLM_Images" and moved.metrics["pairs/mean"] == 100.0


def test_eval_run_records_the_scoring_and_rescores_when_it_changes(world, tmp_path, capsys):
    from eval import run as eval_run

    args = ["--model", "tiny-clip", "--out", str(tmp_path), "--data-root", str(world / "bench"),
            "--benchmarks", "coco_spatial_one", "mmvp_clip", "--limit", "4"]  # fmt: skip
    assert eval_run.main(args) == 0
    assert eval_run.main([*args, "--scoring", "released"]) == 0
    err = capsys.readouterr().err
    assert "recomputing, scoring changed: official -> released" in err
    record = json.loads((tmp_path / "coco_spatial_one.json").read_text())
    assert record["scoring"] == {"mode": "released", "precision": "fp16"}
    assert record["provenance"]["scoring"]["mode"] == "released"
    assert json.loads((tmp_path / "mmvp_clip.json").read_text())["scoring"]["precision"] == "fp32"
    # --limit numbers are marked in the eval's own summary too (title, each row, the CSV's limit column)
    summary = (tmp_path / "summary.md").read_text()
    assert "PARTIAL" in summary.splitlines()[0] and "**PARTIAL (--limit 4)**" in summary
    assert (tmp_path / "summary.csv").read_text().splitlines()[1].split(",")[3] == "4"
