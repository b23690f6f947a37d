"""Real-size smoke test: one training step of the paper's models at full size, a checkpoint, a partial eval of it.

`model.pretrained=random` builds CLIP ViT-L/14-336 (clip_neg) and SigLIP ViT-L/16-384 (siglip_neg) at full size
with seeded random weights, and `random:llama-2-7b-chat:1` a one-layer LLM at Llama-2-7B widths for the LLM2Vec
tower (clip_llm2vec_neg): nothing is downloaded. Each recipe trains one optimizer step of global batch 2 in fp32
on the CPU from the generated world's shards, writes checkpoint step_1, and `eval.run` scores that checkpoint alone
(`--checkpoints step_1`) on the first examples of one benchmark (`--limit`: partial results, marked as such).

`cache=off`: a feature cache would first encode every one of the world's ~700 training images with the full-size
ViT (seconds each on a CPU), where one step needs two. The trainer's memory estimate (models/memory.py, GPU memory
per device) is compared with the trainer process's peak RSS, read from the kernel for exactly that process
(os.wait4 in tests/peak_rss.py), less the RSS of a process that only imports the trainer (Python and torch, ~0.6 GiB): what is left
holds everything the estimate counts, plus what a GPU would not hold (the data, checkpoint serialisation buffers,
lazily imported libraries; measured 0.2-0.4 GiB).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from test_eval_run import fake_build, make_run, written

from eval import run as eval_run
from eval import whatsup as eval_whatsup
from eval.report import read_result
from models.config import ModelConfig

pytestmark = pytest.mark.system  # the system tier (make test-all, CI): real architectures, one full-size CPU step each

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
TIMEOUT_S = 600
# What the trainer holds beyond the import baseline and the estimate's GPU items (module docstring). Measured on
# 2 CPU cores: 0.21 (siglip_neg), 0.23 (clip_llm2vec_neg) and 0.39 GiB (clip_neg).
CPU_EXTRAS_ALLOWANCE = 1.0 * GIB


@dataclass(frozen=True)
class Case:
    overrides: tuple[str, ...]  # beyond the settings every case shares (COMMON)
    benchmark: str  # scored on the first `limit` examples
    limit: int
    rows: int  # benchmark rows that limit reads (MMVP-VLM: 2 per pair)
    trainable_prefixes: tuple[str, ...]  # every weight in the checkpoint starts with one of these


CASES = {
    # Two images each: every image costs seconds at full size on a CPU. What'sUp's --limit (whole object pairs,
    # 4 images) is checked on the fake model below.
    "clip_neg": Case((), "coco_spatial_two", 2, 2, ("text_tower.", "logit_scale")),
    "siglip_neg": Case((), "gqa_spatial_one", 2, 2, ("text_tower.", "logit_scale", "logit_bias")),
    # peft_adapter stays empty (the recipe sets none): random weights take no adapter. MMVP-VLM: 1 pair, 2 images.
    "clip_llm2vec_neg": Case(
        ("model.text.llm2vec.base_model=random:llama-2-7b-chat:1",),
        "mmvp_vlm",
        1,
        2,
        ("text_tower.connector.", "logit_scale"),
    ),
}
COMMON = (
    "model.pretrained=random",
    "data.batch_size=2",
    "train.global_batch_size=2",
    "train.precision=fp32",
    "train.max_steps=1",
    "optim.warmup_steps=0",
    "cache=off",
    "data.workers=0",
    "wandb.mode=disabled",
)


def run_measured(cmd: list[str], log: Path) -> tuple[int, float, int, str, str]:
    """Runs `cmd` from the repository root; (exit code, wall seconds, peak RSS bytes of that process, stdout,
    stderr). The peak RSS is the kernel's for this one process, measured through tests/peak_rss.py so that it does
    not include the resident size of this (large) pytest process, which a child inherits at exec."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    out, err, peak = log.with_suffix(".out"), log.with_suffix(".err"), log.with_suffix(".peak_rss")
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "peak_rss.py"), str(peak), *cmd],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # a timeout kills the measured command too, not only peak_rss.py
        )
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.perf_counter() - started
    rss = int(peak.read_text()) if peak.exists() else 0
    return proc.returncode, seconds, rss, out.read_text(), err.read_text()


def printed_estimate(stdout: str) -> dict[str, float]:
    """The trainer's memory estimate line on a CPU run, in bytes: weights, grads, AdamW, activations, total."""
    line = next(line for line in stdout.splitlines() if line.startswith("memory estimate per process"))
    found = dict(re.findall(r"(weights|grads|AdamW|activations|total) ([0-9.]+)", line))
    keys = {"weights": "weights", "grads": "grads", "adamw": "AdamW", "activations": "activations", "total": "total"}
    return {k: float(found[v]) * GIB for k, v in keys.items()}


def first_step_seconds(stderr: str) -> float | None:
    """The step's duration as tqdm shows it after the step (before the checkpoint is written)."""
    found = re.search(r"1/1 \[[0-9:]+<[0-9:]+, +([0-9.]+)s/it", stderr)
    return float(found.group(1)) if found else None


@pytest.fixture(scope="module")
def import_baseline(tmp_path_factory) -> int:
    """Peak RSS (bytes) of a process that imports the trainer and exits: Python, torch and the trainer's modules."""
    log = tmp_path_factory.mktemp("import_baseline") / "import"
    code, _, rss, _, stderr = run_measured([sys.executable, "-c", "import train.finetune"], log)
    assert code == 0, stderr[-3000:]
    return rss


@pytest.fixture(scope="module", params=list(CASES))
def real_run(request: pytest.FixtureRequest, world: Path, world_shards: Path, tmp_path_factory) -> dict[str, Any]:
    """One recipe trained for one step at full size; its run folder (GBs of checkpoint) is removed afterwards."""
    recipe, case = request.param, CASES[request.param]
    out = tmp_path_factory.mktemp(f"real_{recipe}")
    cmd = [
        sys.executable,
        "train/finetune.py",
        f"recipes/{recipe}.yaml",
        f"data.shards=[{world_shards}]",
        f"output_dir={out}",
        f"cache_dir={out}/feature_cache",
        f"eval.data_root={world / 'bench'}",
        *COMMON,
        *case.overrides,
    ]
    code, seconds, rss, stdout, stderr = run_measured(cmd, out / "train")
    assert code == 0, f"{recipe}: finetune exited {code}\n{stdout[-3000:]}\n{stderr[-6000:]}"
    yield {
        "recipe": recipe,
        "case": case,
        "run_dir": out / recipe,
        "world": world,
        "seconds": seconds,
        "step_seconds": first_step_seconds(stderr),
        "rss": rss,
        "stdout": stdout,
        "stderr": stderr,
    }
    shutil.rmtree(out, ignore_errors=True)


def test_one_full_size_step_writes_a_checkpoint(real_run: dict[str, Any]) -> None:
    run_dir, case = real_run["run_dir"], real_run["case"]
    assert "trainable" in real_run["stdout"] and "frozen" in real_run["stdout"]  # the parameter table
    assert "weights: random init (seed 0)" in real_run["stdout"]
    [record] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_1"
    checkpoint = run_dir / "checkpoints" / "step_1"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 1
    with safe_open(str(checkpoint / "trainable.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and all(name.startswith(case.trainable_prefixes) for name in names), names[:10]
    assert not any(name.startswith("image_tower.") for name in names)  # locked: rebuilt from the config
    print(
        f"\n{real_run['recipe']}: train process {real_run['seconds']:.1f} s (step {real_run['step_seconds']} s), "
        f"{len(names)} trainable tensors in step_1"
    )


def test_memory_estimate_against_the_peak_rss(real_run: dict[str, Any], import_baseline: int) -> None:
    """The estimate is GPU memory; on the CPU the trainer holds all of it in RSS, on top of the import baseline."""
    estimate, rss = printed_estimate(real_run["stdout"]), real_run["rss"]
    state = estimate["weights"] + estimate["grads"] + estimate["adamw"]
    net = rss - import_baseline
    print(
        f"\n{real_run['recipe']}: peak RSS {rss / GIB:.2f} GiB, less {import_baseline / GIB:.2f} GiB import baseline "
        f"= {net / GIB:.2f} GiB; estimate {estimate['total'] / GIB:.2f} GiB (weights {estimate['weights'] / GIB:.2f}, "
        f"grads {estimate['grads'] / GIB:.2f}, AdamW {estimate['adamw'] / GIB:.2f}, activations "
        f"{estimate['activations'] / GIB:.2f}); measured - estimate {(net - estimate['total']) / GIB:+.2f} GiB, "
        f"measured / estimate {net / estimate['total']:.2f}"
    )
    assert net >= state, "weights, gradients and AdamW states are all resident at the optimizer step"
    assert net <= estimate["total"] + CPU_EXTRAS_ALLOWANCE, "the estimate misses memory the step really uses"


def test_partial_eval_of_the_last_checkpoint_alone(real_run: dict[str, Any]) -> None:
    run_dir, case = real_run["run_dir"], real_run["case"]
    cmd = [sys.executable, "-m", "eval.run", "--run", str(run_dir), "--benchmarks", case.benchmark]
    cmd += ["--checkpoints", "step_1", "--limit", str(case.limit), "--cpu-threads", str(cpu_cores())]
    code, seconds, rss, stdout, stderr = run_measured(cmd, run_dir.parent / "eval")
    assert code == 0, f"eval.run exited {code}\n{stderr[-6000:]}"
    print(f"\n{real_run['recipe']}: eval process {seconds:.1f} s, peak RSS {rss / GIB:.2f} GiB")
    assert f"PARTIAL results (--limit {case.limit})" in stderr
    assert sorted(p.name for p in (run_dir / "eval").iterdir() if p.is_dir()) == ["step_1"]  # no step_0
    record = read_result(run_dir / "eval" / "step_1", case.benchmark)
    assert record["limit"] == case.limit and record["partial"] is True
    assert record["provenance"]["scorer"]["limit"] == case.limit
    assert record["counts"]["rows"] == case.rows
    assert 0 < record["provenance"]["data"]["images"]["count"] <= case.rows  # the images actually scored
    assert record["model"]["config"]["pretrained"] == "random" and record["step"] == 1
    assert not eval_run.is_scored(run_dir / "eval" / "step_1", case.benchmark, "paper")
    assert "PARTIAL" in (run_dir / "eval" / "summary.md").read_text().splitlines()[0]


def cpu_cores() -> int:
    """Every core this process may use (eval.run defaults to 1 thread)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# --- --limit and --checkpoints on the fake model: cheap, exact ---------------------------------------------------


def test_limit_results_are_partial_and_an_eval_without_it_recomputes_them(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = make_run(tmp_path, world / "bench", ModelConfig(name="tiny-clip"), fake_build([])(ModelConfig()))
    benchmarks = ["whatsup_a", "coco_spatial_one", "mmvp_vlm"]
    builds: list[Any] = []

    def score(limit: int) -> None:
        eval_run.score_run(
            run_dir, benchmarks=benchmarks, checkpoint_names=["step_5"], limit=limit, build=fake_build(builds)
        )

    score(limit=3)
    err = capsys.readouterr().err
    assert "PARTIAL results (--limit 3)" in err and "step_5 whatsup_a (PARTIAL: first 3 examples)" in err
    assert sorted(p.name for p in (run_dir / "eval").iterdir() if p.is_dir()) == ["step_5"]
    folder = run_dir / "eval" / "step_5"
    counts = {name: read_result(folder, name)["counts"] for name in benchmarks}
    whatsup_rows = json.loads((world / "bench" / "data" / "controlled_images_dataset.json").read_text())
    first_pairs = {tuple(eval_whatsup.parse_file_name(r["image_path"])[::2]) for r in whatsup_rows[:3]}
    assert counts["whatsup_a"]["object_pairs"] == len(first_pairs)  # the first 3 rows' object pairs, whole
    assert counts["whatsup_a"]["rows"] == counts["whatsup_a"]["images"] == 4 * len(first_pairs)
    assert counts["coco_spatial_one"]["rows"] == 3
    assert counts["mmvp_vlm"]["pairs"] == 3 and counts["mmvp_vlm"]["rows"] == 6
    for name in benchmarks:
        record = read_result(folder, name)
        assert record["limit"] == 3 and record["partial"] is True and record["provenance"]["scorer"]["limit"] == 3
        assert not eval_run.is_scored(folder, name, "paper")
    assert "PARTIAL" in (run_dir / "eval" / "summary.md").read_text().splitlines()[0]
    # A status check counts partial results as missing: eval.run without --limit recomputes them.
    pending = eval_run.pending_results(run_dir, benchmarks=benchmarks)
    assert "scorer settings changed: limit 3 -> None" in pending["step_5"]["whatsup_a"]

    # The same limit again: kept. The benchmarks' modules read every row again afterwards.
    before = written(run_dir)
    score(limit=3)
    assert written(run_dir) == before and len(builds) == 1

    # Without the limit: recomputed in full, saying why; the result is whole and counted again.
    capsys.readouterr()
    score(limit=0)
    err = capsys.readouterr().err
    assert "step_5 whatsup_a: recomputing, " in err and "scorer settings changed: limit 3 -> None" in err
    assert "PARTIAL" not in err
    record = read_result(folder, "whatsup_a")
    assert record["counts"]["rows"] == 48 and "limit" not in record and "limit" not in record["provenance"]["scorer"]
    assert eval_run.is_scored(folder, "whatsup_a", "paper")
    assert "PARTIAL" not in (run_dir / "eval" / "summary.md").read_text().splitlines()[0]

    # Unknown checkpoint names fail with the run's list; --checkpoints needs --run.
    assert eval_run.main(["--run", str(run_dir), "--checkpoints", "step_9"]) == 2
    assert "--checkpoints step_9: no such checkpoint; the run has step_0, step_5, epoch_1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_run.main(["--model", "tiny-clip", "--out", str(tmp_path), "--data-root", "x", "--checkpoints", "a"])
