"""launch/: sweep files, grid expansion and names, skip/resume decisions, slurm scripts (dry run), the local
backend on the tiny grid end to end, and the report against the runs' own eval files."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import built_once

from eval.report import read_result
from eval.table5 import COLUMNS
from launch.grid import expand, override_text, render_name, safe_piece
from launch.plan import plan_sweep
from launch.run_state import Action, RunState, run_status
from launch.sweep_config import load_sweep
from train.config import load_recipe
from train.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "launch" / "sweeps"
PAPER_TABLE5 = [
    "clip_finetune", "clip_neg", "clip_llm2vec", "clip_llm2vec_neg",
    "siglip_finetune", "siglip_neg", "siglip_llm2vec", "siglip_llm2vec_neg",
]  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


def sweep_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launch.sweep", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env(), timeout=timeout)


# --- sweep files and expansion ---------------------------------------------------------------------------------


def test_grid_is_a_product_and_zip_goes_row_by_row(tmp_path):
    spec = load_sweep(
        write(
            tmp_path,
            """
            recipes: [tiny_clip_finetune, tiny_clip_neg]
            grid: {seed: [0, 1, 2], optim.lr: [1e-4, 5e-5]}
            zip: {optim.warmup_steps: [1, 2], train.max_steps: [10, 20]}
            """,
        )
    )
    combos = expand(spec)
    assert len(combos) == 2 * 3 * 2 * 2
    assert [c.index for c in combos] == list(range(len(combos)))
    first = dict(combos[0].values)
    assert combos[0].recipe == "tiny_clip_finetune" and first == {
        "seed": 0, "optim.lr": "1e-4", "optim.warmup_steps": 1, "train.max_steps": 10,
    }  # fmt: skip
    # zip keys move together (never warmup 1 with 20 steps), and vary fastest
    pairs = {(dict(c.values)["optim.warmup_steps"], dict(c.values)["train.max_steps"]) for c in combos}
    assert pairs == {(1, 10), (2, 20)}
    assert dict(combos[1].values)["train.max_steps"] == 20 and dict(combos[2].values)["optim.lr"] == "5e-5"
    assert [c.recipe for c in combos].count("tiny_clip_neg") == 12


def test_run_names_are_deterministic_unique_and_file_name_safe(tmp_path):
    path = write(
        tmp_path,
        """
        name: names
        recipes: [tiny_clip_finetune, tiny_clip_neg]
        grid: {optim.lr: [1e-4, 5e-5]}
        zip: {seed: [0, 1], data.shards: [[a/b], [c d]]}
        """,
    )
    spec = load_sweep(path)
    cli = ["data.workers=0"]
    first = plan_sweep(spec, path, tmp_path / "out", cli)
    again = plan_sweep(load_sweep(path), path, tmp_path / "out", cli)
    names = [r.name for r in first.runs]
    assert names == [r.name for r in again.runs]
    assert len(set(names)) == len(names) == 8
    assert names[0] == "tiny_clip_finetune-lr1e-4-seed0-shardsa_b"  # the default template: every varied key
    assert names[3] == "tiny_clip_finetune-lr5e-5-seed1-shardsc_d"
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) for n in names)
    run = first.runs[0]
    assert run.cfg.run_name == run.name and run.cfg.wandb.group == "names" and run.cfg.train.resume == "latest"
    assert run.cfg.optim.lr == 1e-4 and run.cfg.data.shards == ("a/b",) and run.cfg.data.workers == 0
    assert run.run_dir == tmp_path / "out" / run.name
    # an explicit template may use resolved recipe values that the sweep does not set
    assert render_name("{recipe}-bs{train.global_batch_size}", {"recipe": "x", "train.global_batch_size": "64"}.get)[0]
    assert safe_piece("[demo_out/shards]") == "demo_out_shards" and override_text([1, "a"]) == "[1, a]"


def test_a_bad_sweep_file_reports_every_problem_with_its_key_path(tmp_path):
    path = write(
        tmp_path,
        """
        recipies: [tiny_clip_neg]
        run_name: "{recipe}"
        overrides: {run_name: x, optim.lr: 1e-4}
        grid: {seed: 3, optim.lr: [1, 2]}
        zip: {optim.warmup_steps: [1, 2], train.max_steps: [10]}
        resources: {gpus_per_run: -1, nodes: 0}
        slurm: {signal_seconds: 5, extra_sbatch: [exclusive]}
        eval: {benchmarks: [whatsup_c]}
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    text = str(err.value)
    for expected in [
        "recipies: unknown key; did you mean 'recipes'?",
        "recipes: at least one recipe is required",
        "overrides.run_name: set by the sweep",
        "grid.seed: expected a non-empty list of values, got 3",
        "zip: lists must have the same length (optim.warmup_steps: 2, train.max_steps: 1)",
        "grid.optim.lr: also set in overrides",
        "resources.gpus_per_run: must be >= 0",
        "resources.nodes: must be >= 1",
        "slurm.signal_seconds: must be >= 30",
        "slurm.extra_sbatch[0]",
        "eval.benchmarks[0]: 'whatsup_c' is not a valid choice",
    ]:
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert len(err.value.problems) == 11


def test_bad_recipe_keys_and_names_are_found_before_anything_runs(tmp_path):
    path = write(
        tmp_path,
        """
        name: bad
        recipes: [tiny_clip_neg, no_such_recipe]
        run_name: "{recipe}-{optim.lrr}"
        grid: {optim.lrr: [1, 2], data.batch_size: [-1]}
        """,
    )
    with pytest.raises(ConfigError) as err:
        plan_sweep(load_sweep(path), path, tmp_path / "out", ["train.epochz=1", "output_dir=/x"])
    text = str(err.value)
    assert "grid.optim.lrr: unknown key; did you mean 'optim.lr'?" in text  # each problem once, naming its runs
    assert text.count("optim.lrr: unknown key") == 1
    assert "[tiny_clip_neg optim.lrr=1 data.batch_size=-1, tiny_clip_neg optim.lrr=2 data.batch_size=-1]" in text
    assert "grid.data.batch_size: must be > 0, or 0 for auto" in text
    assert "command line: train.epochz: unknown key; did you mean 'train.epochs'?" in text
    assert "command line: output_dir is set by the sweep" in text
    assert "no_such_recipe.yaml: recipe file not found" in text

    same = write(tmp_path, "recipes: [tiny_clip_neg]\nrun_name: fixed\ngrid: {seed: [0, 1]}\n", "same.yaml")
    with pytest.raises(ConfigError, match=r"names 2 runs 'fixed'; put the keys that vary \(seed\) in it"):
        plan_sweep(load_sweep(same), same, tmp_path / "out")
    unknown = write(tmp_path, "recipes: [tiny_clip_neg]\nrun_name: '{recipe}-{nope}'\n", "unknown.yaml")
    with pytest.raises(ConfigError, match=r"unknown placeholder \{nope\}"):
        plan_sweep(load_sweep(unknown), unknown, tmp_path / "out")
    batch = write(tmp_path, "recipes: [tiny_clip_neg]\nresources: {gpus_per_run: 0, cpu_processes: 3}\n", "b.yaml")
    with pytest.raises(ConfigError, match=r"global_batch_size 64 is not a multiple of data.batch_size 32 x 3"):
        plan_sweep(load_sweep(batch), batch, tmp_path / "out")


def test_every_shipped_sweep_plans(tmp_path):
    for path in sorted(SWEEPS.glob("*.yaml")):
        spec = load_sweep(path)
        plan = plan_sweep(spec, path, tmp_path / spec.name)
        assert plan.runs, path
    table5 = plan_sweep(load_sweep(SWEEPS / "paper_table5.yaml"), SWEEPS / "paper_table5.yaml", tmp_path / "t5")
    assert [r.name for r in table5.runs] == PAPER_TABLE5
    unlocked = load_sweep(SWEEPS / "paper_unlocked.yaml")
    assert all("unlocked" in r for r in unlocked.recipes) and len(unlocked.recipes) == 4


# --- skip / resume ------------------------------------------------------------------------------------------------


def fake_checkpoint(run_dir: Path, name: str, step: int) -> None:
    folder = run_dir / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "position": {"step": step}}))
    (run_dir / "checkpoints" / "latest").write_text(name)


def fake_results(
    run_dir: Path, checkpoint: str, benchmarks: list[str], mode: str = "paper", metrics: dict | None = None
) -> None:
    folder = run_dir / "eval" / checkpoint
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"indiv": 51.0} if metrics is None else metrics
    for benchmark in benchmarks:
        record = {"metrics": metrics, "chance": {"indiv": 50.0}, "step": 0, "label_fixes": {"mode": mode}}
        (folder / f"{benchmark}.json").write_text(json.dumps(record))


def test_the_state_of_a_run_decides_skip_eval_or_resume(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "sizes.json").write_text(json.dumps({"a-000000.tar": 256, "a-000001.tar": 188}))  # 444 samples
    overrides = [f"data.shards=[{shards}]", f"output_dir={tmp_path}", "run_name=r", "train.resume=latest"]
    cfg = load_recipe(ROOT / "recipes" / "tiny_clip_neg.yaml", overrides)  # 444 // 64 = 6 steps/epoch x 3 epochs
    bench = ["whatsup_a", "coco_spatial_one"]
    run_dir = tmp_path / "r"

    status = run_status(cfg, bench)
    assert (status.state, status.action, status.total_steps) == (RunState.NEW, Action.TRAIN, 18)
    run_dir.mkdir()  # a start that died before its first checkpoint is still new
    (run_dir / "config.yaml").write_text("{}")
    assert run_status(cfg, bench).action == Action.TRAIN
    fake_checkpoint(run_dir, "epoch_1", 6)
    status = run_status(cfg, bench)
    assert (status.state, status.action, status.step) == (RunState.PARTIAL, Action.RESUME, 6)
    fake_checkpoint(run_dir, "epoch_3", 18)
    status = run_status(cfg, bench)
    assert (status.state, status.action) == (RunState.TRAINED, Action.EVAL)
    assert status.missing_results == 3 * 2  # step_0, epoch_1, epoch_3 x 2 benchmarks
    for checkpoint in ("step_0", "epoch_1", "epoch_3"):
        fake_results(run_dir, checkpoint, bench)
    status = run_status(cfg, bench)
    assert (status.state, status.action, status.missing_results) == (RunState.DONE, Action.SKIP, 0)
    assert run_status(cfg, [*bench, "mmvp_vlm"]).action == Action.EVAL  # asked for one more benchmark
    fake_results(run_dir, "epoch_1", ["whatsup_a"], metrics={})  # a result file without a single metric
    status = run_status(cfg, bench)
    assert (status.state, status.action, status.missing_results) == (RunState.TRAINED, Action.EVAL, 1)
    record = json.loads((run_dir / "eval" / "epoch_1" / "whatsup_a.json").read_text())
    del record["metrics"]  # or none at all
    (run_dir / "eval" / "epoch_1" / "whatsup_a.json").write_text(json.dumps(record))
    assert run_status(cfg, bench).missing_results == 1
    fake_results(run_dir, "epoch_1", ["whatsup_a"])
    assert run_status(cfg, bench).action == Action.SKIP
    fake_results(run_dir, "epoch_3", ["whatsup_a"], mode="none")  # scored without the paper's label fixes
    assert run_status(cfg, bench).missing_results == 1
    assert run_status(cfg, bench, evaluate=False).action == Action.SKIP
    # max_steps caps the total; unknown shard sizes mean "resume and let finetune decide"
    assert run_status(load_recipe(ROOT / "recipes" / "tiny_clip_neg.yaml", [*overrides, "train.max_steps=8"]),
                      bench).total_steps == 8  # fmt: skip
    unknown = load_recipe(ROOT / "recipes" / "tiny_clip_neg.yaml", [*overrides[1:], f"data.shards=[{tmp_path}/x]"])
    assert run_status(unknown, bench).action == Action.RESUME


# --- slurm scripts (dry run) ----------------------------------------------------------------------------------------


def split_scripts(output: str) -> list[str]:
    parts = re.split(r"^# ---- .*$", output, flags=re.M)[1:]
    return [p.strip() + "\n" for p in parts]


def test_paper_table5_dry_run_prints_eight_runs_with_the_paper_hyperparameters(tmp_path):
    out = tmp_path / "t5"
    result = sweep_cli("launch/sweeps/paper_table5.yaml", "--backend", "slurm", "--dry-run", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert not out.exists()  # a dry run writes nothing
    train, evaluate = split_scripts(result.stdout)
    for i, recipe in enumerate(PAPER_TABLE5):
        assert f"    {i})\n" in train
        line = next(x for x in train.splitlines() if x.strip().startswith(f"# {recipe}:"))
        for expected in ("lr=5e-06", "warmup_steps=50", "schedule=cosine", "epochs=5", "global_batch=512 (128/process"):
            assert expected in line, line
        assert f"ARGS=(recipes/{recipe}.yaml wandb.group=paper_table5 run_name={recipe} output_dir={out} " in train
        assert f"RUN_NAME={recipe}\n" in evaluate
    assert "#SBATCH --array=0-7\n" in train and "#SBATCH --gpus-per-node=4\n" in train
    for expected in (
        "#SBATCH --signal=B:USR1@180",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --time=24:00:00",
        "train.resume=latest",
        "trap on_usr1 USR1",
        'scancel --signal=TERM "$SLURM_JOB_ID"',
        'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        "accelerate.commands.launch --config_file launch/accelerate/multi_gpu_bf16.yaml",
        '--num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_HOST"',
        "--num_processes 4",
        'MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    ):
        assert expected in train, expected
    assert "sbatch --dependency=aftercorr:<training job id>" in result.stdout
    assert "#SBATCH --kill-on-invalid-dep=yes" in evaluate and "-m eval.run --run" in evaluate
    for script in (train, evaluate):
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_multi_node_and_cpu_scripts(tmp_path):
    result = sweep_cli(
        "paper_unlocked", "--backend", "slurm", "--dry-run", "--output-dir", str(tmp_path / "u"),
        "--nodes", "2", "--gpus-per-run", "8", "--partition", "gpu", "--time", "2-00:00:00",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = split_scripts(result.stdout)[0]
    assert "#SBATCH --nodes=2\n" in train and "#SBATCH --gpus-per-node=4\n" in train
    assert "#SBATCH --partition=gpu\n" in train and "#SBATCH --time=2-00:00:00\n" in train
    assert "--num_processes 8" in train and '--nodes="$SLURM_NNODES"' in train
    assert "global_batch=512 (auto/process x 8 x ?)" in train  # the unlocked recipes: the trainer fits it
    assert "#SBATCH --signal=B:USR1@300" in train  # the sweep file's own setting

    cpu = sweep_cli("tiny_grid", "--backend", "slurm", "--dry-run", "--output-dir", str(tmp_path / "c"))
    train = split_scripts(cpu.stdout)[0]
    assert "--gpus-per-node" not in train and "accelerate" not in train  # one CPU process: no launcher
    assert "srun --nodes=1 --ntasks-per-node=1" in train and "train/finetune.py" in train
    two = sweep_cli("tiny_grid", "--backend", "slurm", "--dry-run", "--cpu-processes", "2", "--output-dir", "x")
    assert "--config_file launch/accelerate/cpu_2proc.yaml" in two.stdout and "--num_processes 2" in two.stdout

    bad = sweep_cli("paper_table5", "--backend", "slurm", "--dry-run", "--nodes", "3", "--gpus-per-run", "4")
    assert bad.returncode == 2 and "4 GPUs do not split over 3 nodes" in bad.stderr


# --- local backend, end to end ------------------------------------------------------------------------------------

TINY_SETTINGS = ["train.epochs=1", "train.checkpoint_every_steps=5"]  # 10 steps: step_5 and epoch_1


@pytest.fixture(scope="module")
def tiny_sweep(world, world_shards, tmp_path_factory):
    """The shipped tiny grid (4 runs) through the local backend, on the session's generated world: trained once per
    test run, shared by the xdist workers. Tests copy a run before changing it; the two that write into the folder
    (a no-op rerun rewriting the manifest atomically, a report beside it) write nothing another test reads."""
    overrides = [f"data.shards=[{world_shards}]", f"eval.data_root={world / 'bench'}", *TINY_SETTINGS]

    def build(folder: Path) -> None:
        result = sweep_cli("launch/sweeps/tiny_grid.yaml", "--backend", "local", "--output-dir",
                           str(folder / "tiny_grid"), *overrides)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (folder / "sweep.stdout").write_text(result.stdout)

    folder = built_once(tmp_path_factory, "tiny_sweep", build)
    return folder / "tiny_grid", overrides, (folder / "sweep.stdout").read_text()


@pytest.mark.system
def test_local_backend_trains_and_evaluates_the_tiny_grid(tiny_sweep):
    out, overrides, stdout = tiny_sweep
    names = ["tiny_clip_finetune-seed0", "tiny_clip_finetune-seed1", "tiny_clip_neg-seed0", "tiny_clip_neg-seed1"]
    assert "[4/4] tiny_clip_neg-seed1: done" in stdout
    assert f"log: {out / 'logs' / 'tiny_clip_neg-seed1'}.{{train,eval}}.log" in stdout  # where to look, per run
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == names
    assert {r["state_after"] for r in manifest["runs"]} == {"done"} and manifest["wandb_group"] == "tiny_grid"
    assert "train.resume=latest" in manifest["runs"][0]["train_command"]
    assert (out / "manifest.md").read_text().count("| done |") == 4
    for name in names:
        run = out / name
        assert (run / "checkpoints" / "latest").read_text() == "epoch_1"
        for checkpoint in ("step_0", "step_5", "epoch_1"):
            assert read_result(run / "eval" / checkpoint, "whatsup_a") is not None, (name, checkpoint)
        assert (run / "eval" / "summary.csv").exists() and (out / "logs" / f"{name}.train.log").exists()

    again = sweep_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), *overrides)
    assert again.returncode == 0 and "every run is trained and evaluated; nothing to do" in again.stdout
    # --status without the overrides: the manifest's (the shards it was launched on), so every run reads as done
    status = sweep_cli("launch/sweeps/tiny_grid.yaml", "--status", "--output-dir", str(out))
    assert status.returncode == 0 and "the overrides of its last launch" in status.stdout
    assert all(re.search(rf"{name} .*\bskip\b", status.stdout) for name in names), status.stdout
    assert all(len((out / n / "starts.jsonl").read_text().splitlines()) == 1 for n in names)


@pytest.mark.system
def test_a_rerun_resumes_unfinished_runs_and_evaluates_unscored_ones(tiny_sweep, tmp_path):
    source, overrides, _ = tiny_sweep
    out = tmp_path / "tiny_grid"
    for name in ("tiny_clip_finetune-seed0", "tiny_clip_neg-seed0"):  # a copy: the fixture's runs stay intact
        shutil.copytree(source / name, out / name)
        config = out / name / "config.yaml"
        config.write_text(config.read_text().replace(str(source), str(out)))  # its output_dir is the copy's
    interrupted = out / "tiny_clip_finetune-seed0"  # as if stopped at step 5, before any eval
    for folder in ("checkpoints/epoch_1", "checkpoints/step_10", "eval"):
        shutil.rmtree(interrupted / folder)
    (interrupted / "checkpoints" / "latest").write_text("step_5")
    unscored = out / "tiny_clip_neg-seed0"  # trained, one result missing
    (unscored / "eval" / "epoch_1" / "coco_spatial_two.json").unlink()

    status = sweep_cli("launch/sweeps/tiny_grid.yaml", "--status", "--output-dir", str(out), *overrides)
    assert re.search(r"tiny_clip_finetune-seed0 .* partial \(step 5/10\)\s+resume", status.stdout), status.stdout
    assert re.search(r"tiny_clip_neg-seed0 .* trained \(step 10/10, 1 results missing\)\s+eval", status.stdout)
    assert re.search(r"tiny_clip_neg-seed1 .* new \(step 0/10\)\s+train", status.stdout)

    # the same sweep with seed 0 only (same name, so the same W&B group and configs)
    text = (SWEEPS / "tiny_grid.yaml").read_text()
    sweep = write(tmp_path, text.replace("seed: [0, 1]", "seed: [0]"), "seed0.yaml")
    result = sweep_cli(str(sweep), "--output-dir", str(out), *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny_clip_finetune-seed0: resume" in result.stdout and "tiny_clip_neg-seed0: eval" in result.stdout
    assert len((interrupted / "starts.jsonl").read_text().splitlines()) == 2
    train_log = (out / "logs" / "tiny_clip_finetune-seed0.train.log").read_text()
    assert f"resumed from {interrupted / 'checkpoints' / 'step_5'} at step 5" in train_log
    assert (interrupted / "checkpoints" / "latest").read_text() == "epoch_1"
    assert read_result(interrupted / "eval" / "epoch_1", "gqa_spatial_two") is not None
    assert len((unscored / "starts.jsonl").read_text().splitlines()) == 1  # evaluated, not trained again
    assert read_result(unscored / "eval" / "epoch_1", "coco_spatial_two") is not None
    assert not (out / "logs" / "tiny_clip_neg-seed0.train.log").exists()


# --- report ---------------------------------------------------------------------------------------------------------


def report_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "launch.report", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env(), timeout=300)


@pytest.mark.system
def test_the_report_matches_the_eval_files_number_for_number(tiny_sweep):
    out, _, _ = tiny_sweep
    result = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    every = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["row"], r["kind"], r["n"]) for r in every] == [
        ("tiny-clip (starting weights)", "start", ""),
        ("+ finetuning (tiny_clip_finetune, n=2)", "mean", "2"),
        ("+ neg. cap. (tiny_clip_neg, n=2)", "mean", "2"),
        ("Random chance", "chance", ""),
        ("+ finetuning (tiny_clip_finetune-seed0)", "seed", "1"),
        ("+ finetuning (tiny_clip_finetune-seed1)", "seed", "1"),
        ("+ neg. cap. (tiny_clip_neg-seed0)", "seed", "1"),
        ("+ neg. cap. (tiny_clip_neg-seed1)", "seed", "1"),
    ]
    for r in every[4:]:  # real runs: measured device-hours (1 CPU process each) next to a positive estimate
        assert r["devices"] == "1" and r["starts"] == "1", r
        assert 0 < float(r["gpu_hours_used"]) < 0.5 and float(r["gpu_hours_estimate"]) > 0, r
    rows = [r for r in every if r["kind"] != "mean"]
    text = (out / "report.md").read_text()
    checked = 0
    for row in rows:
        per_seed = text.split("## Per seed")[1] if row["kind"] == "seed" else text
        md_cells = next(x for x in per_seed.splitlines() if x.startswith(f"| {row['row']} |")).split(" | ")[1:]
        for c, (header, benchmark, metric) in enumerate(COLUMNS):
            if row["row"] == "Random chance":
                expected = read_result(out / "tiny_clip_finetune-seed0" / "eval" / "epoch_1", benchmark)["chance"]
            else:
                folder = Path(row["source"])
                assert folder.name in (("step_0",) if "starting" in row["row"] else ("epoch_1", "step_10"))
                expected = read_result(folder, benchmark)["metrics"]
            assert row[header] == f"{expected[metric]:.4f}", (row["row"], header)
            assert md_cells[c].strip(" |") == f"{expected[metric]:.1f}", (row["row"], header)
            checked += 1
    assert checked == 6 * 8
    for png in ("bars.png", "accuracy_by_epoch.png", "tiny_clip_neg-seed1.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
        assert f"plots/{png}" in text


MLLM_TABLES = "beside_mllms/paper_tables.md"


@pytest.mark.system
def test_report_sets_mllm_rows_beside_the_runs_in_the_paper_layouts(tiny_sweep, tmp_path):
    """--mllm LABEL=FOLDER: any eval result folder (here a copy of one run's last checkpoint, so the expected numbers
    are known) becomes a row of the Table 1/2/3 layouts beside every run's last checkpoint."""
    out, _, _ = tiny_sweep
    import shutil

    final = out / "tiny_clip_neg-seed1" / "eval" / "epoch_1"
    mllm = tmp_path / "mllm"
    shutil.copytree(final, mllm)
    bad = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), "--out", str(tmp_path / "r0"),
                     "--mllm", "nolabel", "--mllm", f"empty={tmp_path}")  # fmt: skip
    assert bad.returncode == 2
    assert "'nolabel': expected LABEL=FOLDER" in bad.stderr and "holds no <benchmark>.json results" in bad.stderr
    report = tmp_path / "r1"
    result = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), "--out", str(report),
                        "--mllm", f"a copy={mllm}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (report / "report.md").read_text()
    section = text.split("## Beside MLLMs")[1]
    table1 = section.split("### Table 1")[1].split("### ")[0]
    lines = {x.split(" | ")[0].strip("| "): x for x in table1.splitlines() if x.startswith("| ")}
    copied = next(v for k, v in lines.items() if "tiny_clip_neg-seed1" in k)
    assert lines["a copy"].split(" | ")[1:] == copied.split(" | ")[1:]
    assert "random chance" in lines and "tiny-clip (starting weights)" in lines
    summary = list(csv.DictReader((report / "beside_mllms" / "summary.csv").open()))
    names = [r["checkpoint"] for r in summary]
    assert names[-2:] == ["a copy", "chance"] and len(names) == 1 + 4 + 2  # start, 4 runs, the MLLM, chance
    assert "not comparable" not in text
    # A result scored on other benchmark files is named, never set silently beside the others.
    record = json.loads((mllm / "whatsup_a.json").read_text())
    record["files"][0]["sha256"] = "0" * 64
    (mllm / "whatsup_a.json").write_text(json.dumps(record))
    result = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), "--out", str(report),
                        "--mllm", f"a copy={mllm}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    warning = "whatsup_a: the rows were scored on different benchmark files (sha256 differ):"
    assert f"not comparable: {warning}" in result.stderr
    assert warning in (report / "report.md").read_text() and warning in (report / MLLM_TABLES).read_text()


@pytest.mark.system
def test_missing_results_are_shown_as_missing_never_zero(tiny_sweep, tmp_path):
    out, _, _ = tiny_sweep
    partial = tmp_path / "partial"
    shutil.copytree(out / "tiny_clip_neg-seed0", partial)
    for benchmark in ("whatsup_a", "gqa_spatial_two"):  # from the last checkpoints (step 10: epoch_1 = step_10)
        for checkpoint in ("epoch_1", "step_10"):
            (partial / "eval" / checkpoint / f"{benchmark}.json").unlink()
    report = tmp_path / "report"
    result = report_cli(str(out / "tiny_clip_finetune-seed0"), str(partial), str(tmp_path / "never_ran"),
                        "--out", str(report), "--wandb-mode", "offline")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {r["row"]: r for r in csv.DictReader((report / "report.csv").open())}
    assert rows["+ neg. cap. (partial, n=1)"]["What'sUp A L/R indiv"] == ""
    row = rows["+ neg. cap. (partial)"]
    assert row["What'sUp A L/R indiv"] == "" and row["What'sUp A L/R pairs"] == "" and row["GQA two-obj"] == ""
    assert row["COCO one-obj"] != ""
    assert all(v == "" for k, v in rows["never_ran (not started)"].items() if k in dict((c[0], 0) for c in COLUMNS))
    md = (report / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| + neg. cap. (partial) |"))
    assert line.split(" | ")[1:3] == ["–", "–"] and line.split(" | ")[8] == "–"
    assert "| never_ran (not started) | – | – | – | – | – | – | – | – | 1 GPU | 0 | – | – | – |" in md
    assert "| never_ran | – | – | not started | – |" in md
    # the same table went to W&B (offline: a local run folder in the report's folder)
    assert "logged to W&B (offline)" in result.stdout
    assert list((report / "wandb").glob("offline-run-*"))


def fake_run(
    folder: Path, model: str, loss: str, tower: str, results: dict[str, dict[str, float]], head: str = "dot"
) -> Path:
    """A run folder with a config and eval results (checkpoint -> benchmark -> value), no training."""
    config = {"model": {"name": model, "text": {"tower": tower}, "image": {"locked": True}, "head": {"kind": head}},
              "loss": {"name": loss}}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(json.dumps(config))
    keys = {"whatsup_a": ("left_right/indiv", "left_right/pairs"), "coco_spatial_one": ("indiv",)}
    for checkpoint, values in results.items():
        out = folder / "eval" / checkpoint
        out.mkdir(parents=True)
        step = int(checkpoint.split("_")[-1]) * (10 if checkpoint.startswith("epoch") else 1)
        for benchmark, value in values.items():
            record = {
                "metrics": {k: value for k in keys[benchmark]},
                "chance": {k: 50.0 if k.endswith("indiv") else 25.0 for k in keys[benchmark]},
                "step": step,
            }
            (out / f"{benchmark}.json").write_text(json.dumps(record))
    return folder


def test_report_groups_rows_by_model_like_table5(tmp_path):
    from launch.report import from_folders, write_report

    clip = "clip-vit-l14-336"
    runs = [
        fake_run(tmp_path / "clip_ft", clip, "clip", "native",
                 {"step_0": {"whatsup_a": 49.0, "coco_spatial_one": 48.9}, "epoch_1": {"whatsup_a": 50.5}}),
        fake_run(tmp_path / "siglip_llm2vec_neg", "siglip-vit-l16-384", "siglip_neg", "llm2vec",
                 {"step_0": {"whatsup_a": 47.0}, "epoch_1": {"whatsup_a": 51.0, "coco_spatial_one": 0.0}}),
        tmp_path / "never_started",
        fake_run(tmp_path / "clip_neg", clip, "negclip", "native",
                 {"step_0": {"whatsup_a": 49.0}, "epoch_1": {"whatsup_a": 52.0}, "epoch_2": {"whatsup_a": 53.0}}),
        fake_run(tmp_path / "clip_sparc_neg", clip, "negclip", "native",
                 {"step_0": {"whatsup_a": 49.0}, "epoch_1": {"whatsup_a": 54.0}}, head="sparc"),
    ]  # fmt: skip
    rows, chance, plots = write_report(from_folders(runs, tmp_path / "report"))
    assert [r.label for r in rows] == [
        "clip-vit-l14-336 (starting weights)",
        "+ finetuning (clip_ft)",
        "+ neg. cap. (clip_neg)",
        "+ SPARC, neg. cap. (clip_sparc_neg)",
        "siglip-vit-l16-384 (starting weights)",
        "+ llm2vec, neg. cap. (siglip_llm2vec_neg)",
        "never_started (not started)",
    ]
    assert rows[0].values[0] == 49.0 and rows[0].values[4] == 48.9  # step_0 of the group's first run
    assert rows[1].values[:2] == (50.5, 50.5) and rows[1].values[4] is None  # not scored: missing, not 0
    assert rows[2].values[0] == 53.0  # the last checkpoint
    assert rows[3].values[0] == 54.0
    assert rows[5].values[4] == 0.0 and rows[6].values == (None,) * len(COLUMNS)
    assert chance.values[:2] == (50.0, 25.0) and chance.values[2] is None  # nobody scored What'sUp B
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| + finetuning (clip_ft) | 50.5 | 50.5 | – | – | – | – | – | – |" in text
    assert "| + llm2vec, neg. cap. (siglip_llm2vec_neg) | 51.0 | 51.0 | – | – | 0.0 | – | – | – |" in text
    assert {p.name for p in plots.values()} >= {"bars.png", "accuracy_by_epoch.png", "never_started.png",
                                               "training_loss.png"}  # fmt: skip


def test_a_deepspeed_sweep_launches_with_the_zero_config_of_its_stage(tmp_path):
    from launch.commands import accelerate_config
    from launch.sweep_config import ResourceSpec

    assert accelerate_config(ResourceSpec(gpus_per_run=4, zero_stage=3)).name == "deepspeed_zero3.yaml"
    assert accelerate_config(ResourceSpec(gpus_per_run=4, zero_stage=2)).name == "deepspeed_zero2.yaml"
    assert accelerate_config(ResourceSpec(gpus_per_run=4)).name == "multi_gpu_bf16.yaml"
    path = write(tmp_path, "recipes: [tiny_clip_neg]\nresources: {gpus_per_run: 0, zero_stage: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert "resources.zero_stage: 1: choose 0 (no DeepSpeed), 2 or 3" in str(err.value)
    path = write(tmp_path, "recipes: [tiny_clip_neg]\nresources: {zero_stage: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert "DeepSpeed runs need GPUs" in str(err.value)


# --- user mistakes: one message, no traceback ------------------------------------------------------------------------


def test_a_sweep_file_with_a_key_twice_or_bad_yaml_names_the_file_and_lines(tmp_path):
    path = write(
        tmp_path, "recipes: [tiny_clip_neg]\ngrid:\n  seed: [0, 1]\n  seed: [2]\nrecipes: [tiny_clip_finetune]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.source == str(path)
    assert err.value.problems == [
        "key 'grid.seed' appears twice (lines 3 and 4)",
        "key 'recipes' appears twice (lines 1 and 5)",
    ]
    bad = write(tmp_path, "recipes: [tiny_clip_neg\ngrid: {seed: [0]}\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2, column 5: expected ',' or ']'"):
        load_sweep(bad)


def test_the_sweep_command_ends_every_mistake_with_a_message(tmp_path, capsys):
    from launch.sweep import main as sweep_main

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a-000000.tar").write_bytes(b"")
    out = tmp_path / "out"
    twice = write(tmp_path, "recipes: [tiny_clip_neg]\nrecipes: [tiny_clip_neg]\n", "twice.yaml")
    typo = write(tmp_path, "recipes: [tiny_clip_nge]\n", "typo.yaml")
    cases = {
        ("tiny_gird",): "sweep file not found; did you mean 'tiny_grid'?",
        (str(twice),): "key 'recipes' appears twice (lines 1 and 2)",
        (str(typo),): "tiny_clip_nge.yaml: recipe file not found; did you mean 'tiny_clip_neg'?",
        ("tiny_grid", "optim.lrr=1"): "command line: optim.lrr: unknown key; did you mean 'optim.lr'?",
        (
            "tiny_grid",
            f"data.shards=[{tmp_path}/none]",
        ): f"command line: data.shards[0]: {tmp_path}/none: no such folder",
        ("tiny_grid", f"data.shards=[{tmp_path}]"): f"command line: data.shards[0]: {tmp_path}: holds no *.tar shards",
    }
    for args, expected in cases.items():
        assert sweep_main([*args, "--output-dir", str(out)]) == 2, args
        captured = capsys.readouterr()
        assert captured.err.startswith("sweep: ") and expected in captured.err, (args, captured.err)
    assert not out.exists()  # nothing was written
    missing = f"data.shards=[{tmp_path}/none]"
    assert sweep_main(["tiny_grid", "--dry-run", "--output-dir", str(out), missing]) == 0  # the data may come later
    warned = capsys.readouterr().err
    assert f"sweep: warning: command line: data.shards[0]: {tmp_path}/none: no such folder" in warned
    assert "[tiny_clip_finetune-seed0, tiny_clip_finetune-seed1, tiny_clip_neg-seed0, tiny_clip_neg-seed1]" in warned
    assert (
        "sweep: warning: eval.data_root: demo_out/world/bench: no such folder" in warned
        or Path("demo_out/world/bench").is_dir()
    )
    assert sweep_main(["tiny_grid", "--status", "--output-dir", str(out), missing]) == 0
    assert "sweep: warning: command line: data.shards[0]" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert sweep_main(["tiny_grid", "--output-dir", str(a_file), f"data.shards=[{shards}]"]) == 1
    assert capsys.readouterr().err.endswith(f"sweep: {a_file}: File exists\n")

    result = sweep_cli(str(twice))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"sweep: {twice}: 1 problem:\n  - key 'recipes' appears twice (lines 1 and 2)\n"


def test_an_accelerate_config_with_a_key_twice_stops_the_sweep(tmp_path, monkeypatch):
    import launch.commands

    configs = tmp_path / "accelerate"
    configs.mkdir()
    shutil.copy(ROOT / "launch" / "accelerate" / "cpu_2proc.yaml", configs)
    path = write(tmp_path, "recipes: [tiny_clip_neg]\nresources: {gpus_per_run: 0, cpu_processes: 2}\n")
    monkeypatch.setattr(launch.commands, "ACCELERATE_CONFIGS", configs)
    assert plan_sweep(load_sweep(path), path, tmp_path / "out").runs
    text = (configs / "cpu_2proc.yaml").read_text()
    (configs / "cpu_2proc.yaml").write_text(text + "num_processes: 4\n")
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith("num_processes:"))
    with pytest.raises(ConfigError) as err:
        plan_sweep(load_sweep(path), path, tmp_path / "out")
    last = len(text.splitlines()) + 1
    expected = f"resources: {configs / 'cpu_2proc.yaml'}: key 'num_processes' appears twice (lines {line} and {last})"
    assert err.value.problems == [expected]


def test_the_report_names_every_recipe_and_run_it_could_not_read(tmp_path, capsys):
    from launch.report import main as report_main

    clip = "clip-vit-l14-336"
    good = fake_run(
        tmp_path / "good", clip, "clip", "native", {"step_0": {"whatsup_a": 49.0}, "epoch_1": {"whatsup_a": 50.5}}
    )
    twice = fake_run(tmp_path / "twice", clip, "negclip", "native", {"epoch_1": {"whatsup_a": 52.0}})
    (twice / "config.yaml").write_text("model: {name: x}\nloss: {name: clip}\nloss: {name: negclip}\n")
    garbled = fake_run(
        tmp_path / "garbled", clip, "clip", "native", {"epoch_1": {"whatsup_a": 51.0, "coco_spatial_one": 1.0}}
    )
    (garbled / "eval" / "epoch_1" / "whatsup_a.json").write_text("{not json")
    empty = fake_run(tmp_path / "empty", clip, "clip", "native", {"epoch_1": {"whatsup_a": 51.0}})
    (empty / "eval" / "epoch_1" / "whatsup_a.json").write_text(json.dumps({"metrics": {}, "chance": {}, "step": 10}))
    headless = fake_run(tmp_path / "headless", clip, "clip", "native", {"epoch_1": {"whatsup_a": 51.0}})
    (headless / "eval" / "epoch_1" / "whatsup_a.json").write_text(json.dumps({"step": 10}))
    out = tmp_path / "report"
    runs = [good, twice, garbled, empty, headless]
    assert report_main([*map(str, runs), "--out", str(out), "--wandb-mode", "disabled"]) == 0
    err = capsys.readouterr().err
    expected = [
        f"twice: {twice / 'config.yaml'}: key 'loss' appears twice (lines 2 and 3)",
        f"garbled: {garbled / 'eval' / 'epoch_1' / 'whatsup_a.json'}: not valid JSON (shown as missing)",
        f"empty: {empty / 'eval' / 'epoch_1' / 'whatsup_a.json'}: holds no metrics (shown as missing)",
        f"headless: {headless / 'eval' / 'epoch_1' / 'whatsup_a.json'}: no metrics/chance mappings (the run's row is "
        "left empty)",
        f"good: {good / 'config.yaml'} does not load as a recipe (data.shards: at least one shard folder is required)"
        ": plotted against optimizer steps",
    ]
    md = (out / "report.md").read_text()
    section = md.split("## Could not read\n\n")[1].split("\n\n")[0].splitlines()
    for note in expected:
        assert f"report: could not read {note}\n" in err, (note, err)
        assert f"- {note}" in section, (note, section)
    rows = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows["+ finetuning (good)"]["What'sUp A L/R indiv"] == "50.5000"
    assert (
        rows["+ finetuning (garbled)"]["What'sUp A L/R indiv"] == "" and rows["+ finetuning (garbled)"]["COCO one-obj"]
    )
    assert all(v == "" for k, v in rows["twice (unreadable)"].items() if k not in ("row", "kind", "n"))
    assert all(v == "" for k, v in rows["headless (unreadable)"].items() if k not in ("row", "kind", "n"))
    assert "| twice | – | – | unreadable | – |" in md

    # a sweep without a manifest: the recipes that load are reported, the others named
    broken = write(tmp_path, "data: {shards: [s]}\noptim: {lr: 1}\noptim: {lr: 2}\n", "broken.yaml")
    sweep = write(tmp_path, f"name: mixed\nrecipes: [tiny_clip_neg, {broken}]\n", "mixed.yaml")
    assert report_main([str(sweep), "--output-dir", str(tmp_path / "mixed"), "--wandb-mode", "disabled"]) == 0
    note = f"recipe broken: {broken}: key 'optim' appears twice (lines 2 and 3) [broken]"
    assert f"report: could not read {note}\n" in capsys.readouterr().err
    md = (tmp_path / "mixed" / "report.md").read_text()
    assert f"- {note}" in md and "| tiny_clip_neg | tiny_clip_neg | – | not started | – |" in md


def test_the_report_command_ends_every_mistake_with_a_message(tmp_path, capsys):
    from launch.report import main as report_main

    sweep_dir = tmp_path / "runs"
    sweep_dir.mkdir()
    (sweep_dir / "manifest.json").write_text('{"runs": [{"name": "a"}]}')
    cases = {
        (str(tmp_path / "no_such_run"),): "neither a run folder nor a sweep file",
        (str(write(tmp_path, "recipes: [a\n", "bad.yaml")),): "not valid YAML at line 2",
        ("tiny_grid", "--output-dir", str(sweep_dir)): "manifest.json: 1 problem:\n  - not a sweep manifest",
    }
    for args, expected in cases.items():
        assert report_main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("report: ") and expected in err, (args, err)
    result = report_cli(str(tmp_path / "no_such_run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 2


def fake_grid(sweep_dir: Path, shards: Path, seconds: dict[str, float], values: dict[str, float]) -> list[str]:
    """tiny_grid's four run folders as the trainer and eval would leave them, without training: config.yaml, one
    start, metrics.jsonl lines whose samples_per_s add up to `seconds[run]`, results at step 0, mid-epoch 1 and at
    epochs 1 and 2 (What'sUp A and COCO one-object = `values[run]` at the end)."""
    from launch.run_state import steps_per_epoch
    from train.typed_config import to_yaml

    path = Path("launch/sweeps/tiny_grid.yaml")
    plan = plan_sweep(load_sweep(path), path, sweep_dir, [f"data.shards=[{shards}]"], evaluate=False)
    for run in plan.runs:
        folder = run.run_dir
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(to_yaml(run.cfg))
        (folder / "starts.jsonl").write_text(json.dumps({"time": "2026-01-01T00:00:00+0000", "argv": []}) + "\n")
        batch, per_epoch = run.cfg.train.global_batch_size, steps_per_epoch(run.cfg)
        steps = list(range(2, 2 * per_epoch + 1, 2))  # train.log_every_steps 2, two epochs
        window = seconds[run.name] / len(steps)  # each line: 2 steps x batch samples in `window` seconds
        (folder / "metrics.jsonl").write_text(
            "".join(
                json.dumps({"step": s, "epoch": 0, "loss": 1.0, "samples_per_s": 2 * batch / window}) + "\n"
                for s in steps
            )  # fmt: skip
        )
        (folder / "feature_caches.json").write_text(json.dumps({"image": None, "text": None, "notes": []}))
        for name, step, value in (("step_0", 0, 40.0), (f"step_{per_epoch // 2}", per_epoch // 2, 45.0),
                                  ("epoch_1", per_epoch, 48.0), ("epoch_2", 2 * per_epoch, values[run.name])):  # fmt: skip
            out = folder / "eval" / name
            out.mkdir(parents=True)
            for benchmark, keys in (
                ("whatsup_a", ("left_right/indiv", "left_right/pairs")),
                ("coco_spatial_one", ("indiv",)),
            ):
                record = {"metrics": {k: value for k in keys}, "chance": {k: 50.0 for k in keys}, "step": step}
                (out / f"{benchmark}.json").write_text(json.dumps(record))
    return [r.name for r in plan.runs]


def test_the_report_averages_seeds_and_puts_gpu_hours_used_next_to_the_estimate(world_shards, tmp_path, monkeypatch):
    import statistics

    from matplotlib.ticker import MaxNLocator

    from launch import plots
    from launch.report import main as report_main

    names = ["tiny_clip_finetune-seed0", "tiny_clip_finetune-seed1", "tiny_clip_neg-seed0", "tiny_clip_neg-seed1"]
    seconds = dict(zip(names, (36.0, 72.0, 360.0, 720.0), strict=True))
    values = dict(zip(names, (50.0, 54.0, 60.0, 61.0), strict=True))
    out = tmp_path / "tiny_grid"
    assert fake_grid(out, world_shards, seconds, values) == names
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figures to read their axes
    argv = ["launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), f"data.shards=[{world_shards}]"]
    assert report_main([*argv, "--wandb-mode", "disabled"]) == 0
    every = list(csv.DictReader((out / "report.csv").open()))
    rows = {r["row"]: r for r in every}
    assert [r["kind"] for r in every] == ["start", "mean", "mean", "chance", "seed", "seed", "seed", "seed"]
    ft, neg = rows["+ finetuning (tiny_clip_finetune, n=2)"], rows["+ neg. cap. (tiny_clip_neg, n=2)"]
    assert ft["n"] == neg["n"] == "2"
    assert float(ft["What'sUp A L/R indiv"]) == 52.0 and float(neg["COCO one-obj"]) == 60.5
    assert float(ft["What'sUp A L/R indiv sd"]) == pytest.approx(statistics.stdev([50.0, 54.0]), abs=1e-4)
    assert ft["What'sUp B L/R indiv"] == ft["What'sUp B L/R indiv sd"] == ""  # nobody scored it: missing, not 0
    # used = the metrics lines' seconds x 1 process (tiny_grid: gpus_per_run 0, cpu_processes 1) / 3600
    for name in names:
        seed = next(r for r in every if r["row"].endswith(f"({name})"))
        assert seed["kind"] == "seed" and seed["devices"] == "1" and seed["starts"] == "1"
        assert float(seed["gpu_hours_used"]) == pytest.approx(seconds[name] / 3600, rel=1e-3)
        assert 0 < float(seed["gpu_hours_estimate"]) < float(seed["gpu_hours_used"])  # an H100 beats 2 shared CPUs
    assert float(ft["gpu_hours_used"]) == pytest.approx(54 / 3600, rel=1e-3)
    assert float(ft["gpu_hours_used_sd"]) == pytest.approx(statistics.stdev([36, 72]) / 3600, rel=1e-3)
    estimate = float(rows["+ finetuning (tiny_clip_finetune-seed0)"]["gpu_hours_estimate"])
    assert float(ft["gpu_hours_estimate"]) == pytest.approx(estimate, rel=1e-4)
    assert float(neg["gpu_hours_estimate"]) > estimate  # hard negatives: a second text per sample

    md = (out / "report.md").read_text()
    means, per_seed = md.split("## Mean over seeds")[1].split("## Per seed")
    # CPU runs (tiny_grid: gpus_per_run 0): their CPU-hours, no GPU-hour estimate to compare them with
    assert "| n | CPU-h used |" in means and "GPU-h" not in means
    line = next(x for x in means.splitlines() if x.startswith("| + finetuning (tiny_clip_finetune, n=2) |"))
    cells = [c.strip() for c in line.strip("| ").split(" | ")]
    assert cells[1] == "52.0 ± 2.8" and cells[3] == "–" and cells[9] == "2"
    assert cells[10] == f"{54 / 3600:.3g} ± {statistics.stdev([36, 72]) / 3600:.3g}" and len(cells) == 11
    assert all(f"({name}) |" in per_seed for name in names) and not any(f"({name}) |" in means for name in names)
    line = next(x for x in per_seed.splitlines() if x.startswith("| + neg. cap. (tiny_clip_neg-seed1) |"))
    assert " | 61.0 | 61.0 | " in line and line.endswith(" | 1 CPU | 1 | 0.2 |")
    assert "launch/sweeps/tiny_grid.yaml (resources)" in md.split("## Compute")[1]

    # the plots: bars and curves of the seed means; every epoch axis ticks whole epochs only
    assert (out / "plots" / "bars.png").exists() and (out / "plots" / "tiny_clip_neg-seed1.png").exists()
    by_epoch = [f for f in figures if len(f.axes) == 8]
    assert len(by_epoch) == 1
    legend = [t.get_text() for t in by_epoch[0].legends[0].get_texts()]
    assert legend == ["finetuning (tiny_clip_finetune, n=2)", "neg. cap. (tiny_clip_neg, n=2)", "random chance"]
    epoch_axes = [ax for f in figures for ax in f.axes if ax.get_xlabel() == "epoch"]
    assert len(epoch_axes) == 4 + 4  # the bottom row of accuracy_by_epoch, one per run
    for ax in epoch_axes:
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        ticks = ax.get_xticks()
        assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks
    monkeypatch.undo()
    for f in figures:
        plots.plt.close(f)

    # the sweep launched on 2 GPUs per run (its manifest's resources), then --devices and --gpu/--utilisation
    manifest = {"invocation": {"resources": {"gpus_per_run": 2, "nodes": 1, "cpu_processes": 1}},
                "runs": [{"name": n, "recipe": n.split("-")[0], "values": {"seed": n[-1]}, "run_dir": str(out / n)}
                         for n in names]}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert report_main([*argv, "--wandb-mode", "disabled"]) == 0
    seed0 = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())}["+ neg. cap. (tiny_clip_neg-seed0)"]
    assert seed0["devices"] == "2" and float(seed0["gpu_hours_used"]) == pytest.approx(2 * 360 / 3600, rel=1e-3)
    on_gpus = (out / "report.md").read_text()
    assert (
        "| 2 GPU | 1 | 0.2 |" in on_gpus
        and "| n | GPU-h used | GPU-h estimate (H100 @ 40%) | used / estimate |" in (on_gpus)
    )
    assert (
        report_main([*argv, "--devices", "1", "--gpu", "a100", "--utilisation", "0.2", "--wandb-mode", "disabled"]) == 0
    )
    seed0_a100 = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())}["+ neg. cap. (tiny_clip_neg-seed0)"]
    assert float(seed0_a100["gpu_hours_used"]) == pytest.approx(360 / 3600, rel=1e-3)
    assert float(seed0_a100["gpu_hours_estimate"]) > 2 * float(
        seed0["gpu_hours_estimate"]
    )  # slower GPU, half the share
    assert "GPU-h estimate (A100 @ 20%)" in (out / "report.md").read_text()
    # a process count the global batch does not split into: no estimate, and the report says why
    assert report_main([*argv, "--devices", "4", "--wandb-mode", "disabled"]) == 0
    assert (
        "- tiny_clip_neg-seed0: no estimate (train.global_batch_size 64 is not a multiple of data.batch_size 32 x 4 "
        "processes)" in (out / "report.md").read_text()
    )
    assert report_main([*argv, "--gpu", "tpu"]) == 2 and report_main([*argv, "--devices", "0"]) == 2


@pytest.mark.system
def test_report_ends_with_where_is_it_lost_from_a_run_folders_probe(tiny_sweep, tmp_path):
    """eval.probe on a run folder (its last checkpoint), then launch.report --probe: the last section sets the probe
    beside that checkpoint's zero-shot, and the probe's zero-shot is the checkpoint's own two-way accuracy."""
    from eval.probe import main as probe_main

    out, _, _ = tiny_sweep
    probe = tmp_path / "probe"
    run = out / "tiny_clip_neg-seed0"
    args = [str(run), "--out", str(probe), "--benchmarks", "whatsup_a", "--representations", "pooled",
            "--probes", "linear", "--steps", "30", "--bootstrap", "100"]  # fmt: skip
    assert probe_main(args) == 0
    record = json.loads((probe / "probe.json").read_text())
    assert record["step"] == 10  # the last checkpoint (epoch_1 and step_10 are both step 10)
    tasks = {t["task"]: t for t in record["tasks"]}
    scored = json.loads((run / "eval" / record["checkpoint"] / "whatsup_a.json").read_text())["metrics"]
    assert tasks["whatsup_a/left/right"]["zero_shot"]["accuracy"] == pytest.approx(scored["left_right/indiv"])
    bad = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), "--probe", str(tmp_path))
    assert bad.returncode == 2 and "no probe.json" in bad.stderr
    report = tmp_path / "report"
    result = report_cli("launch/sweeps/tiny_grid.yaml", "--output-dir", str(out), "--out", str(report),
                        "--probe", str(probe))  # fmt: skip
    assert result.returncode == 0, result.stderr
    section = (report / "report.md").read_text().split("## Where is it lost")[1]
    assert f"### {run} ({record['checkpoint']})" in section and "| whatsup_a/left/right |" in section
    assert (report / "plots" / "probe_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
