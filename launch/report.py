"""A sweep's results in the paper's Table 5 layout, with plots, as files and in W&B.

    python -m launch.report launch/sweeps/tiny_grid.yaml [--output-dir SWEEP_DIR] [--out DIR]
    python -m launch.report runs/a runs/b --out report_dir          # any evaluated run folders
    python -m launch.report paper_table5 --wandb-mode online         # also log the table to the sweep's W&B group
    python -m launch.report paper_table5 --gpu a100 --utilisation 0.3  # the estimate's GPU and share of its peak
    python -m launch.report paper_table5 --mllm llava-1.5-7b=llava_eval/choice  # LLaVA rows beside the runs
    python -m launch.report tiny_grid --probe demo_out/probe       # ends with eval.probe's "where is it lost"

Writes report.md and report.csv (rows: each model's starting weights, then each run's last evaluated checkpoint,
then random chance; columns: What'sUp A/B Left/Right individual and pair accuracy, COCO/GQA-spatial one/two
object accuracy, as eval/table5.py), plots/bars.png (grouped bars per benchmark), plots/accuracy_by_epoch.png
and plots/<run>.png (accuracy against epoch, whole-epoch ticks). A result that is missing is shown as missing ("–"),
never zero. Runs that differ only by seed are one row (and one bar, one curve): the mean ± sample sd over their n
seeds; each seed's row follows under "Per seed". Each run's GPU-hours used (its metrics.jsonl windows' seconds x its
processes / 3600) stands next to train.cost's estimate for its config (--gpu, --utilisation; --devices where the
sweep's resources do not tell the process count). With --mllm LABEL=FOLDER (an `eval.llava --out` folder), report.md
gains the paper's Table 1/12, 2/13, 3, 6 and 7 layouts with each run's last checkpoint beside the MLLM rows
(beside_mllms/).
Runs come from the sweep folder's manifest.json when there is one, else from the sweep file itself.

Nothing is skipped silently: a recipe that does not load, a run whose config.yaml or result files cannot be read,
or a result without metrics is named on stderr and under "Could not read" in report.md (a run whose files would
make its row wrong keeps its place with every value missing).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from eval.report import read_result, result_path
from eval.table5 import COLUMNS, Row, checkpoint_folders, markdown, table5_rows
from launch.manifest import MANIFEST_JSON
from train.cost import DEFAULT_GPU, DEFAULT_UTILISATION, GPUS, check_utilisation, gpu_peak
from train.typed_config import ConfigError, to_plain
from train.yaml_loading import load_yaml_file

REPORT_MD = "report.md"
REPORT_CSV = "report.csv"
CHANCE_LABEL = "Random chance"


@dataclass(frozen=True)
class ReportRun:
    name: str
    run_dir: Path
    recipe: str = ""
    values: str = ""  # the sweep's varied keys for this run, e.g. "seed=1"
    devices: int | None = None  # processes (one per GPU) it trained on; None: not known (taken as 1)
    device_kind: str = "GPU"  # "GPU", or "CPU" for a sweep with gpus_per_run 0 (gloo processes)
    devices_from: str = ""  # where `devices` comes from, for the report's notes


@dataclass(frozen=True)
class ReportSource:
    title: str
    description: str
    group: str  # W&B group ("" = none: a list of run folders)
    out_dir: Path
    runs: tuple[ReportRun, ...]
    unreadable: tuple[str, ...] = ()  # recipes (or a manifest) that could not be read: named in the report


@dataclass(frozen=True)
class RunFiles:
    """What could not be read in one run folder; `broken`: its row would be wrong, so it shows no values."""

    notes: tuple[str, ...] = ()
    broken: bool = False


def from_sweep(sweep: str, output_dir: Path | None, overrides: Sequence[str]) -> ReportSource:
    """The sweep's runs from its manifest.json, else planned from the sweep file; a recipe that does not load is
    left out and named (`unreadable`). ConfigError for an unreadable sweep file or manifest."""
    from launch.plan import plan_sweep, sweep_dir_of
    from launch.sweep_config import load_sweep, recipe_label, sweep_path

    path = sweep_path(sweep)
    spec = load_sweep(path)
    folder = sweep_dir_of(spec, output_dir)
    manifest = folder / MANIFEST_JSON
    unreadable: list[str] = []
    if manifest.exists():
        runs = _manifest_runs(manifest)
        resources, origin = _manifest_resources(manifest), f"{manifest} (resources)"
        if resources is None:
            resources, origin = to_plain(spec.resources), f"{path} (resources)"
    else:
        resources, origin = to_plain(spec.resources), f"{path} (resources)"
        try:
            plans = [plan_sweep(spec, path, folder, overrides, evaluate=False)]
        except ConfigError as whole:  # plan each recipe alone: report the ones that load, name the others
            plans = []
            for recipe in spec.recipes:
                try:
                    plans.append(plan_sweep(replace(spec, recipes=(recipe,)), path, folder, overrides, evaluate=False))
                except ConfigError as err:
                    unreadable += [f"recipe {recipe_label(recipe)}: {p}" for p in err.problems]
            if not plans:
                raise whole from None
        runs = tuple(
            ReportRun(r.name, r.run_dir, r.recipe, " ".join(f"{k}={v}" for k, v in r.values))
            for plan in plans
            for r in plan.runs
        )
    devices, kind = _devices_of(resources)
    runs = tuple(replace(r, devices=devices, device_kind=kind, devices_from=origin) for r in runs)
    return ReportSource(f"Sweep {spec.name}", spec.description, spec.name, folder, runs, tuple(unreadable))


def _manifest_runs(manifest: Path) -> tuple[ReportRun, ...]:
    try:
        record = json.loads(manifest.read_text())
        return tuple(
            ReportRun(r["name"], Path(r["run_dir"]), r["recipe"], " ".join(f"{k}={v}" for k, v in r["values"].items()))
            for r in record["runs"]
        )
    except (OSError, ValueError) as err:
        raise ConfigError(str(manifest), [f"not a readable sweep manifest: {err}"]) from None
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(str(manifest), [f"not a sweep manifest (run records lack {err})"]) from None


def _manifest_resources(manifest: Path) -> dict | None:
    """The resources the sweep was launched with (CLI overrides such as --gpus-per-run applied), if recorded."""
    try:
        resources = json.loads(manifest.read_text()).get("invocation", {}).get("resources")
    except (OSError, ValueError, AttributeError):
        return None
    return resources if isinstance(resources, dict) else None


def _devices_of(resources: dict) -> tuple[int, str]:
    """(processes of one run, "GPU"/"CPU") from a sweep's resources: gpus_per_run over all nodes (one process per
    GPU), else cpu_processes per node x nodes, as launch.sweep_config.Resources.processes."""
    try:
        gpus = int(resources.get("gpus_per_run") or 0)
        nodes = max(1, int(resources.get("nodes") or 1))
        cpus = max(1, int(resources.get("cpu_processes") or 1))
    except (TypeError, ValueError):
        return 1, "GPU"
    return (gpus, "GPU") if gpus > 0 else (cpus * nodes, "CPU")


def from_folders(folders: Sequence[Path], out_dir: Path) -> ReportSource:
    runs = tuple(ReportRun(p.name, p.resolve()) for p in folders)
    return ReportSource("Runs", ", ".join(str(p) for p in folders), "", out_dir, runs)


def _config(run_dir: Path) -> dict:
    """The run's config.yaml as plain data ({} when there is none or it cannot be read: see run_files)."""
    path = run_dir / "config.yaml"
    try:
        data = load_yaml_file(path, "run config") if path.exists() else {}
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


_MAPPINGS = ("model", "model.text", "model.image", "loss", "wandb")  # the sections the table reads


def run_files(run: ReportRun) -> RunFiles:
    """What in a run folder cannot be read: config.yaml (unparsable, duplicate keys, sections of the wrong kind)
    and result files (not JSON: shown missing; no metrics/chance mappings: the whole row is left empty)."""
    notes: list[str] = []
    broken = False
    config = run.run_dir / "config.yaml"
    if config.exists():
        try:
            data = load_yaml_file(config, "run config")
        except ConfigError as err:
            data = None
            notes += [f"{run.name}: {config}: {p}" for p in err.problems]
        if data is not None and not isinstance(data, dict):
            notes.append(f"{run.name}: {config}: expected a mapping of recipe keys")
        elif isinstance(data, dict):
            for section in _MAPPINGS:
                node: object = data
                for part in section.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node is not None and not isinstance(node, dict):
                    notes.append(f"{run.name}: {config}: {section}: expected a mapping")
        broken = bool(notes)
    folders = [f for f in (run.run_dir / "eval").glob("*") if f.is_dir()] if run.run_dir.is_dir() else []
    for folder in sorted(folders):
        for benchmark in dict.fromkeys(b for _, b, _ in COLUMNS):
            file = result_path(folder, benchmark)
            if not file.exists():
                continue
            record = read_result(folder, benchmark)
            if record is None:
                notes.append(f"{run.name}: {file}: not valid JSON (shown as missing)")
            elif not isinstance(record, dict) or not all(
                isinstance(record.get(k), dict) for k in ("metrics", "chance")
            ):
                notes.append(f"{run.name}: {file}: no metrics/chance mappings (the run's row is left empty)")
                broken = True
            elif not record["metrics"]:
                notes.append(f"{run.name}: {file}: holds no metrics (shown as missing)")
    return RunFiles(tuple(notes), broken)


def table(runs: Sequence[ReportRun]) -> tuple[list[Row], Row]:
    """Table 5 rows: per model (in order of first appearance) its starting weights and its runs; then chance.

    Runs without a folder yet keep their place with every value missing, and so do runs whose files cannot be
    read (run_files).
    """
    broken = {run.name for run in runs if run_files(run).broken}
    readable = [r for r in runs if r.name not in broken and (r.run_dir / "config.yaml").exists()]
    models: dict[str, list[ReportRun]] = {}
    for run in runs:
        model = str((_config(run.run_dir).get("model") or {}).get("name", "")) if run.name not in broken else ""
        models.setdefault(model, []).append(run)
    rows: list[Row] = []
    for group in models.values():
        started = [r for r in group if r in readable]
        built = (
            [row for row in table5_rows([r.run_dir for r in started]) if row.label != CHANCE_LABEL] if started else []
        )
        has_start_row = len(built) == len(started) + 1
        if has_start_row:
            rows.append(built[0])
        by_run = dict(zip((r.name for r in started), built[1:] if has_start_row else built, strict=True))
        for run in group:
            state = "unreadable" if run.name in broken else "not started"
            rows.append(by_run.get(run.name) or Row(f"{run.name} ({state})", (None,) * len(COLUMNS), ""))
    chance = table5_rows([r.run_dir for r in readable])[-1]
    return rows, Row(CHANCE_LABEL, chance.values, "")


# --- compute used against the estimate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What one run's training loop took: seconds on each of `devices` processes, from its metrics.jsonl."""

    seconds: float | None  # None: no metrics lines (not trained, or unreadable)
    devices: int
    kind: str  # "GPU" or "CPU"
    starts: int  # lines of starts.jsonl
    estimate: float | None  # GPU-hours train.cost.estimate_run gives for the run's config on `devices` GPUs
    note: str = ""  # why a figure is missing

    @property
    def hours(self) -> float | None:
        """Device-hours used: training seconds x processes / 3600."""
        return None if self.seconds is None else self.seconds * self.devices / 3600


def train_seconds(run_dir: Path, global_batch: int) -> float | None:
    """Seconds the training loop ran, summed over its metrics lines: a line covers the steps since the line before
    (train/finetune.py's LogWindow; a resumed start drops the lines after its checkpoint, so steps rise through the
    file) and says samples_per_s = those steps x the global batch / the window's seconds."""
    path = run_dir / "metrics.jsonl"
    if not path.exists() or global_batch <= 0:
        return None
    total, previous, seen = 0.0, 0, False
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
            step, rate = int(record["step"]), float(record["samples_per_s"])
        except (ValueError, KeyError, TypeError):
            continue
        steps = step - previous if step > previous else step  # a step that falls back: a new log from scratch
        previous = step
        if rate > 0 and steps > 0:
            total += steps * global_batch / rate
            seen = True
    return total if seen else None


def _starts(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "starts.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _used_caches(run_dir: Path) -> bool | None:
    """Whether the run trained from feature caches (feature_caches.json), None where it does not say."""
    try:
        record = json.loads((run_dir / "feature_caches.json").read_text())
    except (OSError, ValueError):
        return None
    return bool(record.get("image") or record.get("text")) if isinstance(record, dict) else None


def usage(
    run: ReportRun, gpu: str, utilisation: float, estimates: dict[str, tuple[float | None, str]] | None = None
) -> Usage:
    """The run's measured device-hours next to train.cost's estimate for its config on the same process count.

    The estimate is the training part: with its caches (cached_training_gpu_hours) unless the run's
    feature_caches.json says it trained without any (uncached_gpu_hours); building a cache, loading the model and
    eval are outside both figures. `estimates` caches estimates by config (seeds of one recipe share one)."""
    from train.config import load_recipe
    from train.cost import estimate_run

    devices = run.devices or 1
    config = _config(run.run_dir)
    batch = (config.get("train") or {}).get("global_batch_size") if isinstance(config.get("train"), dict) else None
    seconds = train_seconds(run.run_dir, int(batch)) if isinstance(batch, int) else None
    notes = []
    if seconds is None and run.run_dir.exists():
        notes.append("no metrics.jsonl lines with samples_per_s")
    estimate = None
    if config:
        plain = {k: v for k, v in config.items() if k not in ("seed", "run_name", "output_dir", "wandb")}
        key = json.dumps([plain, devices, gpu, utilisation], sort_keys=True, default=str)
        if estimates is not None and key in estimates:
            estimate, why = estimates[key]
        else:
            why = ""
            try:
                est = estimate_run(
                    load_recipe(run.run_dir / "config.yaml"), name=run.name, processes=devices, gpu=gpu,
                    utilisation=utilisation,
                )  # fmt: skip
                cached = _used_caches(run.run_dir)
                estimate = est.uncached_gpu_hours if cached is False else est.cached_training_gpu_hours
            except (ConfigError, ValueError, FileNotFoundError, OSError, RuntimeError) as err:
                first = err.problems[0] if isinstance(err, ConfigError) and err.problems else str(err)
                first = first.removeprefix(f"{run.name}: ")  # shared by the seeds: name none of them
                why = f"no estimate ({first})"
            if estimates is not None:
                estimates[key] = (estimate, why)
        if why:
            notes.append(why)
    return Usage(seconds, devices, run.device_kind, _starts(run.run_dir), estimate, "; ".join(notes))


def hours_cell(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if value >= 1 else f"{value:.3g}"


def ratio_cell(used: float | None, estimate: float | None) -> str:
    return "–" if used is None or not estimate else f"{used / estimate:.3g}x"


# --- runs that differ only by seed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedGroup:
    """Runs that differ only by seed: their rows' mean and sample standard deviation, column by column."""

    label: str  # e.g. "tiny_clip_neg" (a sweep's recipe and its other values), or the shared run name
    runs: tuple[ReportRun, ...]
    rows: tuple[Row, ...]  # each run's Table-5 row (values missing where it has none)
    mean: Row
    std: tuple[float | None, ...]
    counts: tuple[int, ...]  # runs with a value, per column

    @property
    def n(self) -> int:
        return len(self.runs)


def _without_seed(values: str) -> str:
    return " ".join(v for v in values.split() if not v.startswith("seed="))


def group_key(run: ReportRun) -> str:
    """Runs with equal keys differ only by seed: a sweep's recipe and its varied values other than seed; for run
    folders their config.yaml without seed, run_name, output_dir and wandb (no config: the run alone)."""
    if run.recipe:
        return json.dumps(["sweep", run.recipe, _without_seed(run.values)])
    config = _config(run.run_dir)
    if not config:
        return json.dumps(["alone", run.name])
    plain = {k: v for k, v in config.items() if k not in ("seed", "run_name", "output_dir", "wandb")}
    return json.dumps(["config", plain], sort_keys=True, default=str)


def _group_label(runs: Sequence[ReportRun]) -> str:
    first = runs[0]
    if first.recipe:
        rest = _without_seed(first.values)
        return f"{first.recipe} {rest}".strip()
    if len(runs) == 1:
        return first.name
    names = [re.sub(r"[-_.]?seed\d+", "", r.name) for r in runs]
    return names[0] if len(set(names)) == 1 and names[0] else " / ".join(r.name for r in runs)


def _row_of(rows: Sequence[Row], run: ReportRun) -> Row | None:
    return next((r for r in rows if r.label.endswith(f"({run.name})")), None)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None, 0
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None, len(present)


def seed_groups(runs: Sequence[ReportRun], rows: Sequence[Row]) -> list[SeedGroup]:
    """The runs grouped by group_key, in order of first appearance, each with its mean row."""
    grouped: dict[str, list[ReportRun]] = {}
    for run in runs:
        grouped.setdefault(group_key(run), []).append(run)
    out = []
    for members in grouped.values():
        member_rows = tuple(_row_of(rows, r) or Row(r.name, (None,) * len(COLUMNS), "") for r in members)
        stats = [_mean_std([row.values[c] for row in member_rows]) for c in range(len(COLUMNS))]
        label = _group_label(members)
        first = member_rows[0].label
        prefix = first[: -len(f"({members[0].name})")] if first.endswith(f"({members[0].name})") else ""
        if prefix.endswith("(not started) ") or prefix.endswith("(unreadable) "):
            prefix = ""
        text = f"{prefix}({label}, n={len(members)})" if prefix else f"{label} (n={len(members)})"
        mean = Row(text, tuple(m for m, _, _ in stats), "", marks=group_marks(member_rows))
        out.append(SeedGroup(label, tuple(members), member_rows, mean, tuple(s for _, s, _ in stats),
                             tuple(k for _, _, k in stats)))  # fmt: skip
    return out


def group_marks(rows: Sequence[Row]) -> tuple[str, ...]:
    """A seed mean's marks: every seed's own (PARTIAL) and MIXED when the seeds' numbers come from checkpoints at
    different steps (a mean of step 4 with step 6 is no mean of one thing)."""
    marks = list(dict.fromkeys(m for row in rows for m in row.marks))
    steps = sorted({row.step for row in rows if row.step is not None})
    if len(steps) > 1:
        marks.append(f"MIXED (steps {'/'.join(map(str, steps))})")
    return tuple(marks)


MARKS_NOTE = (
    "Marks: **PARTIAL (--limit N)**: the numbers score only the first N examples of a benchmark (eval.run --limit), "
    "not the benchmark; **MIXED (steps a/b)**: the seeds of the mean were last evaluated at different checkpoints "
    "(evaluate them all at the same one: eval.run RUN --checkpoints NAME)."
)


def mean_cell(mean: float | None, std: float | None, count: int, n: int) -> str:
    if mean is None:
        return "–"
    text = f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    return text if count == n else f"{text} [{count}/{n}]"


def _mean_hours(usages: Sequence[Usage], attr: str) -> tuple[float | None, float | None, int]:
    return _mean_std([getattr(u, attr) for u in usages])


def curve(run: ReportRun, notes: list[str] | None = None):
    """Every evaluated checkpoint of a run as (epoch, Table-5 values); x is the step if epochs are unknown.

    Why epochs are unknown (a config.yaml that does not load as a recipe) is appended to `notes`.
    """
    from launch.plots import Curve
    from launch.run_state import steps_per_epoch
    from train.config import load_recipe

    per_epoch = None
    config = run.run_dir / "config.yaml"
    if config.exists():
        said = []
        try:
            cfg = load_recipe(config)
            per_epoch = steps_per_epoch(cfg)
            if per_epoch is None:
                said.append(f"the sizes.json of its shards ({', '.join(cfg.data.shards)}) cannot be read")
        except ConfigError as err:  # an old or foreign config
            more = f" and {len(err.problems) - 3} more" if len(err.problems) > 3 else ""
            said.append(f"{config} does not load as a recipe ({'; '.join(err.problems[:3])}{more})")
        if notes is not None:
            notes += [f"{run.name}: {text}: plotted against optimizer steps" for text in said]
    points = []
    for step, folder in checkpoint_folders(run.run_dir):
        values = []
        for _, benchmark, metric in COLUMNS:
            result = read_result(folder, benchmark)
            metrics = result.get("metrics") if isinstance(result, dict) else None
            values.append(metrics.get(metric) if isinstance(metrics, dict) else None)
        points.append((step / per_epoch if per_epoch else float(step), tuple(values)))
    return Curve(run.name, "epoch" if per_epoch else "optimizer step", tuple(points))


def loss_curve(run: ReportRun):
    """The run's training loss per logged step (metrics.jsonl; unreadable lines are skipped, as train_seconds)."""
    from launch.plots import LossCurve

    points: dict[int, float] = {}
    try:
        lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
            points[int(record["step"])] = float(record["loss"])  # a resumed start's redo wins
        except (ValueError, KeyError, TypeError):
            continue
    steps = sorted(points)
    return LossCurve(run.name, tuple(steps), tuple(points[s] for s in steps))


def _state(run: ReportRun, broken: bool = False) -> str:
    if not run.run_dir.exists():
        return "not started"
    if broken:
        return "unreadable"
    checkpoints = [s for s, _ in checkpoint_folders(run.run_dir)]
    if not checkpoints:
        return "not evaluated"
    return f"evaluated up to step {max(checkpoints)}"


@dataclass(frozen=True)
class Compute:
    """The report's compute settings: the GPU and utilisation the estimates assume (train.cost's defaults)."""

    gpu: str = DEFAULT_GPU
    utilisation: float = DEFAULT_UTILISATION

    @property
    def label(self) -> str:
        return f"{self.gpu.upper()} @ {self.utilisation:.0%}"


def _is_start(row: Row) -> bool:
    return row.label.endswith("(starting weights)")


def _run_of(row: Row, runs: Sequence[ReportRun]) -> ReportRun | None:
    return next((r for r in runs if row.label.endswith(f"({r.name})") or row.label.startswith(f"{r.name} (")), None)


def mean_table(rows: Sequence[Row], groups: Sequence[SeedGroup]) -> list[Row | SeedGroup]:
    """Each model's starting weights, then its seed groups (in the order of their first run's row)."""
    out: list[Row | SeedGroup] = []
    runs = [r for g in groups for r in g.runs]
    by_run = {r.name: g for g in groups for r in g.runs}
    done: set[int] = set()
    for row in rows:
        if _is_start(row):
            out.append(row)
            continue
        run = _run_of(row, runs)
        group = by_run.get(run.name) if run is not None else None
        if group is not None and id(group) not in done:
            done.add(id(group))
            out.append(group)
    out += [g for g in groups if id(g) not in done]
    return out


def _group_compute(group: SeedGroup, usages: dict[str, Usage]) -> list[str]:
    used = [usages[r.name] for r in group.runs if r.name in usages]
    mean, std, k = _mean_hours(used, "hours")
    est, _, _ = _mean_hours(used, "estimate")
    used_text = "–" if mean is None else hours_cell(mean) + (f" ± {hours_cell(std)}" if std is not None else "")
    if mean is not None and k != group.n:
        used_text += f" [{k}/{group.n}]"
    return [str(group.n), used_text, hours_cell(est), ratio_cell(mean, est)]


def _run_compute(run: ReportRun | None, usages: dict[str, Usage]) -> list[str]:
    u = usages.get(run.name) if run is not None else None
    if u is None:
        return ["–"] * 5
    return [f"{u.devices} {u.kind}", str(u.starts), hours_cell(u.hours), hours_cell(u.estimate),
            ratio_cell(u.hours, u.estimate)]  # fmt: skip


def report_markdown(
    source: ReportSource,
    rows: list[Row],
    chance: Row,
    plots: dict[str, Path],
    unreadable: Sequence[str] = (),
    broken: frozenset[str] = frozenset(),
    groups: Sequence[SeedGroup] = (),
    usages: dict[str, Usage] | None = None,
    compute: Compute = Compute(),
) -> str:
    usages = usages or {}
    lines = [f"# {source.title}: results", ""]
    if source.description:
        lines += [source.description, ""]
    est = f"GPU-h estimate ({compute.label})"
    summary = mean_table(rows, groups)
    mean_rows = [x if isinstance(x, Row) else x.mean for x in summary]
    mean_cells = [
        []
        if isinstance(x, Row)
        else [mean_cell(m, sd, k, x.n) for m, sd, k in zip(x.mean.values, x.std, x.counts, strict=True)]
        for x in summary
    ]
    mean_extra = [["–"] * 4 if isinstance(x, Row) else _group_compute(x, usages) for x in summary]
    # The GPU-hour columns only where runs used GPUs: a CPU run's hours against an H100 estimate compare nothing.
    on_gpus = any(r.device_kind == "GPU" for r in source.runs)
    mean_headers = ["n", "GPU-h used", est, "used / estimate"] if on_gpus else ["n", "CPU-h used"]
    seed_headers = ["devices", "starts", "GPU-h used", est, "used / estimate"] if on_gpus else [
        "devices", "starts", "CPU-h used"]  # fmt: skip
    mean_extra = [cells[: len(mean_headers)] for cells in mean_extra]
    seed_extra = [_run_compute(_run_of(r, source.runs), usages)[: len(seed_headers)] for r in rows]
    lines += [
        "Layout of the paper's Table 5: two-way What'sUp Left/Right (individual and pair accuracy), COCO-spatial and "
        "GQA-spatial one- and two-object accuracy, in percent. Each run's row holds its last evaluated checkpoint; "
        "the first row of each model holds its starting weights. – = no result (missing, not zero).",
        "",
        "## Mean over seeds",
        "",
        "Runs that differ only by seed are one row: mean ± sample standard deviation over their n seeds "
        f"([k/n]: only k of them have the result). {'GPU-h used and the estimate are' if on_gpus else 'CPU-h used is'} "
        'per run (mean ± sd); each seed\'s row is under "Per seed".',
        "",
        markdown(
            [*mean_rows, chance],
            mean_headers,
            [*mean_extra, ["–"] * len(mean_headers)],
            [*mean_cells, []],
        ).rstrip(),  # fmt: skip
        "",
        *([MARKS_NOTE, ""] if any(r.marks for r in [*rows, *mean_rows]) else []),
        "## Per seed",
        "",
        markdown([*rows, chance], seed_headers, [*seed_extra, ["–"] * len(seed_headers)]).rstrip(),
        "",
        "## Compute",
        "",
        "GPU-h used = the training loop's seconds x the run's processes / 3600. The seconds are summed over "
        "metrics.jsonl: each line covers the steps since the line before and records samples_per_s, so it took "
        "steps x train.global_batch_size / samples_per_s seconds (over all starts of a resumed run). Not counted: "
        "model loading and feature-cache building before the loop, steps lost to a preemption after the last "
        "checkpoint, and eval. Processes: the sweep's resources (gpus_per_run, else cpu_processes x nodes, as "
        "launched: the manifest's record) or --devices; CPU processes are counted as devices. The estimate is "
        f"train.cost.estimate_run for the run's config.yaml on the same number of processes ({compute.label}; "
        "its training part, from caches where the run's feature_caches.json names any), so used / estimate "
        "measures your cluster against the assumed utilisation."
        + (
            ""
            if on_gpus
            else " These runs trained on CPU processes: the tables show their CPU-hours only, as a GPU-hour estimate "
            "compares nothing with them (report.csv keeps both columns)."
        ),
        "",
    ]
    used = [u.hours for u in usages.values() if u.hours is not None]
    ests = [u.estimate for u in usages.values() if u.hours is not None and u.estimate is not None]
    if used:
        lines += [
            f"All runs: {hours_cell(sum(used))} device-hours used over {len(used)} run(s); the estimate for those "
            f"with one: {hours_cell(sum(ests)) if ests else '–'}.",
            "",
        ]
    missing = [f"- {name}: {u.note}" for name, u in usages.items() if u.note]
    if missing:
        lines += ["Figures left out:", "", *missing, ""]
    origins = sorted({r.devices_from for r in source.runs if r.devices_from})
    lines += [
        f"Processes per run from {', '.join(origins) if origins else 'no sweep (1 per run unless --devices)'}.",
        "",
    ]
    lines += [
        "## Runs",
        "",
        "| run | recipe | values | state | checkpoint | numbers from |",
        "|---|---|---|---|---|---|",
    ]
    by_name = {row.label: row for row in rows}
    for run in source.runs:
        row = next((r for label, r in by_name.items() if label.endswith(f"({run.name})")), None)
        origin = row.source if row is not None and row.source else "–"
        state = _state(run, run.name in broken)
        checkpoint = "–" if row is None or row.step is None else f"step {row.step} {' '.join(row.marks)}".strip()
        lines.append(f"| {run.name} | {run.recipe or '–'} | {run.values or '–'} | {state} | {checkpoint} | {origin} |")
    if unreadable:
        lines += ["", "## Could not read", ""]
        lines += [f"- {note}" for note in unreadable]
    lines += ["", "## Plots", ""]
    for label, path in plots.items():
        lines += [f"### {label}", "", f"![{label}]({path.relative_to(source.out_dir)})", ""]
    return "\n".join(lines)


def report_csv(
    rows: Sequence[Row], chance: Row, groups: Sequence[SeedGroup], usages: dict[str, Usage], runs: Sequence[ReportRun]
) -> str:
    """kind start/mean/chance rows (the seed means, with each column's sd) first, then kind seed: each run's row."""
    out = io.StringIO()
    writer = csv.writer(out)
    headers = [c[0] for c in COLUMNS]
    writer.writerow(["row", "kind", "n", *headers, *(f"{h} sd" for h in headers), "devices", "starts",
                     "gpu_hours_used", "gpu_hours_used_sd", "gpu_hours_estimate", "checkpoint", "marks",
                     "source"])  # fmt: skip

    def num(v: float | None, digits: str = ".4f") -> str:
        return "" if v is None else format(v, digits)

    blank = [""] * len(COLUMNS)
    for x in mean_table(rows, groups):
        if isinstance(x, Row):
            writer.writerow([x.label, "start", "", *map(num, x.values), *blank, "", "", "", "", "", _step(x),
                             "; ".join(x.marks), x.source])  # fmt: skip
            continue
        used = [usages[r.name] for r in x.runs if r.name in usages]
        hours, hours_sd, _ = _mean_hours(used, "hours")
        est, _, _ = _mean_hours(used, "estimate")
        devices = sorted({u.devices for u in used})
        writer.writerow([x.mean.label, "mean", x.n, *map(num, x.mean.values), *map(num, x.std),
                         "/".join(map(str, devices)), sum(u.starts for u in used), num(hours, ".6g"),
                         num(hours_sd, ".6g"), num(est, ".6g"), "/".join(_step(r) for r in x.rows if _step(r)),
                         "; ".join(x.mean.marks), ""])  # fmt: skip
    writer.writerow([chance.label, "chance", "", *map(num, chance.values), *blank, "", "", "", "", "", "", "", ""])
    for row in rows:
        run = _run_of(row, runs)
        u = usages.get(run.name) if run is not None else None
        kind = "start" if _is_start(row) else "seed"
        if kind == "start":
            continue
        writer.writerow([row.label, kind, 1, *map(num, row.values), *blank,
                         u.devices if u else "", u.starts if u else "", num(u.hours if u else None, ".6g"), "",
                         num(u.estimate if u else None, ".6g"), _step(row), "; ".join(row.marks),
                         row.source])  # fmt: skip
    return out.getvalue()


def _step(row: Row) -> str:
    return "" if row.step is None else f"step {row.step}"


MLLM_FOLDER = "beside_mllms"


def parse_mllms(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """`LABEL=FOLDER` of each --mllm (an `eval.llava --out` folder); every problem is reported at once."""
    from eval.llava import RESULT_NAMES as MLLM_BENCHMARKS  # vqascore results are CLIP-format (mmvp_clip too)

    labelled, problems = [], []
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep or not label.strip() or not folder.strip():
            problems.append(f"{spec!r}: expected LABEL=FOLDER")
        elif not any(result_path(Path(folder), name).exists() for name in MLLM_BENCHMARKS):
            problems.append(f"{spec!r}: {folder} holds no <benchmark>.json results (an eval.llava --out folder)")
        else:
            labelled.append((label.strip(), Path(folder)))
    if problems:
        raise ConfigError("--mllm", problems)
    return labelled


def write_mllm_tables(out: Path, rows: Sequence[Row], mllms: Sequence[tuple[str, Path]]) -> str:
    """Each run's last evaluated checkpoint (and the starting weights) beside the MLLM result folders, in the
    paper's Table 1/2/3/7 layouts: `<out>/beside_mllms/` gets summary.csv/.md and paper_tables.md; the tables'
    Markdown is returned for report.md."""
    from eval.llava import RESULT_NAMES as MLLM_BENCHMARKS
    from eval.llava import comparability_notes, load_rows, paper_tables
    from eval.report import write_summary

    clip = [(row.label, Path(row.source)) for row in rows if row.source and Path(row.source).is_dir()]
    combined = load_rows([*clip, *mllms])
    folder = out / MLLM_FOLDER
    write_summary(folder, combined, list(MLLM_BENCHMARKS), "CLIP runs beside MLLMs")
    notes = comparability_notes(combined)
    for note in notes:
        print(f"report: not comparable: {note}", file=sys.stderr)
    warnings = "".join(f"- not comparable: {note}\n" for note in notes)
    tables = warnings + ("\n" if warnings else "") + paper_tables(combined)
    (folder / "paper_tables.md").write_text(tables)
    return tables


def probe_section(out: Path, probes: Sequence[Path]) -> list[str]:
    """report.md's "Where is it lost" section: each eval.probe folder's probe-vs-zero-shot table, its plot copied
    into plots/."""
    from eval.probe import where_lost_table

    lines = ["## Where is it lost", "",
             "Probes on the frozen image features against the zero-shot dot product on the same two-way rows (chance "
             "50; 95% bootstrap intervals over object groups; eval.probe). A probe above chance where zero-shot is not "
             "means the image features hold the relation and the alignment does not use it.", ""]  # fmt: skip
    for n, folder in enumerate(probes):
        record = json.loads((folder / "probe.json").read_text())
        what = (f"{record['run']} ({record['checkpoint']})" if record.get("run")
                else f"{record['model']} ({record.get('pretrained') or 'default weights'})")  # fmt: skip
        lines += [f"### {what}", "", *where_lost_table(record["tasks"]), ""]
        if (folder / "probe.png").is_file():
            shutil.copyfile(folder / "probe.png", out / "plots" / f"probe_{n}.png")
            lines += [f"![probe]({Path('plots') / f'probe_{n}.png'})", ""]
    return lines


def write_report(
    source: ReportSource,
    compute: Compute = Compute(),
    mllms: Sequence[tuple[str, Path]] = (),
    probes: Sequence[Path] = (),
) -> tuple[list[Row], Row, dict[str, Path]]:
    from launch import plots as figures

    out = source.out_dir
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows, chance = table(source.runs)
    unreadable = list(source.unreadable)
    files = {run.name: run_files(run) for run in source.runs}
    for run in source.runs:
        unreadable += files[run.name].notes
    curves = [curve(run, None if files[run.name].broken else unreadable) for run in source.runs]
    groups = seed_groups(source.runs, rows)
    estimates: dict[str, tuple[float | None, str]] = {}
    usages = {
        run.name: usage(run, compute.gpu, compute.utilisation, estimates)
        for run in source.runs
        if not files[run.name].broken
    }
    summary = mean_table(rows, groups)
    bar_rows = [x if isinstance(x, Row) else x.mean for x in summary]
    bar_errors = [None if isinstance(x, Row) else x.std for x in summary]
    by_name = {c.run: c for c in curves}
    group_curves = [
        figures.mean_curve(g.mean.label.removeprefix("+ "), [by_name[r.name] for r in g.runs]) for g in groups
    ]
    made = {
        "Accuracy per benchmark (mean over seeds, bars: sd)": figures.grouped_bars(
            bar_rows, chance, out / "plots" / "bars.png", source.title, bar_errors
        ),
        "Accuracy against epoch (mean over seeds, band: sd)": figures.accuracy_by_epoch(
            group_curves, chance, out / "plots" / "accuracy_by_epoch.png", source.title
        ),
    }
    made["Training loss"] = figures.training_loss(
        [loss_curve(run) for run in source.runs], out / "plots" / "training_loss.png", source.title
    )
    for run_curve in curves:
        made[run_curve.run] = figures.run_by_epoch(run_curve, chance, out / "plots" / f"{run_curve.run}.png")
    (out / REPORT_CSV).write_text(report_csv(rows, chance, groups, usages, source.runs))
    broken = frozenset(name for name, f in files.items() if f.broken)
    text = report_markdown(source, rows, chance, made, unreadable, broken, groups, usages, compute)
    if mllms:
        tables = write_mllm_tables(out, rows, mllms).replace("## ", "### ")
        section = [
            "## Beside MLLMs",
            "",
            f"Each run's last evaluated checkpoint beside {', '.join(label for label, _ in mllms)} (eval.llava "
            f"results; protocol in each result file), in the paper's layouts; also {MLLM_FOLDER}/summary.csv.",
            "",
            tables,
        ]
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    if probes:
        text = text.rstrip("\n") + "\n\n" + "\n".join(probe_section(out, probes))
    (out / REPORT_MD).write_text(text)
    for note in unreadable:
        print(f"report: could not read {note}", file=sys.stderr)
    return rows, chance, made


def wandb_settings(source: ReportSource, mode: str | None) -> dict:
    """The runs' own W&B settings (mode, project, entity); --wandb-mode wins; offline when nothing says."""
    config = next((_config(r.run_dir) for r in source.runs if (r.run_dir / "config.yaml").exists()), {})
    wandb_cfg = config.get("wandb") or {}
    return {
        "mode": mode or wandb_cfg.get("mode") or "offline",
        "project": wandb_cfg.get("project") or "clipablate",
        "entity": wandb_cfg.get("entity") or None,
        "group": source.group or wandb_cfg.get("group") or "report",
    }


def log_to_wandb(source: ReportSource, rows: list[Row], chance: Row, plots: dict[str, Path], settings: dict) -> None:
    """One W&B run (job_type report) in the sweep's group: the table and the figures. Missing cells stay empty."""
    import wandb  # lazily: the report itself needs no W&B

    run = wandb.init(
        mode=settings["mode"],
        project=settings["project"],
        entity=settings["entity"],
        group=settings["group"],
        name=f"{settings['group']}-report",
        job_type="report",
        dir=str(source.out_dir),
        reinit=True,
    )
    columns = ["row", *(c[0] for c in COLUMNS), "checkpoint", "marks", "source"]
    data = [[r.label, *r.values, r.step, "; ".join(r.marks), r.source] for r in [*rows, chance]]
    run.log({"table5": wandb.Table(columns=columns, data=data)})
    means = [g.mean for g in seed_groups(source.runs, rows)]
    run.log({"table5_mean_over_seeds": wandb.Table(columns=columns, data=[
        [r.label, *r.values, None, "; ".join(r.marks), ""] for r in means])})  # fmt: skip
    marks = sorted({m.split(" ")[0] for r in [*rows, *means] for m in r.marks})
    if marks:  # PARTIAL / MIXED on the run itself, so a W&B runs table shows it too
        run.tags = (*run.tags, *marks)
        run.summary["marks"] = ", ".join(marks)
    run.log({f"plots/{label}": wandb.Image(str(path)) for label, path in plots.items()})
    run.finish()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launch.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="a sweep YAML (or name) [key=value ...], or run folders")
    parser.add_argument("--output-dir", type=Path, help="the sweep's folder, as given to launch.sweep")
    parser.add_argument("--out", type=Path, help="where report.md/.csv and plots/ go (default: the sweep's folder)")
    parser.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), help="default: the runs' own mode")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"the estimate's GPU: one of {', '.join(sorted(GPUS))} "
                        f"(default {DEFAULT_GPU}, as train.cost)")  # fmt: skip
    parser.add_argument(
        "--utilisation",
        type=float,
        default=DEFAULT_UTILISATION,
        help=f"the estimate's share of the GPU's peak (default {DEFAULT_UTILISATION}, as train.cost)",
    )
    parser.add_argument("--mllm", action="append", default=[], metavar="LABEL=FOLDER",
                        help="an eval.llava result folder shown beside the runs in the paper's Table 1/2/3 layouts "
                        "(repeatable)")  # fmt: skip
    parser.add_argument(
        "--probe",
        action="append",
        default=[],
        type=Path,
        metavar="FOLDER",
        help="an eval.probe --out folder: its probe-vs-zero-shot table ends the report (repeatable)",
    )
    parser.add_argument("--devices", type=int, help="processes (GPUs) each run trained on, where the sweep's "
                        "resources do not say or are wrong (default: the sweep's; 1 for run folders)")  # fmt: skip
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from launch.sweep_config import sweep_path

    args = parse_args(argv)
    first = args.inputs[0]
    try:
        if first.endswith((".yaml", ".yml")) or not Path(first).is_dir():
            if not first.endswith((".yaml", ".yml")) and not sweep_path(first).exists():
                raise ConfigError(first, ["neither a run folder nor a sweep file (nor a sweep name in launch/sweeps/)"])
            source = from_sweep(first, args.output_dir, args.inputs[1:])
            if args.out:
                source = replace(source, out_dir=args.out.resolve())
        else:
            source = from_folders([Path(p) for p in args.inputs], (args.out or Path("report")).resolve())
        if args.devices is not None:
            if args.devices < 1:
                raise ConfigError("--devices", [f"{args.devices}: at least 1 process per run"])
            runs = tuple(replace(r, devices=args.devices, devices_from="--devices") for r in source.runs)
            source = replace(source, runs=runs)
        gpu_peak(args.gpu, "bf16")
        check_utilisation(args.utilisation)
        mllms = parse_mllms(args.mllm)
        missing = [str(p) for p in args.probe if not (p / "probe.json").is_file()]
        if missing:
            raise ConfigError("--probe", [f"{p}: no probe.json (an eval.probe --out folder)" for p in missing])
    except ConfigError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    try:
        rows, chance, plots = write_report(
            source, Compute(args.gpu.strip().lower(), args.utilisation), mllms, args.probe
        )
    except OSError as err:  # e.g. --out names a file, or a folder that cannot be written
        print(f"report: cannot write the report in {source.out_dir}: {err}", file=sys.stderr)
        return 1
    text = (source.out_dir / REPORT_MD).read_text()  # the mean over seeds, then each seed's row
    print("\n".join(x for x in text.split("## Compute")[0].splitlines() if x.startswith("|")))
    print(f"report: {source.out_dir / REPORT_MD}, {source.out_dir / REPORT_CSV}, {len(plots)} plots in plots/")
    settings = wandb_settings(source, args.wandb_mode)
    if settings["mode"] != "disabled":
        log_to_wandb(source, rows, chance, plots, settings)
        print(f"report: logged to W&B ({settings['mode']}), group {settings['group']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
