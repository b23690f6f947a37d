"""build_shards on the generated world: counts add up, shards read back, workers and crashes change nothing."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from data_prep import build_shards, inspect_shards
from data_prep.llava_items import SKIP_REASONS, clean_caption
from data_prep.negatives import swap_left_right

ROOT = Path(__file__).resolve().parents[1]


def shard_args(world: Path, out: Path, *extra: str) -> list[str]:
    llava = world / "llava"
    return [
        "--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json"),
        "--image-root", str(llava / "images"),
        "--dataset", "mix665k", "--json", str(llava / "llava_v1_5_mix665k.json"), "--image-root", str(llava),
        "--out", str(out), *extra,
    ]  # fmt: skip


def convert(world: Path, out: Path, *extra: str) -> dict:
    assert build_shards.main(shard_args(world, out, *extra)) == 0
    return json.loads((out / "manifest.json").read_text())


def output_digests(out: Path) -> dict[str, str]:
    names = [p.name for p in sorted(out.glob("*.tar"))] + ["sizes.json", "skipped.jsonl"]
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


def read_back(out: Path) -> list[dict]:
    samples = []
    for shard in sorted(out.glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            samples.append({"shard": shard.name, "key": s["__key__"], "meta": json.loads(s["json"]), **s})
    return samples


def source_items(world: Path) -> dict[str, list]:
    llava = world / "llava"
    return {
        "lcs558k": json.loads((llava / "blip_laion_cc_sbu_558k.json").read_text()),
        "mix665k": json.loads((llava / "llava_v1_5_mix665k.json").read_text()),
    }


@pytest.fixture(scope="module")
def clean_shards(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean_shards")
    return out, convert(world, out, "--shard-size", "64")


@pytest.fixture(scope="module")
def dirty_shards(dirty_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("dirty_shards")
    return out, convert(dirty_world, out, "--shard-size", "64")


def test_clean_world_counts_add_up_and_only_text_only_items_are_skipped(world, clean_shards):
    out, manifest = clean_shards
    items = source_items(world)
    counts = manifest["counts"]
    assert counts["items_read"] == sum(len(v) for v in items.values())
    assert counts["samples_written"] + counts["skipped_total"] == counts["items_read"]
    text_only = sum("image" not in it for it in items["mix665k"])
    assert text_only > 0
    assert counts["skipped"] == {r: (text_only if r == "no_image" else 0) for r in SKIP_REASONS}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == counts["skipped_total"]
    assert all(s["reason"] == "no_image" and items[s["dataset"]][s["index"]]["id"] == s["id"] for s in skipped)
    for dataset, per in counts["per_dataset"].items():
        assert per["items_read"] == len(items[dataset])


def test_shards_read_back_with_webdataset_hold_exactly_the_manifests_samples(world, clean_shards):
    out, manifest = clean_shards
    samples = read_back(out)
    sizes = json.loads((out / "sizes.json").read_text())
    assert len(samples) == manifest["counts"]["samples_written"] == sum(sizes.values())
    assert sizes == {name: sum(s["shard"] == name for s in samples) for name in sizes}
    assert list(sizes) == manifest["shards"]["files"] == [f"llava-{k:06d}.tar" for k in range(len(sizes))]
    keys = [s["key"] for s in samples]
    assert len(set(keys)) == len(keys) and all("." not in k for k in keys)

    items = source_items(world)
    by_id: dict[tuple, list] = {}
    for dataset, its in items.items():
        for it in its:
            by_id.setdefault((dataset, str(it["id"])), []).append(it)
    for s in samples:
        meta = s["meta"]
        assert s["key"].startswith(meta["source"] + "_")
        candidates = [
            [clean_caption(t["value"]) for t in it["conversations"] if t["from"] == "gpt"]
            for it in by_id[(meta["source"], meta["id"])]
            if it.get("image") == meta["image"]
        ]
        assert meta["captions"] in candidates
        assert meta["hard_negatives"] == [swap_left_right(c) for c in meta["captions"]]
        assert s["txt"].decode() == meta["captions"][0]
        root = world / "llava" / ("images" if meta["source"] == "lcs558k" else "")
        assert s["jpg"] == (root / meta["image"]).read_bytes()  # valid RGB JPEGs keep their bytes
    negatives = manifest["hard_negatives"]
    assert negatives["captions_with_negative"] == sum(
        n is not None for s in samples for n in s["meta"]["hard_negatives"]
    )
    assert negatives["captions_with_negative"] > 0


def test_key_phrase_statistics_match_the_generators_own_count(world, clean_shards):
    _, manifest = clean_shards
    generated = json.loads((world / "manifest.json").read_text())["key_phrases"]
    for dataset, file_stats in (("lcs558k", generated["lcs558k"]), ("mix665k", generated["mix665k"])):
        ours = manifest["key_phrases"][dataset]
        assert ours["instances"] == file_stats["instances"] > 0
        assert ours["captions"] == file_stats["captions"]
        assert ours["instances_with_image"] == file_stats["instances_with_image"]


# Reasons the generated dirty world plants; the hostile ones (paths out of the image root, NUL bytes, pixel
# bombs, unreadable files) are built by tests/test_hostile_input.py.
GENERATED_REASONS = (
    "no_image",
    "missing_file",
    "undecodable_image",
    "empty_caption",
    "malformed_item",
    "duplicate_key",
)


def test_dirty_world_exercises_every_generated_skip_reason_and_loses_nothing(dirty_world, dirty_shards):
    out, manifest = dirty_shards
    counts = manifest["counts"]
    assert set(GENERATED_REASONS) <= set(SKIP_REASONS) == set(counts["skipped"])
    assert all(counts["skipped"][r] > 0 for r in GENERATED_REASONS), counts["skipped"]
    assert counts["samples_written"] + counts["skipped_total"] == counts["items_read"]
    assert counts["items_read"] == sum(len(v) for v in source_items(dirty_world).values())
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == counts["skipped_total"]
    assert all(s["detail"] for s in skipped)
    # Each defect the generator planted is caught under the matching reason, and nothing else is.
    planted = json.loads((dirty_world / "manifest.json").read_text())["defect_counts"]
    text_only = sum("image" not in it for it in source_items(dirty_world)["mix665k"])
    assert counts["skipped"] == {r: 0 for r in SKIP_REASONS} | {
        "no_image": text_only,
        "missing_file": planted["missing_image"],
        "undecodable_image": planted["truncated_jpeg"] + planted["zero_byte_jpeg"],
        "empty_caption": planted["empty_caption"],
        "malformed_item": planted["empty_conversations"] + planted["non_string_value"],
        "duplicate_key": planted["duplicate_item"],
    }
    re_encoded = planted["png_as_jpg"] + planted["gif_as_jpg"] + planted["cmyk_jpeg"]
    assert manifest["images"]["re_encoded"] == re_encoded  # decodable, but not RGB JPEG bytes
    for s in read_back(out):
        with Image.open(io.BytesIO(s["jpg"])) as image:
            assert image.format == "JPEG" and image.mode in ("RGB", "L")
    texts = [c for s in read_back(out) for c in s["meta"]["captions"]]
    assert any(not c.isascii() for c in texts)  # non-ASCII text survives


def test_strict_stops_at_the_first_skip_naming_the_item(dirty_world, tmp_path, capsys):
    assert build_shards.main(shard_args(dirty_world, tmp_path / "out", "--strict")) == 1
    err = capsys.readouterr().err
    assert "--strict:" in err and "item" in err and "(id " in err


def test_worker_count_does_not_change_the_output(dirty_world, dirty_shards, tmp_path):
    out, _ = dirty_shards
    two = tmp_path / "two"
    convert(dirty_world, two, "--shard-size", "64", "--workers", "2")
    assert output_digests(two) == output_digests(out)


def test_a_killed_run_resumes_to_the_same_output(world, clean_shards, tmp_path):
    reference, _ = clean_shards
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep.build_shards", *shard_args(world, out, "--shard-size", "64")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / ".build" / "000000.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / ".build").glob("0*.json")))
    total = len(json.loads((reference / "sizes.json").read_text()))
    assert 0 < finished < total, "the run must be killed midway for this test to mean anything"
    # What a crash leaves behind: a half-written shard under its temporary name.
    (out / "llava-000099.tar.tmp").write_bytes(b"half a tar")
    manifest = convert(world, out, "--shard-size", "64")
    assert output_digests(out) == output_digests(reference)
    assert not list(out.glob("*.tmp"))
    assert manifest["counts"] == json.loads((reference / "manifest.json").read_text())["counts"]


def test_other_settings_into_the_same_folder_are_refused(world, clean_shards, tmp_path):
    out = tmp_path / "again"
    convert(world, out, "--shard-size", "64")
    assert build_shards.main(shard_args(world, out, "--shard-size", "64", "--hard-negatives", "none")) == 2
    manifest = convert(world, out, "--shard-size", "64", "--hard-negatives", "none", "--overwrite")
    assert manifest["hard_negatives"]["captions_with_negative"] == 0
    assert all(all(n is None for n in s["meta"]["hard_negatives"]) for s in read_back(out))


def test_resize_caps_the_longest_side(world, tmp_path):
    out = tmp_path / "small"
    convert(world, out, "--shard-size", "512", "--max-image-side", "48")
    for s in read_back(out)[:50]:
        with Image.open(io.BytesIO(s["jpg"])) as image:
            assert max(image.size) <= 48


def test_bad_arguments_are_reported(world, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_shards.main(["--dataset", "lcs558k", "--json", str(tmp_path / "nope.json"), "--image-root",
                           str(tmp_path), "--out", str(tmp_path / "o")])  # fmt: skip
    assert "nope.json: not found" in capsys.readouterr().err


def test_inspect_reports_what_the_manifest_says(clean_shards, tmp_path):
    out, manifest = clean_shards
    stats = inspect_shards.inspect(out, show=2)
    assert stats["samples"] == manifest["counts"]["samples_written"]
    assert stats["sizes_json_mismatches"] == {}
    assert stats["samples_with_hard_negative"] == manifest["hard_negatives"]["samples_with_negative"]
    assert stats["captions_mentioning_axis"]["left-right"] == manifest["hard_negatives"]["captions_with_negative"]
    assert len(stats["examples"]) == 2
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.inspect_shards", str(out), "--json", str(tmp_path / "s.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert f"{stats['samples']} samples" in result.stdout
    assert json.loads((tmp_path / "s.json").read_text())["samples"] == stats["samples"]


def test_a_resume_over_records_without_sha256_completes_the_manifest(world, clean_shards, tmp_path):
    """Shards finished by an older build_shards (records without size and sha256) are hashed once on resume."""
    reference, _ = clean_shards
    out = Path(shutil.copytree(reference, tmp_path / "old"))
    record_file = out / ".build" / "000001.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({k: v for k, v in record.items() if k not in ("bytes", "sha256")}))
    manifest = convert(world, out, "--shard-size", "64")
    assert output_digests(out) == output_digests(reference)
    per_shard = manifest["shards"]["per_shard"]
    assert per_shard == json.loads((reference / "manifest.json").read_text())["shards"]["per_shard"]
    assert (
        per_shard["llava-000001.tar"]["sha256"] == hashlib.sha256((out / "llava-000001.tar").read_bytes()).hexdigest()
    )
    assert json.loads(record_file.read_text())["sha256"] == per_shard["llava-000001.tar"]["sha256"]


def test_workers_report_progress_in_batches_that_replay_to_the_same_counts(monkeypatch):
    sent = []

    class Events:
        def put(self, event):
            sent.append(event)

    monkeypatch.setattr(build_shards, "PROGRESS_EVERY_S", 3600.0)  # nothing is due before the shard ends
    report = build_shards._BatchedProgress(Events())
    for reason in [None, "missing_file", None, "missing_file", "undecodable_image"]:
        report(1, reason)
    assert sent == []  # one event per interval, not one per item
    report.flush()
    assert sent == [(5, {"missing_file": 2, "undecodable_image": 1})]
    calls = []
    build_shards._replay(lambda done, reason: calls.append((done, reason)), *sent[0])
    assert sum(done for done, _ in calls) == 5
    assert sorted(reason for _, reason in calls if reason) == ["missing_file", "missing_file", "undecodable_image"]
