"""Benchmarks behind `make bench`: each figure is a ratio against a baseline measured in the same run.

    python bench/run.py [--scale medium|small] [--out bench] [--rounds 2] [--only NAME] [--quick]

Writes bench/results.json and bench/results.md. Measured here, on the generated world:
- build_shards samples/s with 1 and 2 workers against a plain single-process converter (json.load, PIL
  decode, webdataset ShardWriter), on the generated world's two LLaVA datasets;
- training samples/s of train/finetune.py (uncached; also with the loader's old per-sample path) against
  open_clip's own trainer (`open_clip_train.main`) on the same tiny-clip, shards, batch, locked image tower,
  data workers and CPU, in alternating rounds; steady-state windows only, so start-up counts for neither;
- the loader's per-sample cost (read, decode, seeded crop, tokenize) against its old per-sample path, and
  open_clip_train's webdataset loader timed the same way;
- eval seconds per checkpoint of a run's checkpoints, with benchmark image features reused across checkpoints
  (the locked image tower) against recomputed for each;
- peak memory and time of one optimizer step with two-pass gradient accumulation (4 micro-batches of 16) against
  one pass over the same global batch of 64, and against one micro-batch of 16 alone, each configuration in a
  fresh process (peak RSS growth over its steps);
- training samples/s of clip_neg and siglip_neg at their real architectures (random weights, batch 2, fp32 on CPU)
  from the image-feature cache against every tower run, and the cache build's images/s (`--quick`: 1 round of 3
  steps, for CI);
- LLaVA eval examples/s on the tiny random LLaVA, batched against one example at a time, for the generative and
  the perplexity (choice) protocols (bench/llava_speed.py);
- training steps/s beside a busy process with the default CPU thread count against each hand-set count
  (bench/threads_speed.py);
- what a feature cache's checksums cost on every open against one pass over its rows (bench/cache_verify_speed.py);
- the test suite's wall time: `make test` and the system tier (`--only tests`: about half an hour);
- the hard-negative recipes' step at real width (clip_neg, siglip_neg text towers): 2B texts with copies of the
  caption against the B + k real negatives only (bench/negative_rows_speed.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
import webdataset as wds
from PIL import Image

from data_prep import build_shards
from data_prep.llava_items import clean_caption
from data_prep.provenance import code_version
from data_prep.toyworld import generate

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RECIPE = REPO / "recipes" / "tiny_clip_finetune.yaml"


def plain_converter(inputs: list[tuple[str, Path, Path]], out: Path) -> int:
    """The obvious single-process conversion: the baseline every faster path is compared with."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with wds.ShardWriter(str(out / "plain-%06d.tar"), maxcount=10000, verbose=0) as sink:
        for dataset, json_path, root in inputs:
            for index, item in enumerate(json.loads(json_path.read_text())):
                if "image" not in item:
                    continue
                try:
                    data = (root / item["image"]).read_bytes()
                    with Image.open(io.BytesIO(data)) as image:
                        image.load()
                except (OSError, SyntaxError):
                    continue
                captions = [clean_caption(t["value"]) for t in item["conversations"] if t["from"] == "gpt"]
                meta = {"id": item["id"], "source": dataset, "image": item["image"], "captions": captions}
                sink.write({"__key__": f"{dataset}_{index}", "jpg": data, "json": meta, "txt": captions[0]})
                written += 1
    return written


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def with_ratios(rows: dict[str, dict], baseline: str, key: str, *, lower_is_better: bool = False) -> dict[str, dict]:
    """Adds ratio_vs_baseline: `key` against the baseline row's, oriented so that > 1 is better."""
    base = rows[baseline][key]
    for row in rows.values():
        row["ratio_vs_baseline"] = round(base / row[key] if lower_is_better else row[key] / base, 2)
    return rows


SHARD_SIZE = 500  # the medium world's 7,000 samples make 14 shards: 7 per worker, as real data (1,200+) allows


def bench_build_shards(world: Path, scratch: Path, *, rounds: int = 3) -> dict:
    """Each whole conversion in alternating rounds, best round per row: the plain converter, build_shards with 1
    and with 2 workers (writing `scratch/ours-2`, the shards the other benchmarks read)."""
    llava = world / "llava"
    inputs = [
        ("lcs558k", llava / "blip_laion_cc_sbu_558k.json", llava / "images"),
        ("mix665k", llava / "llava_v1_5_mix665k.json", llava),
    ]
    args = []
    for dataset, json_path, root in inputs:
        args += ["--dataset", dataset, "--json", str(json_path), "--image-root", str(root)]

    def ours(workers: int) -> int:
        out = scratch / f"ours-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        command = [*args, "--out", str(out), "--workers", str(workers), "--shard-size", str(SHARD_SIZE)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert build_shards.main(command) == 0
        return json.loads((out / "manifest.json").read_text())["counts"]["samples_written"]

    def plain() -> int:
        shutil.rmtree(scratch / "plain", ignore_errors=True)
        return plain_converter(inputs, scratch / "plain")

    variants = {
        "plain single-process (baseline)": plain,
        "build_shards, 1 worker": lambda: ours(1),
        "build_shards, 2 workers": lambda: ours(2),
    }
    best: dict[str, tuple[float, int]] = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds, samples = timed(fn)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, samples)
    rows = {
        name: {"seconds": round(seconds, 3), "samples": samples, "samples_per_s": round(samples / seconds, 1)}
        for name, (seconds, samples) in best.items()
    }
    one = rows["build_shards, 1 worker"]["samples_per_s"]
    rows["build_shards, 2 workers"]["vs_1_worker"] = round(rows["build_shards, 2 workers"]["samples_per_s"] / one, 2)
    return {
        "how": (
            f"Wall clock of each whole conversion of the world's LCS-558K and DataMix-665K files, best of {rounds} "
            f"alternating rounds; build_shards with --shard-size {SHARD_SIZE} (workers split whole shards). "
            "vs_1_worker: samples/s of 2 workers over 1 worker's."
        ),
        "columns": {
            "samples": "samples",
            "seconds": "seconds",
            "samples_per_s": "samples/s",
            "vs_1_worker": "vs 1 worker",
        },
        "rows": with_ratios(rows, "plain single-process (baseline)", "samples_per_s"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Training throughput: train/finetune.py against open_clip's own trainer


def tiny_clip_folder() -> Path:
    """The tiny-clip open_clip folder (config + weights) that both trainers load."""
    from models.cache import resolve_cache_dir
    from models.tiny_open_clip import TINY_CLIP, tiny_open_clip_folder

    return tiny_open_clip_folder(TINY_CLIP, resolve_cache_dir())


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"{Path(command[1]).name} exited with {done.returncode}:\n{tail}")


def uncached_overrides() -> list[str]:
    """Ours trained as open_clip trains: its random-crop train transform, every tower run (no feature cache)."""
    return ["data.augment=true", "cache=off"]


def ours_overrides(shards: Path, runs: Path, name: str, *, steps: int, every: int, batch: int, workers: int):
    return [
        f"data.shards=[{shards}]",
        f"output_dir={runs}",
        f"run_name={name}",
        f"data.batch_size={batch}",
        f"train.global_batch_size={batch}",
        f"data.workers={workers}",
        f"train.max_steps={steps}",
        f"train.log_every_steps={every}",
        "wandb.mode=disabled",
    ]


def open_clip_command(shards: Path, logs: Path, name: str, *, steps: int, every: int, batch: int, workers: int):
    """open_clip_train.main's flags for what the recipe trains: same model, data, batch, optimizer, fp32 on CPU."""
    from train.config import load_recipe

    optim = load_recipe(RECIPE).optim
    return [
        sys.executable,
        str(BENCH / "open_clip_trainer.py"),
        *("--model", f"local-dir:{tiny_clip_folder()}", "--lock-image", "--precision", "fp32", "--device", "cpu"),
        *("--train-data", "::".join(sorted(str(p) for p in shards.glob("*.tar"))), "--dataset-type", "webdataset"),
        *("--train-num-samples", str(steps * batch), "--batch-size", str(batch), "--workers", str(workers)),
        *("--epochs", "1", "--lr", str(optim.lr), "--warmup", str(optim.warmup_steps), "--wd", str(optim.weight_decay)),
        *("--beta1", str(optim.beta1), "--beta2", str(optim.beta2), "--eps", str(optim.eps), "--seed", "0"),
        *("--log-every-n-steps", str(every), "--report-to", "", "--logs", str(logs), "--name", name),
    ]


Window = tuple[int, float, float]  # steps, seconds, seconds waiting for data


def ours_windows(metrics: Path, batch: int, warmup: int) -> list[Window]:
    """metrics.jsonl windows (wall clock between two log lines) whose first step comes after `warmup` steps."""
    windows, done = [], 0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        steps = record["step"] - done
        if done >= warmup:
            seconds = steps * batch / record["samples_per_s"]
            windows.append((steps, seconds, seconds * record["data_wait_share"]))
        done = record["step"]
    return windows


# open_clip_train.train logs every N steps: samples so far, then the mean data and batch (whole step) time per step
# since the previous log line.
OPEN_CLIP_LOG = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+ [^\]]*\] Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+),")


def open_clip_windows(log: Path, batch: int, warmup: int) -> list[Window]:
    """open_clip's log windows whose first step comes after `warmup` steps."""
    windows, done = [], 0
    for match in OPEN_CLIP_LOG.finditer(log.read_text()):
        now = int(match[1]) // batch
        steps = now - done
        if done >= warmup:
            windows.append((steps, steps * float(match[3]), steps * float(match[2])))
        done = now
    return windows


def bench_training(
    shards: Path,
    scratch: Path,
    *,
    rounds: int,
    batch: int,
    workers: int = 1,
    warmup: int = 5,
    measured: int = 20,
    every: int = 5,
) -> dict:
    assert warmup % every == 0 and measured % every == 0, "windows must tile the warmup and the measured steps"
    tiny_clip_folder()  # built once here, not inside a timed run
    # torch's default takes every core for its intra-op threads, on top of the data workers: on a small shared
    # machine the threads wait on each other at every op (on 2 busy cores, 2 threads trained at 20-370 samples/s
    # from window to window, 1 thread at 200-460). Both trainers get the cores the workers leave.
    threads = max(1, (os.cpu_count() or 1) - workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    runs = scratch / "train-runs"
    ours = [sys.executable, str(REPO / "train" / "finetune.py"), str(RECIPE)]
    legacy = [sys.executable, str(BENCH / "legacy_loader.py"), str(RECIPE)]
    shape = {"every": every, "batch": batch, "workers": workers}
    baseline = "open_clip_train.main (baseline)"
    variants = {
        # open_clip logs after its first step, then every `every`: one more step puts its last log on the last step.
        baseline: lambda name: (
            open_clip_command(shards, runs, name, steps=warmup + measured + 1, **shape),
            lambda: open_clip_windows(runs / name / "out.log", batch, warmup),
        ),
        "ours, uncached (train/finetune.py)": lambda name: (
            ours + ours_overrides(shards, runs, name, steps=warmup + measured, **shape) + uncached_overrides(),
            lambda: ours_windows(runs / name / "metrics.jsonl", batch, warmup),
        ),
        "ours, uncached, loader's old per-sample path": lambda name: (
            legacy + ours_overrides(shards, runs, name, steps=warmup + measured, **shape) + uncached_overrides(),
            lambda: ours_windows(runs / name / "metrics.jsonl", batch, warmup),
        ),
    }
    measured_windows: dict[str, list[Window]] = {name: [] for name in variants}
    runs.mkdir(parents=True)
    for round_index in range(rounds):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))  # ABC CBA: drift cancels
        for number, variant in enumerate(order):
            name = f"round{round_index}-{number}"
            command, windows = variants[variant](name)
            print(f"  training round {round_index + 1}/{rounds}: {variant}", flush=True)
            run_logged(command, runs / f"{name}.log", env)
            found = windows()
            if sum(w[0] for w in found) != measured:
                raise RuntimeError(f"{variant}: {sum(w[0] for w in found)} measured steps, expected {measured}")
            measured_windows[variant] += found
    rows = {}
    for variant, windows in measured_windows.items():
        steps = sum(w[0] for w in windows)
        seconds = sum(w[1] for w in windows)
        rates = [w[0] * batch / w[1] for w in windows]
        rows[variant] = {
            "samples_per_s": round(statistics.median(rates), 1),
            "samples_per_s_all_steps": round(steps * batch / seconds, 1),
            "window_range": f"{min(rates):.1f}-{max(rates):.1f}",
            "data_wait_share": round(sum(w[2] for w in windows) / seconds, 3),
            "steps": steps,
        }
    for row in rows.values():
        row["all_steps_ratio"] = f"{row['samples_per_s_all_steps'] / rows[baseline]['samples_per_s_all_steps']:.2f}x"
    return {
        "how": (
            f"tiny-clip (the same open_clip folder and weights), locked image tower, batch {batch}, {workers} data "
            f"worker and {threads} torch thread{'s' if threads > 1 else ''} (OMP_NUM_THREADS: the cores the workers "
            f"leave), fp32 on CPU, the same shards (open_clip reads their `txt` member, the first caption; ours draws "
            f"one caption at random), open_clip's random-resized-crop train transform in both, the recipe's AdamW "
            f"settings in both. {rounds} rounds, the trainers in alternating order; each run trains {warmup} warm-up "
            f"steps, then {measured} measured steps. Start-up and warm-up count for neither: each trainer's own "
            f"wall clock per {every}-step log window (ours: metrics.jsonl samples_per_s; open_clip: its 'Batch (t)' "
            f"mean step time) after step {warmup}; the ratio vs baseline is of the median windows, robust to load "
            "bursts from other processes; the all-steps columns sum every measured window. Data-wait share: time "
            "waiting for the next batch (ours: data_wait_share; open_clip: 'Data (t)') over the measured wall "
            "clock. The old-loader row runs train/finetune.py with the per-sample path train/data.py had before "
            "(bench/legacy_loader.py). open_clip_train runs through bench/open_clip_trainer.py, which only passes "
            "eof_value=None to webdataset's tar_file_expander (open_clip issue #935)."
        ),
        "columns": {
            "samples_per_s": "samples/s (median window)",
            "samples_per_s_all_steps": "samples/s (all measured steps)",
            "all_steps_ratio": "ratio (all measured steps)",
            "window_range": "samples/s per window (min-max)",
            "data_wait_share": "data-wait share",
            "steps": "steps measured",
        },
        "rows": with_ratios(rows, baseline, "samples_per_s"),
    }


def bench_cache(shards: Path, scratch: Path, *, rounds: int, batch: int, warmup: int = 5, measured: int = 20) -> dict:
    """Locked-image recipes trained from the feature cache against the same recipes running every tower."""
    every, workers = 5, 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) - workers))}
    runs, cache_dir = scratch / "cache-runs", scratch / "feature-cache"
    runs.mkdir(parents=True)
    rows, build_seconds = {}, {}
    for recipe in ("tiny_clip_neg", "tiny_clip_llm2vec_neg"):
        recipe_path = REPO / "recipes" / f"{recipe}.yaml"
        common = [
            f"data.shards=[{shards}]",
            "data.augment=false",
            f"data.batch_size={batch}",
            f"data.workers={workers}",
        ]
        started = time.perf_counter()  # the one-time build, shared by every later run with the same frozen parts
        run_logged([sys.executable, "-m", "train.cache", str(recipe_path), *common, f"cache_dir={cache_dir}"],
                   runs / f"{recipe}-build.log", env)  # fmt: skip
        build_seconds[recipe] = round(time.perf_counter() - started, 1)
        variants = {f"{recipe}, every tower run (baseline)": "off", f"{recipe}, from the feature cache": "auto"}
        windows: dict[str, list[Window]] = {name: [] for name in variants}
        for round_index in range(rounds):
            for name in list(variants) if round_index % 2 == 0 else list(reversed(variants)):
                run_name = f"{recipe}-{variants[name]}-{round_index}"
                overrides = ours_overrides(shards, runs, run_name, steps=warmup + measured, every=every, batch=batch,
                                           workers=workers)  # fmt: skip
                command = [sys.executable, str(REPO / "train" / "finetune.py"), str(recipe_path), *overrides, *common]
                command += [f"cache={variants[name]}", f"cache_dir={cache_dir}"]
                print(f"  cache round {round_index + 1}/{rounds}: {name}", flush=True)
                run_logged(command, runs / f"{run_name}.log", env)
                windows[name] += ours_windows(runs / run_name / "metrics.jsonl", batch, warmup)
        recipe_rows = {}
        for name, found in windows.items():
            rates = [w[0] * batch / w[1] for w in found]
            recipe_rows[name] = {
                "samples_per_s": round(statistics.median(rates), 1),
                "data_wait_share": round(sum(w[2] for w in found) / sum(w[1] for w in found), 3),
                "cache_build_s": build_seconds[recipe] if variants[name] == "auto" else "",
            }
        rows.update(with_ratios(recipe_rows, f"{recipe}, every tower run (baseline)", "samples_per_s"))
    return {
        "how": (
            f"Each recipe with data.augment=false (the eval transform, which makes the locked image tower cacheable), "
            f"batch {batch}, {workers} data worker, fp32 on CPU, {rounds} alternating rounds of {warmup} warm-up and "
            f"{measured} measured steps; median samples/s over 5-step windows (per-epoch time is samples / rate). "
            "The cache is built once beforehand with python -m train.cache (its seconds in the last column); "
            "tiny_clip_neg caches the image tower only (the trainable text tower is most of its step), "
            "tiny_clip_llm2vec_neg also the frozen LLM (only the connector trains). Each recipe's baseline is its "
            "own uncached row."
        ),
        "columns": {
            "samples_per_s": "samples/s (median window)",
            "data_wait_share": "data-wait share",
            "cache_build_s": "one-time cache build (s)",
        },
        "rows": rows,
    }


def bench_real_size(scratch: Path, *, rounds: int, steps: int) -> dict:
    """clip_neg and siglip_neg at their real architectures (random weights), from the feature cache against
    every tower run, batch 2, fp32 on CPU; the cache is built beforehand over the (small) shard folder."""
    # bench/ is on sys.path: this file runs as a script
    from real_size import image_pass_seconds, measured_seconds, small_shards

    batch, workers = 2, 1
    # One epoch of exactly `steps` steps: an epoch-end checkpoint (the whole trainable text tower) would otherwise
    # fall inside the next step's wall clock.
    samples = batch * steps
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) - workers))}
    shards = small_shards(scratch, samples)
    runs, cache_dir = scratch / "real-size-runs", scratch / "real-size-cache"
    runs.mkdir(parents=True)
    rows = {}
    for recipe in ("clip_neg", "siglip_neg"):
        recipe_path = REPO / "recipes" / f"{recipe}.yaml"
        common = [
            f"data.shards=[{shards}]",
            "model.pretrained=random",
            "data.augment=false",  # our choice (the released profile crops): the locked image tower is cacheable
            "train.precision=fp32",
            f"data.batch_size={batch}",
            f"train.global_batch_size={batch}",
            f"data.workers={workers}",
            f"cache_dir={cache_dir}",
        ]
        build_log = runs / f"{recipe}-build.log"
        print(f"  {recipe}: building the image-feature cache over {samples} samples ...", flush=True)
        started = time.perf_counter()
        run_logged([sys.executable, "-m", "train.cache", str(recipe_path), *common], build_log, env)
        build_seconds = time.perf_counter() - started
        pass_seconds = image_pass_seconds(build_log)
        variants = {f"{recipe}, every tower run (baseline)": "off", f"{recipe}, from the feature cache": "auto"}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_index in range(rounds):
            for name in list(variants) if round_index % 2 == 0 else list(reversed(variants)):
                run_name = f"{recipe}-{variants[name]}-{round_index}"
                overrides = ours_overrides(shards, runs, run_name, steps=steps, every=1, batch=batch, workers=workers)
                command = [sys.executable, str(REPO / "train" / "finetune.py"), str(recipe_path), *overrides, *common]
                command += [f"cache={variants[name]}", "optim.warmup_steps=1", "train.epochs=1"]
                print(f"  real size round {round_index + 1}/{rounds}: {name}", flush=True)
                run_logged(command, runs / f"{run_name}.log", env)
                seconds = measured_seconds(runs / f"{run_name}.log", run_name, steps)
                rates[name].append((steps - 1) * batch / max(seconds, 1))
                shutil.rmtree(runs / run_name, ignore_errors=True)  # its checkpoint: the full trainable text tower
        recipe_rows = {}
        for name, found in rates.items():
            cached = variants[name] == "auto"
            recipe_rows[name] = {
                "samples_per_s": round(statistics.median(found), 3),
                "run_range": f"{min(found):.3f}-{max(found):.3f}",
                "cache_build_images_per_s": round(samples / pass_seconds, 3) if cached and pass_seconds else "",
                "cache_build_s": round(build_seconds, 1) if cached else "",
            }
        rows.update(with_ratios(recipe_rows, f"{recipe}, every tower run (baseline)", "samples_per_s"))
    return {
        "how": (
            f"clip_neg (ViT-L/14-336) and siglip_neg (ViT-L/16-384) at their real architectures with random weights "
            f"(model.pretrained=random: full size, no download), data.augment=false (our choice; the released profile crops), batch {batch}, fp32, "
            f"{workers} data worker and OMP_NUM_THREADS={env['OMP_NUM_THREADS']} on CPU, over shards of {samples} "
            f"samples, one epoch (the cache covers every sample of its shard folder). {rounds} alternating round"
            f"{'s' if rounds > 1 else ''} of {steps} steps; step 1 is warm-up, a run's rate is over steps 2-{steps} "
            "by its progress bar's elapsed seconds (metrics.jsonl rounds samples/s to 0.1, too coarse here), the "
            "median over runs is the figure. The cache is built once "
            "beforehand with python -m train.cache and is not part of any training rate: its images/s is over the "
            "image-feature pass (its progress bar's seconds), its seconds the whole build process including the "
            "model's construction. Each recipe's baseline is its own uncached row (cache=off)."
        ),
        "columns": {
            "samples_per_s": "samples/s (median run)",
            "run_range": "samples/s per run (min-max)",
            "cache_build_images_per_s": "cache build images/s",
            "cache_build_s": "cache build (s)",
        },
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------
# The loader's per-sample cost


@contextlib.contextmanager
def loader_path(decode_rgb, seeded_call):
    import train.data

    saved = train.data.decode_rgb, train.data.seeded_call
    train.data.decode_rgb, train.data.seeded_call = decode_rgb, seeded_call
    try:
        yield
    finally:
        train.data.decode_rgb, train.data.seeded_call = saved


OPEN_CLIP_LOADER = "open_clip_train's webdataset loader"


def bench_loader(shards: Path, *, rounds: int, batches: int = 6, batch: int = 64) -> dict:
    from legacy_loader import legacy_decode_rgb, legacy_seeded_call

    import train.data
    from models import build_model
    from models.config import ModelConfig
    from train.data import BatchPlan, Collate, ShardSamples, epoch_loader, index_shards, sample_seed

    bundle = build_model(ModelConfig(name="tiny-clip"))
    dataset = ShardSamples(index_shards([shards]), bundle.preprocess_train, "random", seed=0)
    collate = Collate(bundle.tokenizer, with_negatives=False)
    plan = BatchPlan(len(dataset), global_batch=batch, micro_batch=batch, world_size=1)
    paths = {
        "old per-sample path (baseline)": (legacy_decode_rgb, legacy_seeded_call),
        "train/data.py now": (train.data.decode_rgb, train.data.seeded_call),
    }
    same = []
    for i in range(16):  # the same pixels either way
        seed = sample_seed(0, 0, i)
        pixels = []
        for path in paths.values():
            with loader_path(*path):
                pixels.append(dataset.pixels(i, seed))
        same.append(torch.equal(*pixels))
    if not all(same):
        raise RuntimeError("the loader's old and new per-sample paths give different pixels")

    def load() -> float:
        """Seconds from the first batch (the worker is up) to the last, while the main process only waits."""
        stream = epoch_loader(dataset, plan, collate, epoch=0, rank=0, workers=1)
        next(stream)
        started = time.perf_counter()
        for _ in range(batches):
            next(stream)
        seconds = time.perf_counter() - started
        del stream  # shuts the worker down
        return seconds

    def load_open_clip() -> float:
        """The same for open_clip_train's webdataset loader (its training pipeline, 1 worker, same transform)."""
        import open_clip_trainer  # noqa: F401  (its eof_value fix, which the forked worker inherits)
        from open_clip_train.data import get_wds_dataset

        options = argparse.Namespace(
            train_data="::".join(sorted(str(p) for p in shards.glob("*.tar"))),
            train_num_samples=(batches + 1) * batch,
            dataset_resampled=False,
            train_data_upsampling_factors=None,
            seed=0,
            batch_size=batch,
            workers=1,
            world_size=1,
        )
        tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip_folder()}")
        info = get_wds_dataset(options, bundle.preprocess_train, is_train=True, tokenizer=tokenizer)
        stream = iter(info.dataloader)
        next(stream)  # also fills open_clip's 1000-sample shuffle buffer (undecoded bytes)
        started = time.perf_counter()
        for _ in range(batches):
            next(stream)
        seconds = time.perf_counter() - started
        del stream
        return seconds

    seconds = {name: 0.0 for name in [*paths, OPEN_CLIP_LOADER]}
    for round_index in range(rounds):
        for name in list(seconds) if round_index % 2 == 0 else list(reversed(seconds)):
            if name == OPEN_CLIP_LOADER:
                seconds[name] += load_open_clip()
                continue
            with loader_path(*paths[name]):  # before the worker forks: it inherits the path
                seconds[name] += load()
    samples = batches * batch * rounds
    rows = {
        name: {
            "samples": samples,
            "ms_per_sample": round(1000 * s / samples, 3),
            "samples_per_s": round(samples / s, 1),
        }
        for name, s in seconds.items()
    }
    return {
        "how": (
            f"train.data.epoch_loader with 1 worker (read the jpg and json members by offset, decode, seeded "
            f"random-resized crop to tiny-clip's 64 px, stack, tokenize, hand over), batches of {batch}, timed "
            f"from the first batch to the {batches + 1}th while the main process only waits, {rounds} alternating "
            "rounds. Both paths give the same pixels (checked). Old path: fork_rng + torch.manual_seed around each "
            "sample's transform, and a convert('RGB') copy. open_clip's row: its training pipeline (tar stream, "
            "shuffle buffer, decode, the same transform, per-sample tokenize, batch) with 1 worker, timed the same way."
        ),
        "columns": {"samples": "samples", "ms_per_sample": "ms/sample", "samples_per_s": "samples/s"},
        "rows": with_ratios(rows, "old per-sample path (baseline)", "samples_per_s"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Eval seconds per checkpoint, with and without reusing the locked image tower's features


def bench_eval(world: Path, shards: Path, scratch: Path, *, rounds: int = 2, steps: int = 3) -> dict:
    from eval.run import run_checkpoints, score_run

    runs = scratch / "eval-runs"
    overrides = ours_overrides(shards, runs, "run", steps=steps, every=1, batch=32, workers=0)
    overrides += ["train.checkpoint_every_steps=1", "optim.warmup_steps=1", *uncached_overrides()]
    run_logged([sys.executable, str(REPO / "train" / "finetune.py"), str(RECIPE), *overrides], scratch / "eval-run.log")
    run_dir = runs / "run"
    checkpoints = len(run_checkpoints(run_dir))
    variants = {"image features recomputed per checkpoint (baseline)": False, "image features reused": True}
    seconds = {name: 0.0 for name in variants}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # eval.run's default --cpu-threads
    try:
        with open(scratch / "eval.log", "w") as log, contextlib.redirect_stderr(log):
            for round_index in range(rounds):
                for name in list(variants) if round_index % 2 == 0 else list(reversed(variants)):
                    reuse = variants[name]
                    score = lambda reuse=reuse: score_run(  # noqa: E731
                        run_dir, data_root=world / "bench", force=True, reuse_image_features=reuse
                    )
                    seconds[name] += timed(score)[0]
    finally:
        torch.set_num_threads(threads)
    rows = {
        name: {
            "checkpoints": checkpoints * rounds,
            "seconds": round(s, 2),
            "seconds_per_checkpoint": round(s / (checkpoints * rounds), 3),
        }
        for name, s in seconds.items()
    }
    return {
        "how": (
            f"eval.run.score_run over a tiny-clip run's {checkpoints} checkpoints (starting weights and "
            f"{steps} steps, locked image tower) on every benchmark of the generated world, in-process, 1 torch "
            f"thread (eval.run's default), {rounds} alternating rounds, --force each time. Ratio: speed-up."
        ),
        "columns": {
            "checkpoints": "checkpoints scored",
            "seconds": "seconds",
            "seconds_per_checkpoint": "s/checkpoint",
        },
        "rows": with_ratios(
            rows, "image features recomputed per checkpoint (baseline)", "seconds_per_checkpoint", lower_is_better=True
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# Peak memory and time of an optimizer step: two-pass accumulation against one pass


def bench_accumulation(
    shards: Path, scratch: Path, *, rounds: int = 2, global_batch: int = 64, micro: int = 16, steps: int = 5
) -> dict:
    """tiny_clip_neg steps through train/finetune.py's Trainer (bench/gpu_check.py's worker), one fresh process per
    configuration and round: the process's peak RSS over its steps less its RSS before them is the step's memory
    (gradients, AdamW states, activations, the two-pass features), the same for every configuration but the batch."""
    from gpu_check import worker_command

    accumulation = global_batch // micro
    baseline = f"one pass, micro-batch {global_batch} (baseline)"
    single = f"one pass, micro-batch {micro} alone (global batch {micro})"
    variants = {
        baseline: (global_batch, global_batch),
        f"two passes, {accumulation} x {micro} (global batch {global_batch})": (micro, global_batch),
        single: (micro, micro),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    folder = scratch / "accumulation"
    folder.mkdir()
    found: dict[str, list[dict]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name in list(variants) if round_index % 2 == 0 else list(reversed(variants)):
            micro_batch, batch = variants[name]
            tag = f"{micro_batch}x{batch // micro_batch}-{round_index}"
            spec = {
                "name": tag,
                "recipe": str(REPO / "recipes" / "tiny_clip_neg.yaml"),
                "overrides": [
                    f"data.shards=[{shards}]",
                    f"output_dir={folder / 'runs'}",
                    f"run_name={tag}",
                    "wandb.mode=disabled",
                    "cache=off",
                    "data.workers=0",
                    f"data.batch_size={micro_batch}",
                    f"train.global_batch_size={batch}",
                    "optim.warmup_steps=1",
                    f"train.max_steps={steps + 1}",
                ],
                "timed_steps": steps,
                "count_flops": True,
                "run_dir": str(folder / tag),
                "result": str(folder / f"{tag}.json"),
            }
            (folder / f"{tag}.spec.json").write_text(json.dumps(spec))
            print(f"  accumulation round {round_index + 1}/{rounds}: {name}", flush=True)
            run_logged(worker_command(folder / f"{tag}.spec.json"), folder / f"{tag}.log", env)
            found[name].append(json.loads((folder / f"{tag}.json").read_text()))
    rows = {}
    for name, records in found.items():
        compute = [s - w for r in records for s, w in zip(r["step_seconds"], r["data_wait_seconds"], strict=True)]
        parts = records[0]["estimate_parts"]
        rows[name] = {
            "step_mib": round(statistics.median(_mib(r["peak_rss_bytes"] - r["rss_before_steps_bytes"]) for r in records), 1),
            "peak_rss_mib": round(statistics.median(_mib(r["peak_rss_bytes"]) for r in records), 1),
            "estimate_mib": round(_mib(parts["activations"] + parts["two_pass_features"]), 1),
            "compute_ms": round(1000 * statistics.median(compute), 1),
            "model_gflop": round((records[0]["hardware_flops_per_step"] - records[0]["recompute_flops_per_step"]) / 1e9, 2),
            "recompute_gflop": round(records[0]["recompute_flops_per_step"] / 1e9, 2),
        }  # fmt: skip
    for row in rows.values():
        row["memory_vs_one_pass"] = f"{row['step_mib'] / rows[baseline]['step_mib']:.2f}x"
        row["memory_vs_one_micro_batch"] = f"{row['step_mib'] / rows[single]['step_mib']:.2f}x"
        row["time_vs_one_pass"] = f"{row['compute_ms'] / rows[baseline]['compute_ms']:.2f}x"
    return {
        "how": (
            f"tiny_clip_neg (tiny-clip, image tower locked, trainable text tower, NegCLIP with hard negatives), "
            f"fp32 on CPU, cache=off, 1 torch thread, no data workers; {steps} timed optimizer steps of "
            f"train/finetune.py's Trainer.step after one warm-up step, each configuration in a fresh process "
            f"(bench/gpu_check.py --worker), {rounds} alternating rounds, medians. Step memory: the process's peak RSS "
            "(ru_maxrss) less its RSS just before the first step: gradients and AdamW states (the same in every row), "
            "activations and, with accumulation, the features of the global batch kept between the passes. Estimate: "
            "models/memory.py's activations (+ two-pass features) for the row's micro-batch. Compute: step time less "
            "data wait (decode and transform run in the step's process here). Model GFLOP per step counted with "
            "FlopCounterMode, less the gradient-free first pass (the recompute column). Ratio: speed against the "
            "one-pass step (> 1 is faster)."
        ),
        "columns": {
            "step_mib": "step memory (MiB)",
            "memory_vs_one_pass": "vs one pass of 64",
            "memory_vs_one_micro_batch": f"vs one micro-batch of {micro}",
            "estimate_mib": "estimated activations + features (MiB)",
            "peak_rss_mib": "peak RSS (MiB)",
            "compute_ms": "compute ms/step",
            "time_vs_one_pass": "time vs one pass",
            "model_gflop": "model GFLOP/step",
            "recompute_gflop": "recompute GFLOP/step",
        },
        "rows": with_ratios(rows, baseline, "compute_ms", lower_is_better=True),
    }


def bench_test_suite() -> dict:
    """Wall time of `make test` (everything but the system tier) and of the system tier alone, as make runs them."""
    rows = {}
    # as make test does first: the system tier's SLURM tests need Debian's slurm and munge (installed as root)
    subprocess.run(["make", "-s", "system-deps"], cwd=REPO, capture_output=True, text=True)
    for label, marker in (("make test (-m 'not system')", "not system"), ("system tier (-m system)", "system")):
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "-m", marker]
        seconds, done = timed(lambda args=args: subprocess.run(args, cwd=REPO, capture_output=True, text=True))
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        rows[label] = {"seconds": round(seconds, 1), "minutes": round(seconds / 60, 1), "summary": summary}
    total = sum(r["seconds"] for r in rows.values())
    rows["make test-all (both)"] = {"seconds": round(total, 1), "minutes": round(total / 60, 1), "summary": ""}
    for row in rows.values():
        row["ratio_vs_baseline"] = round(row["seconds"] / total, 2)
    return {
        "how": "pytest -n 2 on this machine, each tier in a fresh process; the README's test command is `make test`, "
        "CI runs both (make test-all). ratio: share of the whole suite's time.",
        "columns": {"minutes": "minutes", "summary": "pytest summary"},
        "rows": rows,
    }


def _mib(n: int) -> float:
    return n / 1024**2


# ---------------------------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = [
        f"# Benchmarks ({results['machine']})",
        "",
        f"Load average (1 min) at start and end: {results['load_average'][0]} and {results['load_average'][1]} "
        "(other processes on the machine share its cores). Every ratio is against the baseline row of its table, "
        "measured in the same run; > 1 is better.",
        "",
    ]
    for name, bench in results["benchmarks"].items():
        columns = bench["columns"]
        lines += [f"## {name}", "", bench["how"], ""]
        lines.append("| variant | " + " | ".join(columns.values()) + " | ratio vs baseline |")
        lines.append("|---" * (len(columns) + 2) + "|")
        for variant, row in bench["rows"].items():
            cells = [str(row.get(key, "–")) for key in columns]
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {row['ratio_vs_baseline']}x |")
        lines.append("")
    return "\n".join(lines)


BENCHES = (
    "build_shards", "training", "cache", "loader", "eval", "accumulation", "negatives", "real_size", "llava", "threads",
    "cache_verify", "tests", "negative_rows",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium"), help="generated world size")
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of the training comparison")
    parser.add_argument(
        "--only", action="append", choices=BENCHES, help="run these benchmarks; the others keep their results.json rows"
    )
    parser.add_argument(
        "--quick", action="store_true", help="shrink the real-size benchmark for CI: 1 round of 3 steps over 6 samples"
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or BENCHES)
    scratch = Path(tempfile.mkdtemp(prefix="clipablate-bench-"))
    load_start = round(os.getloadavg()[0], 2)
    batch = 64 if args.scale == "medium" else 16
    try:
        world = scratch / "world"
        benchmarks = {}
        if chosen - {"real_size", "negatives", "llava", "cache_verify", "tests", "negative_rows"}:  # no world needed
            print(f"generating a {args.scale} world in {scratch} ...", flush=True)
            generate(world, seed=0, scale=args.scale)
            print("build_shards ...", flush=True)  # it writes the shards every benchmark below reads
            shards_bench = bench_build_shards(world, scratch)
            if "build_shards" in chosen:
                benchmarks["build_shards (LCS-558K + DataMix-665K format)"] = shards_bench
        shards = scratch / "ours-2"  # the shards build_shards just wrote, used by every benchmark below
        if "training" in chosen:
            print("training throughput ...", flush=True)
            benchmarks["Training samples/s: ours against open_clip's trainer"] = bench_training(
                shards, scratch, rounds=args.rounds, batch=batch
            )
        if "cache" in chosen:
            print("training from the feature cache ...", flush=True)
            benchmarks["Training samples/s: feature cache against every tower run"] = bench_cache(
                shards, scratch, rounds=max(2, args.rounds // 2), batch=batch
            )
        if "loader" in chosen:
            print("loader per-sample cost ...", flush=True)
            benchmarks["Training loader, per-sample cost"] = bench_loader(shards, rounds=2 * args.rounds)
        if "eval" in chosen:
            print("eval with and without image-feature reuse ...", flush=True)
            benchmarks["Eval seconds per checkpoint"] = bench_eval(world, shards, scratch)
        if "accumulation" in chosen:
            print("peak memory and time of a step: two-pass accumulation against one pass ...", flush=True)
            benchmarks["Optimizer step: two-pass accumulation against one pass"] = bench_accumulation(shards, scratch)
        if "negatives" in chosen:
            from negatives_speed import bench_negatives  # bench/ is on sys.path: this file runs as a script

            print("hard negatives per second on long GPT-style answers ...", flush=True)
            benchmarks["Hard negatives per second on long GPT-style answers"] = bench_negatives()
        if "llava" in chosen:
            from llava_speed import bench_llava  # bench/ is on sys.path: this file runs as a script

            print("LLaVA eval examples/s, batched against one at a time ...", flush=True)
            benchmarks["LLaVA eval examples/s: batched against one at a time"] = bench_llava(rounds=2)
        if "threads" in chosen:
            from threads_speed import bench_threads  # bench/ is on sys.path: this file runs as a script

            print("training steps/s beside a busy process: default threads against hand-set ...", flush=True)
            benchmarks["Training beside a busy process: default CPU threads against hand-set"] = bench_threads(shards)
        if "cache_verify" in chosen:
            from cache_verify_speed import bench_cache_verify  # bench/ is on sys.path: this file runs as a script

            print("feature-cache checksums on open against one pass over the rows ...", flush=True)
            benchmarks["Feature cache: checksums on every open against one pass over its rows"] = bench_cache_verify()
        if "negative_rows" in chosen:
            from negative_rows_speed import bench_negative_rows  # bench/ is on sys.path: this file runs as a script

            print("hard-negative recipes at real width: 2B texts against B + k ...", flush=True)
            benchmarks["Hard-negative step at real width: copies of the caption against real negatives only"] = (
                bench_negative_rows()
            )
        if "tests" in chosen:
            print("the test suite: make test and the system tier ...", flush=True)
            benchmarks["Test suite wall time (2 xdist workers)"] = bench_test_suite()
        if "real_size" in chosen:
            print("training at real size (random weights, CPU) ...", flush=True)
            quick = {"rounds": 1, "steps": 3} if args.quick else {"rounds": 2, "steps": 5}
            benchmarks["Training at real size (random weights, CPU)"] = bench_real_size(scratch, **quick)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU used, torch {torch.__version__}, "
        f"open_clip_torch {open_clip.__version__}, {platform.python_implementation()} {platform.python_version()}",
        "load_average": [load_start, round(os.getloadavg()[0], 2)],
        "scale": args.scale,
        "code": code_version(),
        "benchmarks": benchmarks,
    }
    previous = args.out / "results.json"
    if args.only and previous.exists():  # keep the other benchmarks' last results, in their order
        kept = json.loads(previous.read_text())
        results["benchmarks"] = {**kept["benchmarks"], **benchmarks}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
