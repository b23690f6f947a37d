"""A sweep's results in the paper's Table 5 layout, with plots, as files and in W&B.

    python -m launch.report launch/sweeps/tiny_grid.yaml [--output-dir SWEEP_DIR] [--out DIR]
    python -m launch.report runs/a runs/b --out report_dir          # any evaluated run folders
    python -m launch.report paper_table5 --wandb-mode online         # also log the table to the sweep's W&B group

Writes report.md and report.csv (rows: each model's starting weights, then each run's last evaluated checkpoint,
then random chance; columns: What'sUp A/B Left/Right individual and pair accuracy, COCO/GQA-spatial one/two
object accuracy, as eval/table5.py), plots/bars.png (grouped bars per benchmark), plots/accuracy_by_epoch.png
and plots/<run>.png (accuracy against epoch). A result that is missing is shown as missing ("–"), never zero.
Runs come from the sweep folder's manifest.json when there is one, else from the sweep file itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from eval.report import read_result
from eval.table5 import COLUMNS, Row, as_csv, checkpoint_folders, markdown, table5_rows
from launch.manifest import MANIFEST_JSON

REPORT_MD = "report.md"
REPORT_CSV = "report.csv"
CHANCE_LABEL = "Random chance"


@dataclass(frozen=True)
class ReportRun:
    name: str
    run_dir: Path
    recipe: str = ""
    values: str = ""  # the sweep's varied keys for this run, e.g. "seed=1"


@dataclass(frozen=True)
class ReportSource:
    title: str
    description: str
    group: str  # W&B group ("" = none: a list of run folders)
    out_dir: Path
    runs: tuple[ReportRun, ...]


def from_sweep(sweep: str, output_dir: Path | None, overrides: Sequence[str]) -> ReportSource:
    from launch.plan import plan_sweep, sweep_dir_of
    from launch.sweep_config import load_sweep, sweep_path

    path = sweep_path(sweep)
    spec = load_sweep(path)
    folder = sweep_dir_of(spec, output_dir)
    manifest = folder / MANIFEST_JSON
    if manifest.exists():
        record = json.loads(manifest.read_text())
        runs = tuple(
            ReportRun(r["name"], Path(r["run_dir"]), r["recipe"], " ".join(f"{k}={v}" for k, v in r["values"].items()))
            for r in record["runs"]
        )
    else:
        plan = plan_sweep(spec, path, folder, overrides, evaluate=False)
        runs = tuple(
            ReportRun(r.name, r.run_dir, r.recipe, " ".join(f"{k}={v}" for k, v in r.values)) for r in plan.runs
        )
    return ReportSource(f"Sweep {spec.name}", spec.description, spec.name, folder, runs)


def from_folders(folders: Sequence[Path], out_dir: Path) -> ReportSource:
    runs = tuple(ReportRun(p.name, p.resolve()) for p in folders)
    return ReportSource("Runs", ", ".join(str(p) for p in folders), "", out_dir, runs)


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def table(runs: Sequence[ReportRun]) -> tuple[list[Row], Row]:
    """Table 5 rows: per model (in order of first appearance) its starting weights and its runs; then chance.

    Runs without a folder yet keep their place with every value missing.
    """
    models: dict[str, list[ReportRun]] = {}
    for run in runs:
        model = (_config(run.run_dir).get("model") or {}).get("name", "")
        models.setdefault(model, []).append(run)
    rows: list[Row] = []
    for group in models.values():
        started = [r for r in group if (r.run_dir / "config.yaml").exists()]
        built = (
            [row for row in table5_rows([r.run_dir for r in started]) if row.label != CHANCE_LABEL] if started else []
        )
        has_start_row = len(built) == len(started) + 1
        if has_start_row:
            rows.append(built[0])
        by_run = dict(zip((r.name for r in started), built[1:] if has_start_row else built, strict=True))
        for run in group:
            rows.append(by_run.get(run.name) or Row(f"{run.name} (not started)", (None,) * len(COLUMNS), ""))
    chance = table5_rows([r.run_dir for r in runs if (r.run_dir / "config.yaml").exists()])[-1]
    return rows, Row(CHANCE_LABEL, chance.values, "")


def curve(run: ReportRun):
    """Every evaluated checkpoint of a run as (epoch, Table-5 values); x is the step if epochs are unknown."""
    from launch.plots import Curve
    from launch.run_state import steps_per_epoch
    from train.config import load_recipe

    per_epoch = None
    if (run.run_dir / "config.yaml").exists():
        try:
            per_epoch = steps_per_epoch(load_recipe(run.run_dir / "config.yaml"))
        except Exception:  # an old or foreign config: fall back to steps
            per_epoch = None
    points = []
    for step, folder in checkpoint_folders(run.run_dir):
        values = []
        for _, benchmark, metric in COLUMNS:
            result = read_result(folder, benchmark)
            values.append(None if result is None else result["metrics"].get(metric))
        points.append((step / per_epoch if per_epoch else float(step), tuple(values)))
    return Curve(run.name, "epoch" if per_epoch else "optimizer step", tuple(points))


def _state(run: ReportRun) -> str:
    checkpoints = [s for s, _ in checkpoint_folders(run.run_dir)] if run.run_dir.exists() else []
    if not run.run_dir.exists():
        return "not started"
    if not checkpoints:
        return "not evaluated"
    return f"evaluated up to step {max(checkpoints)}"


def report_markdown(source: ReportSource, rows: list[Row], chance: Row, plots: dict[str, Path]) -> str:
    lines = [f"# {source.title}: results", ""]
    if source.description:
        lines += [source.description, ""]
    lines += [
        "Layout of the paper's Table 5: two-way What'sUp Left/Right (individual and pair accuracy), COCO-spatial and "
        "GQA-spatial one- and two-object accuracy, in percent. Each run's row holds its last evaluated checkpoint; "
        "the first row of each model holds its starting weights. – = no result (missing, not zero).",
        "",
        markdown([*rows, chance]).rstrip(),
        "",
        "## Runs",
        "",
        "| run | recipe | values | state | numbers from |",
        "|---|---|---|---|---|",
    ]
    by_name = {row.label: row for row in rows}
    for run in source.runs:
        row = next((r for label, r in by_name.items() if label.endswith(f"({run.name})")), None)
        origin = row.source if row is not None and row.source else "–"
        lines.append(f"| {run.name} | {run.recipe or '–'} | {run.values or '–'} | {_state(run)} | {origin} |")
    lines += ["", "## Plots", ""]
    for label, path in plots.items():
        lines += [f"### {label}", "", f"![{label}]({path.relative_to(source.out_dir)})", ""]
    return "\n".join(lines)


def write_report(source: ReportSource) -> tuple[list[Row], Row, dict[str, Path]]:
    from launch import plots as figures

    out = source.out_dir
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows, chance = table(source.runs)
    curves = [curve(run) for run in source.runs]
    made = {
        "Accuracy per benchmark": figures.grouped_bars(rows, chance, out / "plots" / "bars.png", source.title),
        "Accuracy against epoch": figures.accuracy_by_epoch(
            curves, chance, out / "plots" / "accuracy_by_epoch.png", source.title
        ),
    }
    for run_curve in curves:
        made[run_curve.run] = figures.run_by_epoch(run_curve, chance, out / "plots" / f"{run_curve.run}.png")
    (out / REPORT_CSV).write_text(as_csv([*rows, chance]))
    (out / REPORT_MD).write_text(report_markdown(source, rows, chance, made))
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
    columns = ["row", *(c[0] for c in COLUMNS), "source"]
    data = [[r.label, *r.values, r.source] for r in [*rows, chance]]
    run.log({"table5": wandb.Table(columns=columns, data=data)})
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from train.typed_config import ConfigError

    args = parse_args(argv)
    first = args.inputs[0]
    try:
        if first.endswith((".yaml", ".yml")) or not Path(first).is_dir():
            source = from_sweep(first, args.output_dir, args.inputs[1:])
            if args.out:
                source = ReportSource(source.title, source.description, source.group, args.out.resolve(), source.runs)
        else:
            source = from_folders([Path(p) for p in args.inputs], (args.out or Path("report")).resolve())
    except ConfigError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    rows, chance, plots = write_report(source)
    print(markdown([*rows, chance]), end="")
    print(f"report: {source.out_dir / REPORT_MD}, {source.out_dir / REPORT_CSV}, {len(plots)} plots in plots/")
    settings = wandb_settings(source, args.wandb_mode)
    if settings["mode"] != "disabled":
        log_to_wandb(source, rows, chance, plots, settings)
        print(f"report: logged to W&B ({settings['mode']}), group {settings['group']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
