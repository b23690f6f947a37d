"""Nothing written is torn or silently wrong (issue 20): interrupts, torn logs, config guards, old run folders."""

import json
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_finetune import finetune_cmd, metrics, run
from test_finetune import start_in_background as start

from train.config import load_recipe
from train.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# A process that takes a folder's lock and keeps it (as a running writer does) until it is killed.
HOLD = (
    "import sys, time\nfrom data_prep.folder_lock import FolderLock\n"
    "lock = FolderLock(sys.argv[1], 'build_shards')\nlock.acquire()\nprint('held', flush=True)\ntime.sleep(300)\n"
)


def test_a_first_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(world_shards, tmp_path):
    proc, run_dir = start(world_shards, tmp_path, "train.epochs=2", "train.log_every_steps=1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    assert "Ctrl-C: stopping after this step with a checkpoint" in err and "Traceback" not in err
    stopped_at = metrics(run_dir)[-1]["step"]
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{stopped_at}"


def test_a_second_ctrl_c_stops_at_once_in_one_line(world_shards, tmp_path):
    # Steps of the whole 512-sample batch take a second or more: both Ctrl-Cs land inside one step.
    proc, run_dir = start(world_shards, tmp_path, "train.epochs=50", "train.log_every_steps=1",
                          "data.batch_size=64", "train.global_batch_size=512", "optim.warmup_steps=1")  # fmt: skip
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "finetune: interrupted" in err and "Traceback" not in err


def back_to_step_2(run_dir: Path) -> None:
    """The run folder as a kill after checkpoint step_2 of a 4-step run leaves it: latest names step_2."""

    checkpoints = run_dir / "checkpoints"
    for later in checkpoints.glob("step_*"):
        if later.name != "step_2":
            shutil.rmtree(later)
    (checkpoints / "latest").write_text("step_2")


SHORT = ["train.max_steps=4", "optim.warmup_steps=1", "train.log_every_steps=1", "train.checkpoint_every_steps=2"]


def test_a_torn_last_metrics_line_is_dropped_on_resume(world_shards, tmp_path):
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    run_dir = tmp_path / "tiny_clip_finetune"
    back_to_step_2(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "epoch": 0, "lo')  # a kill in the middle of a write
    result = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"))
    assert "line 5 was cut short by an interrupted write; dropped" in result.stdout
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", "optim.lr: expected a finite number"),
        ("optim.lr=inf", "optim.lr: expected a finite number"),
        ("optim.weight_decay=-inf", "optim.weight_decay: expected a finite number"),
        ("run_name=../escaped", "run_name: '../escaped' is not a plain folder name"),
        ("run_name=/tmp/elsewhere", "run_name: '/tmp/elsewhere' is not a plain folder name"),
    ],
)
def test_config_guards(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(ROOT / "recipes" / "tiny_clip_neg.yaml", [override])


def test_a_run_started_before_the_schema_gained_a_key_resumes(world_shards, tmp_path):
    """A key added to the schema after a run started holds its default in that run: resuming is allowed."""
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    run_dir = tmp_path / "tiny_clip_finetune"
    back_to_step_2(run_dir)
    config = run_dir / "config.yaml"
    text = config.read_text()
    assert "  logit_scale_clamp: pretrained\n" in text
    config.write_text(text.replace("  logit_scale_clamp: pretrained\n", ""))  # as a config written before it
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"))
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_4"


# --- checkpoints that prove themselves -----------------------------------------------------------------------


def zero_tail(path: Path, size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[-size:] = bytes(min(size, len(data)))
    path.write_bytes(bytes(data))


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(world_shards, tmp_path):
    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    run_dir = tmp_path / "tiny_clip_finetune"
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step_4"
    assert "trainable.safetensors" in json.loads((checkpoints / "step_4" / "checksums.json").read_text())
    zero_tail(checkpoints / "step_4" / "trainable.safetensors")  # the same size: only sha256 sees it
    (checkpoints / "step_4" / "latest-was-here").write_text("")
    result = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"))
    assert "checkpoint" in result.stdout and "step_4 is damaged" in result.stdout
    assert "trainable.safetensors: sha256 differs" in result.stdout
    assert f"resumed from {checkpoints / 'step_2'}" in result.stdout
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4]


def test_no_intact_checkpoint_stops_in_one_line_and_eval_refuses_a_damaged_one(world_shards, world, tmp_path):
    from eval import run as eval_run

    run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT))
    checkpoints = tmp_path / "tiny_clip_finetune" / "checkpoints"
    (checkpoints / "step_2" / "trainer_state.json").write_text("")  # empty: unreadable
    (checkpoints / "step_4" / "optimizer.pt").write_bytes(b"")  # truncated to nothing
    result = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, "train.resume=latest"), check=False)
    assert result.returncode == 1 and "no intact checkpoint to resume from" in result.stderr
    assert "Traceback" not in result.stderr
    args = ["--run", str(tmp_path / "tiny_clip_finetune"), "--data-root", str(world / "bench"),
            "--checkpoints", "step_4", "--benchmarks", "coco_spatial_one", "--limit", "2"]  # fmt: skip
    assert eval_run.main(args) == 2


def test_a_full_disk_leaves_no_temporary_folder_and_says_what_was_needed(tmp_path, monkeypatch):
    import errno

    import torch

    from train import checkpoints

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_safetensors", no_space)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(checkpoints.CheckpointError, match=r"needs about 80 bytes there"):
        checkpoints.save_checkpoint(tmp_path, "step_1", model=model, optimizer=optimizer, scheduler=scheduler,
                                    state={"step": 1}, config_yaml="")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


FULL_TMPFS = r"""
import json, subprocess, sys
from pathlib import Path
import torch
from train import checkpoints
folder = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], check=True)

def save(name, side):
    model = torch.nn.Linear(side, side)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return checkpoints.save_checkpoint(folder, name, model=model, optimizer=optimizer, scheduler=scheduler,
                                       state={"step": side}, config_yaml="")

save("step_1", 8)
try:
    save("step_2", 512)  # 1 MB of weights on a 512 KB file system
    error = ""
except checkpoints.CheckpointError as err:
    error = str(err)
print(json.dumps({"error": error, "left": sorted(p.name for p in folder.iterdir()),
                  "latest": (folder / "latest").read_text(), "intact": checkpoints.checkpoint_problems(folder / "step_1")}))
"""


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no mount namespace here (unshare -rm); the ENOSPC test above runs")
def test_a_real_full_tmpfs_keeps_earlier_checkpoints_and_leaves_no_temporary_folder(tmp_path):
    """The same as above on a real 512 KB tmpfs (in a private mount namespace, so no root is needed)."""
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_TMPFS, str(folder)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "checkpoint step_2 could not be written" in result["error"]
    assert "No space left on device" in result["error"] and "needs about" in result["error"]
    assert result["left"] == ["latest", "step_1"] and result["latest"] == "step_1"
    assert result["intact"] == []


# --- one writer per folder ------------------------------------------------------------------------------------


def test_a_second_finetune_of_the_same_run_stops_before_writing(world_shards, tmp_path):
    proc, run_dir = start(world_shards, tmp_path, "train.epochs=50", "train.log_every_steps=1")
    try:
        second = run(finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, "train.resume=latest"), check=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=300)
    assert second.returncode == 1 and "is being written by another finetune (host" in second.stderr
    assert f"pid {proc.pid}" in second.stderr
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == sorted(set(steps))  # each step once: the second writer wrote nothing


def test_a_second_build_shards_on_the_same_out_is_refused(world, tmp_path, capsys):
    from data_prep import build_shards

    out = tmp_path / "shards"
    llava = world / "llava"
    args = ["--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json"),
            "--image-root", str(llava / "images"), "--out", str(out)]  # fmt: skip
    holder = subprocess.Popen(  # another process holds the lock, as a running build would
        [sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert build_shards.main(args) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"is being written by another build_shards (host {platform.node()}, pid {holder.pid}" in err
    assert not out.exists()
    assert build_shards.main(args) == 0  # the holder died: the lock is taken over and the build proceeds
    assert "took over the lock of a process that ended" in capsys.readouterr().out


def test_a_start_that_failed_before_its_first_step_can_simply_be_rerun(world_shards, tmp_path):
    """Weights that fail to load (after the run folder is written): the identical rerun is not refused as "already
    holds a run", and once the weights are fixed it trains."""
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a checkpoint")
    cmd = finetune_cmd("tiny_clip_finetune", world_shards, tmp_path, *SHORT, f"model.pretrained={weights}")
    first = run(cmd, check=False)
    run_dir = tmp_path / "tiny_clip_finetune"
    assert first.returncode != 0 and (run_dir / "config.yaml").exists()
    again = run(cmd, check=False)
    assert again.returncode != 0 and "already holds a run" not in again.stderr
    import torch

    from models import build_model
    from models.config import ModelConfig

    torch.save(build_model(ModelConfig(name="tiny-clip")).model.open_clip_state_dict(), weights)
    run(cmd)
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_4"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("3,Orientation,", "data row 3 (Question ID 3): no Statement"),
        ("3,Orientation,a dog, facing left", "line 4: 4 fields, the header has 3"),
    ],
)
def test_a_malformed_mmvp_vlm_row_is_named(world, tmp_path, line, message):

    from eval_doubles import OracleScorer

    from eval.benchmarks import run_benchmark

    shutil.copytree(world / "bench" / "MMVP_VLM", tmp_path / "MMVP_VLM")
    questions = tmp_path / "MMVP_VLM" / "Questions.csv"
    lines = questions.read_text().splitlines()
    lines[3] = line
    questions.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_benchmark("mmvp_vlm", OracleScorer(world), tmp_path)


def test_a_shard_folder_without_its_records_is_no_silent_subset(world_shards, tmp_path, capsys):
    """sizes.json and manifest.json gone and a shard deleted: training and --verify refuse; --reindex verifies what
    is there, says how many samples it found and writes sizes.json, after which training reads it."""

    from data_prep import inspect_shards
    from train.data import ShardIntegrityError, index_shards

    folder = tmp_path / "shards"
    shutil.copytree(world_shards, folder)
    for name in ("sizes.json", "manifest.json"):
        (folder / name).unlink()
    sorted(folder.glob("*.tar"))[-1].unlink()
    with pytest.raises(ShardIntegrityError, match="no sizes.json"):
        index_shards([folder])
    result = run(finetune_cmd("tiny_clip_finetune", folder, tmp_path, *SHORT), check=False)
    assert result.returncode == 1 and "no sizes.json" in result.stderr
    assert inspect_shards.main([str(folder), "--verify"]) == 1
    assert inspect_shards.main([str(folder), "--verify", "--reindex"]) == 0
    found = len(index_shards([folder]))
    assert f"reindexed, {found} samples found, sizes.json written" in capsys.readouterr().out


def test_a_feature_cache_damaged_on_disk_is_never_read(world_shards, tmp_path):
    """64 KB zeroed inside a finished cache's features.npy: the next run stops naming the file (it trained on wrong
    features before), and deleting the folder rebuilds it."""

    settings = ["train.max_steps=2", "optim.warmup_steps=1", "train.log_every_steps=1", "cache=on"]
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "a", *settings))
    cache_root = tmp_path / "a" / "feature_cache"
    [image_cache] = [p for p in cache_root.glob("image-*") if p.is_dir()]
    features = image_cache / "features.npy"
    data = bytearray(features.read_bytes())
    data[1024 : 1024 + 65536] = bytes(min(65536, len(data) - 1024))
    features.write_bytes(bytes(data))
    again = finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "a", *settings)
    again = [a.replace(f"output_dir={tmp_path / 'a'}", f"output_dir={tmp_path / 'b'}") for a in again]
    result = run(again, check=False)
    assert result.returncode == 1 and "features.npy no longer match(es) the checksums" in result.stderr
    shutil.rmtree(image_cache)
    run(again)


def test_eval_recomputes_when_a_weights_file_the_build_reads_changes(world, tmp_path, capsys):
    """The tiny preset's weights file (built into the model cache, never named by the config) is part of the
    provenance: rewriting it recomputes the result instead of keeping it."""
    from safetensors.torch import load_file, save_file

    from eval import run as eval_run
    from models.cache import resolve_cache_dir

    args = ["--model", "tiny-clip", "--out", str(tmp_path), "--data-root", str(world / "bench"),
            "--benchmarks", "coco_spatial_one", "--limit", "2"]  # fmt: skip
    assert eval_run.main(args) == 0
    assert eval_run.main(args) == 0
    assert "kept coco_spatial_one" in capsys.readouterr().err
    weights = resolve_cache_dir() / "tiny-clip" / "open_clip_model.safetensors"
    original = weights.read_bytes()
    state = load_file(str(weights))
    state["logit_scale"] = state["logit_scale"] + 1.0
    save_file(state, str(weights))
    try:
        assert eval_run.main(args) == 0
        assert "weights changed: built:tiny_preset" in capsys.readouterr().err
    finally:  # the session's other tests build tiny-clip from this very file
        weights.write_bytes(original)


def test_partial_and_mixed_numbers_are_marked_in_every_table(tmp_path, capsys):
    """--limit results and seeds evaluated at different checkpoints: PARTIAL / MIXED in eval.table5, launch.report's
    Markdown and CSV, with the checkpoint each row uses."""
    import csv

    from test_launch import fake_run

    from eval.table5 import main as table5_main
    from launch.report import from_folders, write_report

    model = "clip-vit-l14-336"
    seed0 = fake_run(
        tmp_path / "neg-seed0",
        model,
        "negclip",
        "native",
        {"step_0": {"whatsup_a": 49.0}, "step_4": {"whatsup_a": 52.0}, "step_6": {"whatsup_a": 54.0}},
    )
    seed1 = fake_run(tmp_path / "neg-seed1", model, "negclip", "native",
                     {"step_0": {"whatsup_a": 49.0}, "step_4": {"whatsup_a": 50.0}})  # fmt: skip
    for folder in (seed1 / "eval" / "step_4", seed1 / "eval" / "step_0"):  # seed 1 scored with eval.run --limit 4
        record = json.loads((folder / "whatsup_a.json").read_text())
        (folder / "whatsup_a.json").write_text(json.dumps({**record, "limit": 4, "partial": True}))

    assert table5_main([str(seed1), "--csv", str(tmp_path / "t5.csv")]) == 0
    printed = capsys.readouterr().out
    assert "| + neg. cap. (neg-seed1) **PARTIAL (--limit 4)** | 50.0 |" in printed
    assert "PARTIAL: the row's results score only the first N examples" in printed
    t5 = {r["row"]: r for r in csv.DictReader((tmp_path / "t5.csv").open())}
    assert t5["+ neg. cap. (neg-seed1)"]["marks"] == "PARTIAL (--limit 4)"
    assert t5["+ neg. cap. (neg-seed1)"]["checkpoint"] == "step 4"
    assert t5["Random chance"]["marks"] == ""

    rows, _, _ = write_report(from_folders([seed0, seed1], tmp_path / "report"))
    by_label = {r.label: r for r in rows}
    assert by_label["+ neg. cap. (neg-seed0)"].marks == () and by_label["+ neg. cap. (neg-seed0)"].step == 6
    text = (tmp_path / "report" / "report.md").read_text()
    mean_line = next(line for line in text.splitlines() if "n=2" in line)
    assert "**PARTIAL (--limit 4)**" in mean_line and "**MIXED (steps 4/6)**" in mean_line
    assert "| 52.0 ± 2.8 |" in mean_line  # the numbers stay, marked
    assert "Marks: **PARTIAL (--limit N)**" in text
    assert "| neg-seed0 | – | – | evaluated up to step 6 | step 6 |" in text
    assert "| neg-seed1 | – | – | evaluated up to step 4 | step 4 PARTIAL (--limit 4) |" in text
    every = {r["row"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    mean = next(r for r in every.values() if r["kind"] == "mean")
    assert mean["marks"] == "PARTIAL (--limit 4); MIXED (steps 4/6)" and mean["checkpoint"] == "step 6/step 4"
    assert (
        every["+ neg. cap. (neg-seed0)"]["marks"] == "" and every["+ neg. cap. (neg-seed0)"]["checkpoint"] == "step 6"
    )


def test_a_key_given_twice_in_a_json_item_is_reported_with_the_item(world, tmp_path, capsys):
    """json keeps the last of two "image" keys, other readers the first: such an item is skipped and named, the rest
    converts; a benchmark file with a repeated key stops its eval naming the row."""
    from data_prep import build_shards
    from eval import whatsup

    llava = world / "llava"
    good = json.loads((llava / "blip_laion_cc_sbu_558k.json").read_text())[:3]
    first, second = good[0]["image"], good[1]["image"]
    texts = [json.dumps(item) for item in good]
    texts.append(json.dumps(good[2]).replace('"image":', f'"image": "{first}", "image":', 1))
    texts.append(json.dumps(good[1]).replace('"value":', '"value": "A cat.", "value":', 1))
    (tmp_path / "items.json").write_text("[" + ",\n".join(texts) + "]")
    out = tmp_path / "shards"
    args = ["--dataset", "lcs558k", "--json", str(tmp_path / "items.json"), "--image-root", str(llava / "images"),
            "--out", str(out), "--overwrite"]  # fmt: skip
    assert build_shards.main(args) == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["index"], s["reason"]) for s in skipped] == [(3, "malformed_item"), (4, "malformed_item")]
    assert f'"image" given 2 times ({first!r}, then {good[2]["image"]!r})' in skipped[0]["detail"]
    assert 'conversations[0]: "value" given 2 times' in skipped[1]["detail"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["samples_written"] == 3
    assert second  # the other items convert as before

    bench = tmp_path / "bench"
    (bench / "data").mkdir(parents=True)
    text = (world / "bench" / "data" / "controlled_images_dataset.json").read_text()
    captions = bench / "data" / "controlled_images_dataset.json"
    captions.write_text(text.replace('"image_path":', '"image_path": "data/x.jpeg", "image_path":', 1))
    with pytest.raises(ValueError, match=r'row 0: a key given twice.*"image_path" given 2 times'):
        whatsup.load_rows(bench, whatsup.SUBSETS["A"])
