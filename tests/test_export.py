"""models.export on runs made by the real trainer: open_clip itself loads the export and computes our features."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_finetune import finetune_cmd, run

TEXTS = ["a ball to the left of a box", "a ball to the right of a box", "a red cube under a chair"]
BENCHMARKS = ["whatsup_a", "coco_spatial_one"]

pytestmark = pytest.mark.usefixtures("offline_hub")


def train_two_steps(recipe: str, shards: Path, out: Path) -> Path:
    run(finetune_cmd(recipe, shards, out, "train.max_steps=2", "optim.warmup_steps=1"))
    return out / recipe


@pytest.fixture(scope="module")
def clip_run(world_shards, tmp_path_factory) -> Path:
    return train_two_steps("tiny_clip_neg", world_shards, tmp_path_factory.mktemp("export_runs"))


def images() -> list[Image.Image]:
    return [Image.new("RGB", (80 + 10 * i, 64), (40 * i, 200 - 50 * i, 90)) for i in range(3)]


def open_clip_bundle(model, preprocess, tokenizer):
    """An eval-scorable bundle around a model open_clip built (its own modules, its own tokenizer)."""
    from models import ContrastiveModel, ModelBundle
    from models.native_text import NativeTokenizer, native_text_tower

    wrapped = ContrastiveModel(model.visual, native_text_tower(model), model.logit_scale, model.logit_bias).eval()
    return ModelBundle(wrapped, preprocess, preprocess, NativeTokenizer(tokenizer), {})


def scores(bundle, data_root: Path) -> dict[str, dict]:
    from eval.benchmarks import get_benchmark
    from eval.scoring import ModelScorer

    scorer = ModelScorer(bundle)
    return {name: get_benchmark(name)(scorer, data_root, label_fixes="paper").metrics for name in BENCHMARKS}


def test_native_run_exports_a_complete_open_clip_state_dict(clip_run, tmp_path, world):
    import open_clip

    from models import ModelConfig, build_model
    from models.export import load_run_model

    out = tmp_path / "export" / "tiny_clip_neg.safetensors"
    result = run(["-m", "models.export", str(clip_run), "--out", str(out)])
    assert "exported step_2 (step 2)" in result.stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_mode & 0o777 == out.with_suffix(".json").stat().st_mode & 0o777  # the umask's, not 0600
    assert record["kind"] == "open_clip" and record["checkpoint"] == "step_2" and record["step"] == 2
    # Self-contained: the architecture travels next to the weights; nothing points into the exporter's cache.
    from models.cache import resolve_cache_dir

    assert str(resolve_cache_dir()) not in out.with_suffix(".json").read_text()
    moved = tmp_path / "elsewhere"
    shutil.copytree(out.parent, moved)  # another machine: only the export's folder

    # open_clip alone, as the record's `load` line says: the architecture registered, then its own file loading.
    open_clip.add_model_config(moved / record["open_clip_config"])
    model, _, preprocess = open_clip.create_model_and_transforms(
        record["open_clip_model"], pretrained=str(moved / out.name), **record["open_clip_kwargs"]
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(record["open_clip_model"])

    ours, _, where = load_run_model(clip_run)  # as eval loads the run's latest checkpoint
    assert where["checkpoint"] == "step_2"
    expected = ours.model.open_clip_state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys() == load_file(str(out)).keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    start = build_model(ModelConfig(name="tiny-clip")).model.open_clip_state_dict()
    trained = [k for k in got if not torch.equal(got[k], start[k])]
    assert "logit_scale" in trained and any(k.startswith("transformer.") for k in trained)  # the text tower trained
    assert not any(k.startswith("visual.") for k in trained)  # locked: the frozen tower is in the file all the same

    with torch.no_grad():
        pixels = torch.stack([preprocess(image) for image in images()])
        assert torch.equal(pixels, torch.stack([ours.preprocess_eval(image) for image in images()]))
        image_features = ours.model.encode_image(pixels, normalize=False)
        text_features = ours.model.encode_text(ours.tokenizer(TEXTS), normalize=False)
        torch.testing.assert_close(model.encode_image(pixels), image_features, rtol=0, atol=0)
        torch.testing.assert_close(model.encode_text(tokenizer(TEXTS)), text_features, rtol=0, atol=0)
    # The generated world's benchmarks score the same through open_clip's model as through ours.
    assert scores(open_clip_bundle(model, preprocess, tokenizer), world / "bench") == scores(ours, world / "bench")


def test_export_of_the_starting_weights_and_a_named_checkpoint(clip_run, tmp_path, capsys):
    from models import ModelConfig, build_model
    from models.export import main

    out = tmp_path / "start.bin"
    assert main([str(clip_run), "--checkpoint", "step_0", "--out", str(out)]) == 0
    assert "exported step_0 (step 0)" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    start = build_model(ModelConfig(name="tiny-clip")).model.open_clip_state_dict()
    assert state.keys() == start.keys() and all(torch.equal(state[k], start[k]) for k in state)
    assert main([str(clip_run), "--checkpoint", "step_2", "--out", str(tmp_path / "s2.pt")]) == 0
    assert "exported step_2 (step 2)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "no run folder at"),
        (["{run}", "--checkpoint", "epoch_9"], "has no finished checkpoint 'epoch_9'"),
        (["{empty}"], "is not a run folder: it has no config.yaml"),
    ],
)
def test_missing_run_or_checkpoint_is_one_clear_paragraph(clip_run, tmp_path, capsys, args, message):
    from models.export import main

    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "run": clip_run, "empty": tmp_path / "empty"}
    argv = [a.format(**paths) for a in args]
    assert main([*argv, "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("models.export: ") and message in err and len(err.strip().splitlines()) == 1
    if "epoch_9" in message:
        assert "finished checkpoints: step_2" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_llm2vec_run_exports_connector_image_tower_and_the_llm_it_needs(world_shards, tmp_path):
    from models.export import export_run, load_run_model

    run_dir = train_two_steps("tiny_clip_llm2vec_neg", world_shards, tmp_path / "runs")
    out = tmp_path / "llm2vec.safetensors"
    record = export_run(run_dir, out)
    state = load_file(str(out))
    ours, _, _ = load_run_model(run_dir)
    connector = ours.model.text_tower.connector.state_dict()
    assert {k for k in state if k.startswith("connector.")} == {f"connector.{k}" for k in connector}
    assert all(torch.equal(state[f"connector.{k}"], v) for k, v in connector.items())
    visual = ours.model.image_tower.state_dict()
    assert all(torch.equal(state[f"visual.{k}"], v) for k, v in visual.items())
    assert torch.equal(state["logit_scale"], ours.model.logit_scale.detach())
    assert len(state) == len(connector) + len(visual) + 1  # no LLM weights: the JSON names the LLM instead
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    assert saved["kind"] == "llm2vec_connector" and saved["llm2vec"]["base_model"] == "tiny-llm2vec"
    assert saved["llm2vec"]["doc_max_length"] == ours.info["llm2vec"]["doc_max_length"]
    assert saved["connector"] == {"layout": saved["connector"]["layout"], "in": 64, "hidden": 128, "out": 64}
