"""The MLLM side as the paper and the authors' release ran it (issue 19): padding, VQAScore, names, parsing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval import llava
from eval.llava_protocols import VQASCORE_SYSTEM
from models.tiny_llava import build_tiny_llava

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "llava")


def edge_objects_image(path: Path) -> Path:
    """A 640x480 scene with a red block at x 10-70 and a blue one at x 570-630: where Left/Right objects sit."""
    image = Image.new("RGB", (640, 480), (128, 128, 128))
    image.paste((230, 20, 20), (10, 200, 70, 280))
    image.paste((20, 20, 230), (570, 200, 630, 280))
    image.save(path)
    return path


def colours_seen(pixels: torch.Tensor, processor) -> tuple[bool, bool]:
    """Whether a red and a blue block survive in the processor's output (un-normalised back to 0-1)."""
    mean = torch.tensor(processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_std)[:, None, None]
    rgb = pixels[0] * std + mean
    red = (rgb[0] > 0.6) & (rgb[1] < 0.3) & (rgb[2] < 0.3)
    blue = (rgb[2] > 0.6) & (rgb[0] < 0.3) & (rgb[1] < 0.3)
    return bool(red.any()), bool(blue.any())


def test_pad_keeps_both_edge_objects_and_crop_cuts_them(tiny_llava, tmp_path):
    image = edge_objects_image(tmp_path / "edges.jpg")
    padded = llava.LlavaRunner(tiny_llava, device="cpu")  # the default: LLaVA-1.5's pad
    cropped = llava.LlavaRunner(tiny_llava, device="cpu", image_aspect_ratio="crop")
    assert padded.image_aspect_ratio == "pad"
    assert colours_seen(padded.pixel_values([image]), padded.image_processor) == (True, True)
    assert colours_seen(cropped.pixel_values([image]), cropped.image_processor) == (False, False)
    # pad = the image squared in the processor's mean colour, then the processor as it is
    with Image.open(image) as im:
        square = llava.expand_to_square(im.convert("RGB"), llava.mean_colour(padded.image_processor))
    assert square.size == (640, 640) and square.getpixel((0, 0)) == llava.mean_colour(padded.image_processor)
    expected = padded.image_processor([square], return_tensors="pt")["pixel_values"]
    assert torch.equal(padded.pixel_values([image]), expected)


def test_the_aspect_ratio_is_recorded_and_a_change_rescores(tiny_llava, world, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", str(tiny_llava), "--data-root", str(world / "bench"), "--out", str(out),
            "--benchmarks", "coco_spatial_one", "--protocol", "choice", "--limit", "4", "--no-progress"]  # fmt: skip
    assert llava.main(args) == 0
    first = (out / "coco_spatial_one.scores.jsonl").read_text()
    assert llava.main([*args, "--image-aspect-ratio", "crop"]) == 0
    record = llava.read_result(out, "coco_spatial_one")
    assert record["llava_settings"]["image_aspect_ratio"] == "crop"
    assert (out / "coco_spatial_one.scores.jsonl").read_text() != first  # rescored, other pixels


# ---------------------------------------------------------------- parsing and decoding details


WHATSUP_FOUR = (("left",), ("right",), ("on",), ("under",))


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The cup is on the left of the box.", 0),  # a side, not "on" + "left"
        ("It is on its right.", 1),
        ("The cup is on top of the box.", 2),  # "on top of" still reads as on
        ("The cup is on the box.", 2),
        ("The cup is under the box, on the left.", None),  # two relations: unparseable, never guessed
    ],
)
def test_four_way_whatsup_answers_read_a_side_as_a_side(output, expected):
    from eval.llava_protocols import match_keywords

    assert match_keywords(output, WHATSUP_FOUR) == expected


def test_m3id_first_step_is_an_option_recorded_in_the_result(tiny_llava, world, tmp_path):
    """t = 0 gives the first token weight 0 (no correction there, so it is greedy decoding's); t = 1 (default)
    corrects it; each result records the choice."""
    from eval.llava_protocols import m3id_weight

    assert m3id_weight(0) == 0.0 and m3id_weight(1) > 0.0
    runner = llava.LlavaRunner(tiny_llava, device="cpu")
    item = llava.benchmark_items("gqa_spatial_one", world / "bench", limit=1)[0][0]
    prompt = item.prompt("m3id")
    # t = 0: the first token is plain greedy decoding's, whatever alpha and lambda
    first_token = runner.generate(
        [prompt], [item.image], max_new_tokens=1, m3id={"alpha": 1.0, "lam": 5.0, "first_step": 0}
    )
    assert first_token == runner.generate([prompt], [item.image], max_new_tokens=1)
    out = tmp_path / "out"
    results = llava.run(tiny_llava, world / "bench", out, benchmarks=["gqa_spatial_one"], protocol="m3id", limit=2,
                        progress=False, runner=runner, m3id_first_step=0)  # fmt: skip
    assert results["gqa_spatial_one"]["llava_settings"]["m3id_first_step"] == 0


# ---------------------------------------------------------------- VQAScore


def test_vqascore_scores_clips_captions_and_decides_as_clip(tiny_llava, world, tmp_path):
    """Every caption CLIP compares gets P(yes) in LLaVA-1.5's conversation with its system message; the benchmark
    decides on those scores with a strict '>', and the result has CLIP eval's metric names."""
    import math

    from eval_doubles import OracleScorer

    from eval.benchmarks import run_benchmark
    from eval.common import pick

    runner = llava.LlavaRunner(tiny_llava, device="cpu")
    out = tmp_path / "vq"
    results = llava.run(tiny_llava, world / "bench", out, benchmarks=["whatsup_a", "mmvp_clip"], protocol="vqascore",
                        limit=4, progress=False, runner=runner)  # fmt: skip
    clip = run_benchmark("whatsup_a", OracleScorer(world), world / "bench", limit=4)
    record = results["whatsup_a"]
    assert set(record["metrics"]) == {k for k in clip.metrics if not k.endswith("cosine")}
    assert record["protocol"] == "vqascore" and record["tie_rule"].startswith("strict '>'")
    lines = [json.loads(line) for line in (out / "whatsup_a.scores.jsonl").read_text().splitlines()]
    assert [line["options"] for line in lines] == [e["options"] for e in clip.examples]  # the same captions
    first = lines[0]
    prompt = (
        f'{VQASCORE_SYSTEM} USER: <image>\nDoes this figure show "{first["options"][0]}"? Please answer yes or no. '
        "ASSISTANT:"
    )
    ids, n = runner.continuation_ids(prompt, "Yes", eos=False)
    logprobs = runner.option_logprobs([(ids, n)], [world / "bench" / first["image"]])[0]
    assert first["scores"][0] == pytest.approx(math.exp(sum(logprobs) / n), rel=1e-5)
    assert all(line["prediction"] == pick(line["scores"], "strict") for line in lines)
    assert "mmvp_clip" in results and "pairs/mean" in results["mmvp_clip"]["metrics"]
    with pytest.raises(ValueError, match="vqascore scores the captions of CLIP-format benchmarks"):
        llava.benchmark_items("mmvp", world / "bench", protocol="vqascore")


def test_mmvp_vlm_for_mllms_reads_the_authors_questions_when_present(tiny_llava, world, tmp_path):
    """MMVP_VLM/Questions-llava.csv (header `lndex`, as published) replaces our conversion, matched by id."""
    import csv
    import shutil

    root = tmp_path / "bench"
    shutil.copytree(world / "bench" / "MMVP_VLM", root / "MMVP_VLM")
    ours, details = llava.benchmark_items("mmvp_vlm", root, limit=2)
    assert details["questions"].startswith("ours")
    with open(root / "MMVP_VLM" / "Questions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["lndex,Question,Options,Correct Answer"]
    for row in rows:  # an odd id's image shows option (a), an even id's option (b)
        first = int(row["Question ID"]) % 2 == 1
        lines.append(f"{row['Question ID']},Is it this one?,(a) Yes (b) No,{'(a)' if first else '(b)'}")
    (root / "MMVP_VLM" / "Questions-llava.csv").write_text("\n".join(lines))
    items, details = llava.benchmark_items("mmvp_vlm", root, limit=2)
    assert details["questions"].startswith("the authors'") and len(details["files"]) == 2
    assert [i.id for i in items] == [i.id for i in ours] and [i.image for i in items] == [i.image for i in ours]
    assert {i.stem for i in items} == {"Is it this one?"} and [i.answer for i in items] == [0, 1, 0, 1]
    assert items[0].options == ("Yes", "No")
    (root / "MMVP_VLM" / "Questions-llava.csv").write_text("lndex,Question,Options,Correct Answer\n1,Q?,(a) X,(a)\n")
    with pytest.raises(ValueError, match=r"Questions-llava.csv line 2: options '\(a\) X'"):
        llava.benchmark_items("mmvp_vlm", root, limit=2)


def test_paper_tables_take_each_cell_from_the_right_protocol(tiny_llava, world, tmp_path):
    from eval_doubles import OracleScorer

    from eval.benchmarks import run_benchmark
    from eval.report import write_result

    runner = llava.LlavaRunner(tiny_llava, device="cpu")
    clip = tmp_path / "clip"
    for name in ("whatsup_a", "mmvp_clip"):
        write_result(run_benchmark(name, OracleScorer(world), world / "bench", limit=2), clip)
    generative = tmp_path / "gen"
    llava.run(tiny_llava, world / "bench", generative, benchmarks=["mmvp"], protocol="generative", limit=2,
              progress=False, runner=runner)  # fmt: skip
    out = tmp_path / "tables"
    assert llava.main(["table", f"clip={clip}", f"llava-gen={generative}", "--out", str(out)]) == 0
    tables = (out / "paper_tables.md").read_text()
    table7 = tables[tables.index("## Table 7") :]
    assert "| clip | 100.0 | 100.0 |" in table7  # CLIP's MMVP cells come from mmvp_clip
    assert "| llava-gen | " in table7 and "| llava-gen | – | – |" not in table7  # original from the generative result
    assert "llava-gen / relaxed: a generative result; this column takes relaxed results" in table7
    table1 = tables[: tables.index("## Table 2")]
    assert "| avg. image-pair cosine (clip) |" in table1
    assert "## Table 6" in tables and "| llava-gen | " in tables[tables.index("## Table 6") :]


# ---------------------------------------------------------------- model names as users give them


def hub_cache_copy(folder: Path, hub: Path, repo: str) -> Path:
    """`folder` laid out as huggingface_hub caches `repo` (refs/main -> snapshots/<commit>/), the real layout."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    base = hub / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    shutil.copytree(folder, base / "snapshots" / commit)
    return base / "snapshots" / commit


def test_a_hub_name_resolves_from_the_local_cache_offline(tiny_llava, world, tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    snapshot = hub_cache_copy(tiny_llava, hub, "llava-hf/llava-1.5-7b-hf")
    assert llava.resolve_model("llava-hf/llava-1.5-7b-hf") == snapshot
    out = tmp_path / "out"
    args = ["--model", "llava-hf/llava-1.5-7b-hf", "--data-root", str(world / "bench"), "--out", str(out),
            "--benchmarks", "coco_spatial_one", "--protocol", "choice", "--limit", "2", "--no-progress"]  # fmt: skip
    assert llava.main(args) == 0
    assert llava.read_result(out, "coco_spatial_one")["llava_settings"]["model"]["path"] == str(snapshot.resolve())


def test_a_missing_name_or_a_broken_folder_fails_in_one_paragraph_before_writing(
    tiny_llava, world, tmp_path, monkeypatch, capsys
):
    import shutil

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    out = tmp_path / "out"
    common = ["--data-root", str(world / "bench"), "--out", str(out), "--no-progress"]
    assert llava.main(["--model", "llava-hf/llava-1.5-7b-hf", *common]) == 2
    err = capsys.readouterr().err
    assert "huggingface-cli download llava-hf/llava-1.5-7b-hf" in err and "Traceback" not in err
    assert err.count("\n") == 1 and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert llava.main(["--model", str(empty), *common]) == 2
    err = capsys.readouterr().err
    assert "no config file (config.json)" in err and "no weights" in err and not out.exists()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llava, broken)
    next(broken.glob("*.safetensors")).write_bytes(b"")
    assert llava.main(["--model", str(broken), *common]) == 2
    assert "is empty" in capsys.readouterr().err and not out.exists()


def test_eval_llava_logs_to_wandb_offline_when_asked(tiny_llava, world, tmp_path):
    out = tmp_path / "out"
    args = ["--model", str(tiny_llava), "--data-root", str(world / "bench"), "--out", str(out), "--no-progress",
            "--benchmarks", "coco_spatial_one", "--protocol", "choice", "--limit", "2", "--wandb-mode", "offline"]  # fmt: skip
    # as a user runs it: its own process, so W&B's service has written the offline log when the process has ended
    # (in a test worker that already ran W&B, the file may still be buffered when main() returns)
    done = subprocess.run([sys.executable, "-m", "eval.llava", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = list((out / "wandb").glob("offline-run-*"))
    [log] = list(run.glob("*.wandb"))
    record = log.read_bytes()  # the offline run's log: config and metrics, for `wandb sync`
    assert b"image_aspect_ratio" in record and b"eval/coco_spatial_one/indiv" in record
