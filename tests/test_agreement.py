"""eval.agreement: image-pair cosines for CLIP-like and DINOv2 encoders, and CLIP-blind pairs mined into a benchmark
in MMVP-VLM's layout that eval scores."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from eval import agreement
from eval.benchmarks import run_benchmark
from eval.scoring import ModelScorer
from models import ModelConfig, build_model
from models.dinov2 import load_dinov2


def test_encoder_specs():
    assert agreement.parse_encoder("ViT-B-32=openai") == agreement.EncoderSpec(
        "ViT-B-32=openai", "clip", "ViT-B-32", "openai"
    )
    assert agreement.parse_encoder("dinov2:facebook/dinov2-large").kind == "dinov2"
    spec = agreement.parse_encoder("run:runs/x@epoch_2")
    assert (spec.kind, spec.name, spec.checkpoint) == ("run", "runs/x", "epoch_2")


def test_the_tiny_dinov2_loads_through_transformers_and_embeds_its_cls_token(world):
    encoder = load_dinov2("tiny-dinov2")
    image = next((world / "bench" / "data" / "controlled_images").iterdir())
    from PIL import Image

    with Image.open(image) as opened:
        features = encoder.embed([opened.convert("RGB")])
        pixels = encoder.processor(images=[opened.convert("RGB")], return_tensors="pt")["pixel_values"]
    assert features.shape == (1, 64) and pixels.shape == (1, 3, 64, 64)
    hidden = encoder.model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(features, hidden[:, 0])  # DINOv2's pooler output: the normed CLS token
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        load_dinov2("facebook/dinov2-large")


def test_pair_cosines_are_eval_runs_image_pair_cosines(world, tmp_path):
    """For a CLIP model, the agreement table's What'sUp column is what eval.run reports as image_pair_cosine."""
    image_set = agreement.benchmark_images(world / "bench", ["whatsup_a"])
    summary = agreement.run_agreement(image_set, [agreement.parse_encoder("tiny-clip")], tmp_path)
    result = run_benchmark("whatsup_a", ModelScorer(build_model(ModelConfig(name="tiny-clip"))), world / "bench")
    for axis in ("left_right", "on_under"):
        ours = summary["mean_pair_cosine"][f"whatsup_a/{axis}"]["tiny-clip"]
        assert ours == pytest.approx(result.metrics[f"{axis}/image_pair_cosine"], abs=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "pairs.csv")))
    assert len(rows) == result.details["counts"]["object_pairs"] * 2


def test_mined_pairs_have_the_similarity_they_were_selected_for_and_score_as_mmvp_vlm(world, tmp_path):
    image_set = agreement.benchmark_images(world / "bench", ["whatsup_a", "whatsup_b", "coco_spatial_one"])
    blind, seeing = "tiny-clip", "dinov2:tiny-dinov2"
    # Thresholds from the encoders' own spread: above the median under one, below it under the other (two random
    # stand-ins rank pairs much alike, so tighter quantiles leave no pair; real CLIP and DINOv2 use 0.95 and 0.6).
    embed = {label: agreement.load_encoder(agreement.parse_encoder(label), torch.device("cpu"))(image_set.images)
             for label in (blind, seeing)}  # fmt: skip
    upper = torch.triu(torch.ones(len(image_set.images), len(image_set.images), dtype=torch.bool), 1)
    high = float(torch.quantile((embed[blind] @ embed[blind].T)[upper], 0.5))
    low = float(torch.quantile((embed[seeing] @ embed[seeing].T)[upper], 0.5))
    out = tmp_path / "agreement"
    code = agreement.main(["--encoders", blind, seeing, "--data-root", str(world / "bench"), "--benchmarks",
                           "whatsup_a", "whatsup_b", "coco_spatial_one", "--out", str(out), "--mine", blind, seeing,
                           "--high", str(high), "--low", str(low), "--max-pairs", "6"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "agreement.json").read_text())
    assert summary["mined"]["pairs"] == 6
    mined = list(csv.DictReader(open(out / "mined" / "pairs.csv")))
    images = [p for row in mined for p in (row["first"], row["second"])]
    assert len(set(images)) == 12  # disjoint pairs
    # Recomputed from scratch, image by image, through the encoders' own code paths.
    clip = build_model(ModelConfig(name="tiny-clip"))
    dinov2 = load_dinov2("tiny-dinov2")
    from PIL import Image

    for row in mined:
        pair = [Image.open(row[k]).convert("RGB") for k in ("first", "second")]
        with torch.no_grad():
            a = F.normalize(clip.model.encode_image(torch.stack([clip.preprocess_eval(i) for i in pair])), dim=-1)
        b = F.normalize(dinov2.embed(pair), dim=-1)
        assert float(a[0] @ a[1]) >= high - 1e-5 and float(b[0] @ b[1]) <= low + 1e-5
        assert float(row[f"cosine {blind}"]) == pytest.approx(float(a[0] @ a[1]), abs=1e-5)
    # The mined benchmark reads and scores as MMVP-VLM: 6 pairs, the images' own captions as statements.
    questions = list(csv.DictReader(open(out / "mined" / "MMVP_VLM" / "Questions.csv")))
    assert [int(q["Question ID"]) for q in questions] == list(range(1, 13))
    assert questions[0]["Statement"] == image_set.captions[mined[0]["first"]]
    result = run_benchmark("mmvp_vlm", ModelScorer(clip), out / "mined")
    assert result.details["counts"]["pairs"] == 6
    assert (out / "mined" / "MMVP_VLM" / "MMVP_VLM_Images" / "CLIP-blind" / "1.jpg").read_bytes() == open(
        mined[0]["first"], "rb").read()  # fmt: skip


def test_a_folder_without_captions_mines_pairs_but_writes_no_benchmark(world, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((world / "bench" / "data" / "controlled_clevr").iterdir())[:8]:
        (folder / path.name).write_bytes(path.read_bytes())
    summary = agreement.run_agreement(agreement.folder_images(folder), [agreement.parse_encoder("tiny-clip"),
                                      agreement.parse_encoder("dinov2:tiny-dinov2")], tmp_path / "out",
                                      mine=("tiny-clip", "dinov2:tiny-dinov2"), high=-1.0, low=1.0)  # fmt: skip
    assert summary["mined"]["pairs"] == 4 and summary["mined"]["benchmark"] is None
    assert summary["pairs"] == {"all": 28}  # no pairs file: every pair of the 8 images
    assert "no caption" in summary["mined"]["why_no_benchmark"]
    assert not (tmp_path / "out" / "mined" / "MMVP_VLM").exists()


def test_a_pairs_file_names_a_folders_pairs_and_a_wrong_line_is_reported(world, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = [p.name for p in sorted((world / "bench" / "data" / "controlled_clevr").iterdir())[:4]]
    for name in names:
        (folder / name).write_bytes((world / "bench" / "data" / "controlled_clevr" / name).read_bytes())
    (tmp_path / "mine.csv").write_text(f"first,second\n{names[0]},{names[1]}\n{names[2]},{names[3]}\n")
    image_set = agreement.folder_images(folder, tmp_path / "mine.csv")
    assert [(p.set, p.first, p.second) for p in image_set.pairs] == [
        ("mine", str(folder / names[0]), str(folder / names[1])), ("mine", str(folder / names[2]), str(folder / names[3]))]  # fmt: skip
    (tmp_path / "bad.csv").write_text(f"first,second\n{names[0]},nope.jpeg\n")
    with pytest.raises(ValueError, match="bad.csv line 2: no image .*nope.jpeg"):
        agreement.folder_images(folder, tmp_path / "bad.csv")
