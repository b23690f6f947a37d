"""`python -m eval.run`: a bare tiny-clip end to end, and a run folder's checkpoints (skip, force, cache, W&B)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from eval_doubles import FakeBundle
from safetensors.torch import load_file, save_file

from eval import run as eval_run
from eval import scoring
from eval.benchmarks import BENCHMARKS
from eval.common import sha256_file
from eval.provenance import CannotRescore
from eval.report import read_result, read_scores
from models.config import ModelConfig
from train.checkpoints import save_checkpoint
from train.config import DataConfig, EvalConfig, RecipeConfig, WandbConfig
from train.typed_config import to_yaml


def count_encoded_images(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the size of every image chunk the real scorer encodes."""
    counts: list[int] = []
    encode = scoring.ModelScorer._encode_images

    def counted(self: scoring.ModelScorer, paths: list[str]) -> torch.Tensor:
        counts.append(len(paths))
        return encode(self, paths)

    monkeypatch.setattr(scoring.ModelScorer, "_encode_images", counted)
    return counts


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bare_tiny_clip_end_to_end(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-clip"
    assert eval_run.main(["--model", "tiny-clip", "--out", str(out), "--data-root", str(world / "bench")]) == 0
    for name in BENCHMARKS:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["benchmark"] == name and record["checkpoint"] == "tiny-clip"
        assert record["model"]["config"]["name"] == "tiny-clip" and record["model"]["info"]["name"] == "tiny-clip"
        assert record["label_fixes"]["mode"] == "paper" and record["tie_rule"]
        assert all(f["sha256"] for f in record["files"]) and record["counts"]["rows"] > 0
        lines = (out / f"{name}.scores.jsonl").read_text().splitlines()
        assert len(lines) == record["counts"].get("pairs", record["counts"]["rows"])
        for value in record["metrics"].values():
            assert value == value  # not NaN
    fixes = json.loads((out / "whatsup_a.json").read_text())["label_fixes"]["applied"]
    assert [f["row"] for f in fixes] == ["pillow_left_of_chair", "pillow_right_of_chair"]
    rows = read_csv(out / "summary.csv")
    assert [r["checkpoint"] for r in rows] == ["tiny-clip", "chance"]
    assert rows[1]["whatsup_a/pairs"] == "6.25" and rows[1]["mmvp_vlm/pairs/mean"] == "25.0"
    assert rows[1]["whatsup_a/left_right/image_pair_cosine"] == ""
    markdown = (out / "summary.md").read_text()
    assert "## whatsup_a" in markdown and "| chance | 25.0 | 6.3 | 0.4 |" in markdown


def make_run(root: Path, data_root: Path, model: ModelConfig, bundle: Any, *, wandb: str = "disabled") -> Path:
    """A run folder as train/finetune.py leaves it: config.yaml and two checkpoints of perturbed trainable weights."""
    cfg = RecipeConfig(
        run_name="r",
        model=model,
        data=DataConfig(shards=("unused",)),
        wandb=WandbConfig(mode=wandb),
        eval=EvalConfig(benchmarks=("whatsup_a", "coco_spatial_one"), data_root=str(data_root)),
    )
    run_dir = root / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    trainable = [p for p in bundle.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    for name, step in (("step_5", 5), ("epoch_1", 10)):
        with torch.no_grad():
            for p in trainable:
                p.add_(0.5 * torch.randn(p.shape, generator=generator))
        save_checkpoint(
            run_dir / "checkpoints",
            name,
            model=bundle.model,
            optimizer=optimizer,
            scheduler=scheduler,
            state={"step": step},
            config_yaml=to_yaml(cfg),
        )
    return run_dir


def test_run_checkpoints_of_tiny_clip(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import build_model

    model = ModelConfig(name="tiny-clip")
    run_dir = make_run(tmp_path, world / "bench", model, build_model(model))
    encoded = count_encoded_images(monkeypatch)
    assert eval_run.main(["--run", str(run_dir)]) == 0
    checkpoints = ["step_0", "step_5", "epoch_1"]
    for name in checkpoints:
        assert {p.name for p in (run_dir / "eval" / name).iterdir()} == {
            "whatsup_a.json",
            "whatsup_a.scores.jsonl",
            "coco_spatial_one.json",
            "coco_spatial_one.scores.jsonl",
        }
    # The image tower is locked: images were encoded for the first checkpoint only (48 + 48 images).
    assert sum(encoded) == 96
    rows = read_csv(run_dir / "eval" / "summary.csv")
    assert [(r["checkpoint"], r["step"]) for r in rows] == [
        ("step_0", "0"),
        ("step_5", "5"),
        ("epoch_1", "10"),
        ("chance", ""),
    ]
    cosines = {r["whatsup_a/left_right/image_pair_cosine"] for r in rows[:3]}
    assert len(cosines) == 1  # same image features for every checkpoint
    scores = [(run_dir / "eval" / c / "whatsup_a.scores.jsonl").read_text() for c in checkpoints]
    assert len(set(scores)) == 3  # the text tower's weights were loaded per checkpoint


def fake_build(calls: list[Any]) -> Any:
    def build(model_cfg: ModelConfig) -> FakeBundle:
        calls.append(model_cfg)
        bundle = FakeBundle()
        bundle.model.visual.requires_grad_(False)  # a locked image tower, as the paper's default
        return bundle

    return build


@pytest.fixture
def fake_run(world: Path, tmp_path: Path) -> Path:
    return make_run(tmp_path, world / "bench", ModelConfig(name="tiny-clip"), fake_build([])(ModelConfig()))


def written(run_dir: Path) -> dict[str, int]:
    """Result JSON -> its modification time (ns): unchanged means not rewritten."""
    return {str(p.relative_to(run_dir / "eval")): p.stat().st_mtime_ns for p in run_dir.glob("eval/*/*.json")}


def reseal(checkpoint: Path) -> None:
    """A checkpoint edited by hand: its checksums.json rewritten, as finetune writes it for a new checkpoint."""
    from train.checkpoints import CHECKSUMS, file_checksums

    (checkpoint / CHECKSUMS).write_text(json.dumps(file_checksums(checkpoint)))


def test_run_skips_scored_checkpoints_unless_forced(fake_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    builds: list[Any] = []
    eval_run.score_run(fake_run, build=fake_build(builds))
    first = written(fake_run)
    assert len(builds) == 1 and len(first) == 6
    eval_run.score_run(fake_run, build=fake_build(builds))
    assert len(builds) == 1 and written(fake_run) == first  # nothing to do: no model built, nothing rewritten
    # A new checkpoint is scored alone.
    new = fake_run / "checkpoints" / "step_20"
    new.mkdir()
    for file in (fake_run / "checkpoints" / "epoch_1").iterdir():
        (new / file.name).write_bytes(file.read_bytes())
    (new / "trainer_state.json").write_text(json.dumps({"step": 20}))
    reseal(new)
    rows = eval_run.score_run(fake_run, build=fake_build(builds))
    assert [r.checkpoint for r in rows] == ["step_0", "step_5", "epoch_1", "step_20"]
    second = written(fake_run)
    assert {k for k in second if second[k] != first.get(k)} == {
        "step_20/whatsup_a.json",
        "step_20/coco_spatial_one.json",
    }
    # Another label-fix mode is another result: rescored; the summary still shows every benchmark of the run.
    capsys.readouterr()
    eval_run.score_run(fake_run, benchmarks=["whatsup_a"], label_fixes="none", build=fake_build(builds))
    assert "step_5 whatsup_a: recomputing, label fixes changed: paper -> none" in capsys.readouterr().err
    third = written(fake_run)
    assert {k for k in third if third[k] != second[k]} == {
        f"{c}/whatsup_a.json" for c in ("step_0", "step_5", "epoch_1", "step_20")
    }
    summary = read_csv(fake_run / "eval" / "summary.csv")
    assert {r["label_fixes"] for r in summary[:-1]} == {"none,paper"}
    assert "coco_spatial_one/indiv" in summary[0]
    record = json.loads((fake_run / "eval" / "step_0" / "whatsup_a.json").read_text())
    assert record["label_fixes"] == {"mode": "none", "applied": []}
    # --force rescores everything.
    eval_run.score_run(fake_run, force=True, build=fake_build(builds))
    fourth = written(fake_run)
    assert all(fourth[k] != third[k] for k in third)
    assert "epoch_1 whatsup_a: recomputing (--force)" in capsys.readouterr().err


def test_run_data_root_and_errors(fake_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"What'sUp Subset A captions \(controlled_images_dataset.json\)"):
        eval_run.score_run(fake_run, data_root=tmp_path / "nowhere", build=fake_build([]))
    assert eval_run.main(["--run", str(fake_run), "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "controlled_images_dataset.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_run.main(["--model", "tiny-clip"])  # no --out / --data-root
    with pytest.raises(SystemExit):
        eval_run.main(["--run", str(fake_run), "--benchmarks", "whatsup_c"])
    assert "known: whatsup_a" in capsys.readouterr().err
    assert eval_run.parse_benchmarks(["whatsup_a,mmvp_vlm", "coco_spatial_one"]) == [
        "whatsup_a",
        "mmvp_vlm",
        "coco_spatial_one",
    ]


class FakeWandb(types.ModuleType):
    """Records what eval logs to W&B."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.init_kwargs: dict[str, Any] = {}
        self.logged: list[dict[str, Any]] = []
        self.finished = False
        outer = self

        class Table:
            def __init__(self, columns: list[str], data: list[list[Any]]):
                self.columns, self.data = columns, data

        class Run:
            def define_metric(self, *args: Any, **kwargs: Any) -> None:
                pass

            def log(self, values: dict[str, Any]) -> None:
                outer.logged.append(values)

            def finish(self) -> None:
                outer.finished = True

        self.Table = Table
        self._run = Run()

    def init(self, **kwargs: Any) -> Any:
        self.init_kwargs = kwargs
        return self._run


def test_run_logs_to_wandb_when_enabled(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run_dir = make_run(
        tmp_path, world / "bench", ModelConfig(name="tiny-clip"), fake_build([])(ModelConfig()), wandb="offline"
    )
    eval_run.score_run(run_dir, build=fake_build([]))
    assert fake.init_kwargs["mode"] == "offline" and fake.init_kwargs["name"] == "r-eval" and fake.finished
    steps = [entry["checkpoint_step"] for entry in fake.logged if "checkpoint_step" in entry]
    assert steps == [0, 5, 10]
    assert "eval/whatsup_a/left_right/relaxed_pairs" in fake.logged[0]
    table = fake.logged[-1]["eval/summary"]
    assert [row[0] for row in table.data] == ["step_0", "step_5", "epoch_1"]


def test_image_feature_cache_is_keyed_by_image_tower_weights(world: Path) -> None:
    bundle, cache = FakeBundle(), scoring.ImageFeatureCache()
    paths = [str(p) for p in sorted((world / "bench" / "data" / "controlled_images").glob("*.jpeg"))[:6]]
    first = scoring.ModelScorer(bundle, image_cache=cache).image_features(paths)
    with torch.no_grad():
        bundle.model.token_embedding.weight.add_(1.0)  # a new checkpoint of the text tower only
    again = scoring.ModelScorer(bundle, image_cache=cache).image_features(paths)
    assert (cache.hits, cache.misses) == (1, 1) and again is first
    with torch.no_grad():
        bundle.model.visual.weight.add_(1.0)  # an unlocked image tower changed
    changed = scoring.ModelScorer(bundle, image_cache=cache).image_features(paths)
    assert (cache.hits, cache.misses) == (1, 2) and not torch.equal(first, changed)
    assert torch.allclose(changed.norm(dim=-1), torch.ones(6))


def test_image_feature_reuse_can_be_switched_off_with_the_same_results(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = count_encoded_images(monkeypatch)
    scores = {}
    for reuse in (True, False):
        run_dir = make_run(tmp_path / str(reuse), world / "bench", ModelConfig(name="tiny-clip"), fake_build([])(None))
        encoded.clear()
        eval_run.score_run(run_dir, build=fake_build([]), reuse_image_features=reuse)
        scores[reuse] = {p.relative_to(run_dir): p.read_text() for p in sorted(run_dir.glob("eval/*/*.scores.jsonl"))}
        # 48 whatsup_a + 48 coco_spatial_one images: once with reuse, for each of the 3 checkpoints without.
        assert sum(encoded) == (96 if reuse else 3 * 96)
    assert len(scores[True]) == 6 and scores[True] == scores[False]


# --- provenance: a result is reused only when everything it was computed from matches ---------------------------

CHECKPOINTS = ("step_0", "step_5", "epoch_1")


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {k for k in after if after[k] != before.get(k)}


def test_rerun_recomputes_exactly_what_changed(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(world / "bench", bench)  # the session's world stays intact
    run_dir = make_run(tmp_path, bench, ModelConfig(name="tiny-clip"), fake_build([])(ModelConfig()))
    builds: list[Any] = []
    eval_run.score_run(run_dir, build=fake_build(builds))
    first = written(run_dir)
    record = json.loads((run_dir / "eval" / "step_5" / "coco_spatial_one.json").read_text())
    provenance = record["provenance"]
    weights = run_dir / "checkpoints" / "step_5" / "trainable.safetensors"
    assert provenance["weights"]["checkpoint"]["sha256"] == sha256_file(weights)
    assert provenance["weights"]["model"]["name"] == "tiny-clip"
    assert provenance["data"]["root"] == str(bench.resolve())
    assert provenance["data"]["files"] == record["files"] and record["files"][0]["path"] == "data/coco_qa_one_obj.json"
    assert provenance["data"]["images"]["folder"] == "data/val2017" and provenance["data"]["images"]["count"] > 0
    assert provenance["label_fixes"] == {"mode": "paper", "fixes": []}
    assert provenance["scoring"]["tie_rule"] == record["tie_rule"]
    assert provenance["scorer"] == {"device": "cpu", "chunk_size": 64, "cpu_threads": torch.get_num_threads()}
    fixes = read_result(run_dir / "eval" / "step_0", "whatsup_a")["provenance"]["label_fixes"]
    assert fixes["fixes"] == [["pillow_left_of_chair.jpeg", "pillow_right_of_chair.jpeg"]]
    capsys.readouterr()

    # Nothing changed: nothing is built or rewritten, and the command says so.
    eval_run.score_run(run_dir, build=fake_build(builds))
    err = capsys.readouterr().err
    assert len(builds) == 1 and written(run_dir) == first
    assert "recomputing" not in err and "scoring" not in err
    for checkpoint in CHECKPOINTS:
        assert f"{checkpoint}: kept whatsup_a, coco_spatial_one (weights, data, label fixes" in err
    assert eval_run.pending_results(run_dir) == {}

    # The COCO-spatial file on disk with the correct and wrong captions of its first row swapped: recomputed, and
    # exactly that answer flips, so the accuracy moves by one row (swapping every row could leave 50% at 50%).
    old = {
        c: (
            read_result(run_dir / "eval" / c, "coco_spatial_one"),
            read_scores(run_dir / "eval" / c, "coco_spatial_one"),
        )
        for c in CHECKPOINTS
    }
    qa = bench / "data" / "coco_qa_one_obj.json"
    rows = json.loads(qa.read_text())
    rows[0] = [rows[0][0], rows[0][2], rows[0][1]]
    qa.write_text(json.dumps(rows))
    reason = "recomputing, data files changed: data/coco_qa_one_obj.json sha256"
    assert eval_run.pending_results(run_dir) == {c: {"coco_spatial_one": reason} for c in CHECKPOINTS}
    eval_run.score_run(run_dir, build=fake_build(builds))
    err = capsys.readouterr().err
    second = written(run_dir)
    assert changed(first, second) == {f"{c}/coco_spatial_one.json" for c in CHECKPOINTS}
    for checkpoint in CHECKPOINTS:
        assert (
            f"{checkpoint} coco_spatial_one: recomputing, data files changed: data/coco_qa_one_obj.json sha256" in err
        )
        old_record, old_lines = old[checkpoint]
        new_record = read_result(run_dir / "eval" / checkpoint, "coco_spatial_one")
        new_lines = read_scores(run_dir / "eval" / checkpoint, "coco_spatial_one")
        assert old_lines[0]["scores"][0] != old_lines[0]["scores"][1]  # no tie: the answer flips
        assert new_lines[0]["options"] == old_lines[0]["options"][::-1]
        assert [line["correct"] for line in new_lines] == [not old_lines[0]["correct"]] + [
            line["correct"] for line in old_lines[1:]
        ]
        step = 100 / len(rows) * (1 if new_lines[0]["correct"] else -1)
        assert new_record["metrics"]["indiv"] == pytest.approx(old_record["metrics"]["indiv"] + step, abs=1e-9)
        assert new_record["files"][0]["sha256"] == sha256_file(qa) != old_record["files"][0]["sha256"]

    # One checkpoint's weights changed on disk: that checkpoint alone is recomputed.
    with torch.no_grad():
        save_file({k: v + 0.25 for k, v in load_file(str(weights)).items()}, str(weights))
        reseal(weights.parent)  # a checkpoint written anew, not one damaged in place
    old_scores = (run_dir / "eval" / "step_5" / "whatsup_a.scores.jsonl").read_text()
    eval_run.score_run(run_dir, build=fake_build(builds))
    err = capsys.readouterr().err
    third = written(run_dir)
    assert changed(second, third) == {"step_5/whatsup_a.json", "step_5/coco_spatial_one.json"}
    assert "step_5 whatsup_a: recomputing, checkpoint weights changed: trainable.safetensors sha256" in err
    assert (run_dir / "eval" / "step_5" / "whatsup_a.scores.jsonl").read_text() != old_scores

    # An image of What'sUp A touched (new modification time): What'sUp A is recomputed everywhere.
    image = next((bench / "data" / "controlled_images").glob("*.jpeg"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    eval_run.score_run(run_dir, build=fake_build(builds))
    err = capsys.readouterr().err
    fourth = written(run_dir)
    assert changed(third, fourth) == {f"{c}/whatsup_a.json" for c in CHECKPOINTS}
    assert (
        "step_0 whatsup_a: recomputing, images changed: paths, sizes or modification times of the 48 images in data/controlled_images"
        in err
    )

    # Scorer settings that can change the last bits, and the data root, are part of what must match.
    eval_run.score_run(run_dir, build=fake_build(builds), chunk_size=16)
    err = capsys.readouterr().err
    assert changed(fourth, written(run_dir)) == set(fourth)
    assert "epoch_1 coco_spatial_one: recomputing, scorer settings changed: chunk_size 64 -> 16" in err
    moved = tmp_path / "moved"
    shutil.copytree(bench, moved)
    eval_run.score_run(run_dir, data_root=moved, build=fake_build(builds), chunk_size=16)
    err = capsys.readouterr().err
    assert f"step_0 whatsup_a: recomputing, data root changed: {bench.resolve()} -> {moved.resolve()}" in err

    # A result written before provenance existed is recomputed, never trusted.
    path = run_dir / "eval" / "step_0" / "whatsup_a.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}))
    eval_run.score_run(run_dir, data_root=moved, build=fake_build(builds), chunk_size=16)
    err = capsys.readouterr().err
    assert "step_0 whatsup_a: recomputing, no provenance recorded (a result of an earlier eval.run)" in err
    assert "step_0: kept coco_spatial_one" in err and "epoch_1: kept whatsup_a, coco_spatial_one" in err
    # So is one whose metrics were lost (what launch's status counts as missing).
    path.write_text(json.dumps({**json.loads(path.read_text()), "metrics": {}}))
    eval_run.score_run(run_dir, data_root=moved, build=fake_build(builds), chunk_size=16)
    assert "step_0 whatsup_a: recomputing, the result holds no metrics" in capsys.readouterr().err
    assert read_result(run_dir / "eval" / "step_0", "whatsup_a")["metrics"]
    rows = read_csv(run_dir / "eval" / "summary.csv")
    assert [r["checkpoint"] for r in rows] == [*CHECKPOINTS, "chance"] and rows[0]["coco_spatial_one/indiv"]


def test_swapped_whatsup_captions_are_refused_not_kept(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What'sUp's option 0 must be the file name's relation: a swapped file stops the rerun, it is not reused."""
    bench = tmp_path / "bench"
    shutil.copytree(world / "bench", bench)
    run_dir = make_run(tmp_path, bench, ModelConfig(name="tiny-clip"), fake_build([])(ModelConfig()))
    eval_run.score_run(run_dir, build=fake_build([]))
    first = written(run_dir)
    captions = bench / "data" / "controlled_images_dataset.json"
    rows = json.loads(captions.read_text())
    rows[3]["caption_options"][:2] = rows[3]["caption_options"][1::-1]
    captions.write_text(json.dumps(rows))
    capsys.readouterr()
    assert eval_run.main(["--run", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"eval.run: {captions} row 3 (" in err and "option 0" in err and "Traceback" not in err
    assert written(run_dir) == first


def test_deleted_weights_stop_with_a_clear_message(fake_run: Path, capsys: pytest.CaptureFixture) -> None:
    builds: list[Any] = []
    eval_run.score_run(fake_run, build=fake_build(builds))
    first = written(fake_run)
    weights = fake_run / "checkpoints" / "step_5" / "trainable.safetensors"
    weights.unlink()
    capsys.readouterr()
    assert eval_run.main(["--run", str(fake_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eval.run: step_5: its weights file {weights} is missing") and err.count("\n") == 1
    assert "whatsup_a.json, coco_spatial_one.json" in err and "can be neither checked nor recomputed" in err
    assert "Traceback" not in err and written(fake_run) == first
    # The whole checkpoint deleted: its results cannot be checked either.
    shutil.rmtree(fake_run / "checkpoints" / "step_5")
    assert eval_run.main(["--run", str(fake_run)]) == 2
    err = capsys.readouterr().err
    assert f"{fake_run / 'eval' / 'step_5'} hold results of checkpoints that no longer exist" in err
    # Dropping those results lets the others be checked (and kept).
    shutil.rmtree(fake_run / "eval" / "step_5")
    rows = eval_run.score_run(fake_run, build=fake_build(builds))
    assert [r.checkpoint for r in rows] == ["step_0", "epoch_1"] and len(builds) == 1
    # A checkpoint without weights and without results cannot be scored: said, not crashed.
    empty = fake_run / "checkpoints" / "step_30"
    empty.mkdir()
    (empty / "trainer_state.json").write_text(json.dumps({"step": 30}))
    with pytest.raises(CannotRescore, match=r"step_30: cannot score it, its weights file .*step_30/trainable"):
        eval_run.score_run(fake_run, build=fake_build(builds))


def test_bare_model_rescored_when_its_weights_file_changes(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights, out, builds = tmp_path / "weights.bin", tmp_path / "out", []
    weights.write_bytes(b"first weights")
    kwargs = {"data_root": world / "bench", "pretrained": str(weights), "benchmarks": ["coco_spatial_one"]}
    eval_run.score_model("tiny-clip", out, build=fake_build(builds), **kwargs)
    files = read_result(out, "coco_spatial_one")["provenance"]["weights"]["files"]
    assert "built:tiny_preset" in files  # the tiny folder's weights, under the file loaded over them
    files = {k: v for k, v in files.items() if not k.startswith("built:")}
    assert files == {
        "pretrained": {
            "path": str(weights.resolve()),
            "kind": "file",
            "bytes": len(b"first weights"),
            "sha256": sha256_file(weights),
        }
    }
    eval_run.score_model("tiny-clip", out, build=fake_build(builds), **kwargs)
    assert len(builds) == 1 and "tiny-clip: kept coco_spatial_one" in capsys.readouterr().err
    weights.write_bytes(b"other weights")
    eval_run.score_model("tiny-clip", out, build=fake_build(builds), **kwargs)
    err = capsys.readouterr().err
    assert len(builds) == 2
    assert f"tiny-clip coco_spatial_one: recomputing, weights changed: pretrained {weights.resolve()} sha256" in err
    weights.unlink()
    with pytest.raises(CannotRescore, match=r"was computed from .*weights.bin \(pretrained\), which no longer exists"):
        eval_run.score_model("tiny-clip", out, build=fake_build(builds), **kwargs)
