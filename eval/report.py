"""Result files: `<benchmark>.json` + `<benchmark>.scores.jsonl` per checkpoint, summary.csv/.md, W&B.

A result's JSON is written after its scores file, each atomically, so an existing JSON means a finished result.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from eval.common import BenchmarkResult, sha256_file

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


def result_path(folder: Path, benchmark: str) -> Path:
    return folder / f"{benchmark}.json"


def scores_path(folder: Path, benchmark: str) -> Path:
    return folder / f"{benchmark}.scores.jsonl"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(result: BenchmarkResult, folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes the per-example scores, then the JSON record (metrics, chance, provenance, `extra`)."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = scores_path(folder, result.benchmark)
    _write_atomic(scores, "".join(json.dumps(e, allow_nan=False) + "\n" for e in result.examples))
    record = {
        **result.record(),
        "scores_file": scores.name,
        "scores_sha256": sha256_file(scores),
        **(extra or {}),
    }
    path = result_path(folder, result.benchmark)
    _write_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def read_result(folder: Path, benchmark: str) -> dict[str, Any] | None:
    try:
        return json.loads(result_path(folder, benchmark).read_text())
    except (OSError, ValueError):
        return None


def read_scores(folder: Path, benchmark: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in scores_path(folder, benchmark).read_text().splitlines()]


@dataclass
class SummaryRow:
    checkpoint: str
    step: int
    results: dict[str, dict[str, Any]]  # benchmark -> JSON record (missing benchmarks are absent)


def metric_columns(rows: Sequence[SummaryRow], benchmarks: Sequence[str]) -> list[tuple[str, str]]:
    """(benchmark, metric) in benchmark order, then each benchmark's own metric order."""
    columns: dict[tuple[str, str], None] = {}
    for benchmark in benchmarks:
        for row in rows:
            for metric in row.results.get(benchmark, {}).get("metrics", {}):
                columns[(benchmark, metric)] = None
    return list(columns)


def _chance(rows: Sequence[SummaryRow], benchmark: str, metric: str) -> float | None:
    for row in rows:
        if benchmark in row.results:
            return row.results[benchmark]["chance"].get(metric)
    return None


def _label_fixes(row: SummaryRow) -> str:
    return ",".join(sorted({r["label_fixes"]["mode"] for r in row.results.values()}))


def row_limit(row: SummaryRow) -> str:
    """The --limit of a checkpoint's partial results ("" when every result is whole)."""
    return "/".join(str(n) for n in sorted({r["limit"] for r in row.results.values() if r.get("limit")}))


def summary_csv(rows: Sequence[SummaryRow], benchmarks: Sequence[str]) -> str:
    columns = metric_columns(rows, benchmarks)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["checkpoint", "step", "label_fixes", "limit", *(f"{b}/{m}" for b, m in columns)])
    for row in rows:
        values = [row.results.get(b, {}).get("metrics", {}).get(m) for b, m in columns]
        writer.writerow([row.checkpoint, row.step, _label_fixes(row), row_limit(row),
                         *("" if v is None else repr(v) for v in values)])  # fmt: skip
    chance = [_chance(rows, b, m) for b, m in columns]
    writer.writerow(["chance", "", "", "", *("" if v is None else repr(v) for v in chance)])
    return out.getvalue()


def _shown(value: float | None, metric: str) -> str:
    """One decimal for percentages (rounded half up, as the paper prints 6.25 as 6.3), three for cosines."""
    if value is None:
        return "–"
    places = "0.001" if metric.endswith("cosine") else "0.1"
    return str(Decimal(repr(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def summary_markdown(rows: Sequence[SummaryRow], benchmarks: Sequence[str], title: str) -> str:
    lines = [f"# {title}", "", "Percent, except cosine similarities; last row: random chance.", ""]
    for benchmark in benchmarks:
        metrics = [m for b, m in metric_columns(rows, [benchmark])]
        if not metrics:
            continue
        lines += [f"## {benchmark}", "", "| checkpoint | " + " | ".join(metrics) + " |"]
        lines.append("|---" * (len(metrics) + 1) + "|")
        for row in rows:
            if benchmark in row.results:
                values = row.results[benchmark]["metrics"]
                limit = row.results[benchmark].get("limit")
                name = f"{row.checkpoint} **PARTIAL (--limit {limit})**" if limit else row.checkpoint
                lines.append(f"| {name} | " + " | ".join(_shown(values.get(m), m) for m in metrics) + " |")
        chance = [_shown(_chance(rows, benchmark, m), m) for m in metrics]
        lines += ["| chance | " + " | ".join(chance) + " |", ""]
    return "\n".join(lines)


def write_summary(folder: Path, rows: Sequence[SummaryRow], benchmarks: Sequence[str], title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / SUMMARY_CSV, summary_csv(rows, benchmarks))
    _write_atomic(folder / SUMMARY_MD, summary_markdown(rows, benchmarks, title))


def log_to_wandb(
    wandb_cfg: Any,
    run_name: str,
    run_dir: Path,
    rows: Sequence[SummaryRow],
    benchmarks: Sequence[str],
    config: dict[str, Any] | None = None,
):
    """The folder's eval W&B run (offline by default; its id stored in the folder and resumed, so every eval of a run
    is one W&B run, job_type eval, in the training run's group): metrics per checkpoint and the summary table;
    `config` (flattened settings) is the run's W&B config."""
    import wandb  # lazily: importing eval must not import wandb

    from train.tracking import run_tags, stored_run_id

    run = wandb.init(
        mode=wandb_cfg.mode,
        project=wandb_cfg.project,
        entity=wandb_cfg.entity or None,
        group=wandb_cfg.group or run_name,
        name=f"{run_name}-eval",
        id=stored_run_id(run_dir, "eval"),
        resume="allow",
        job_type="eval",
        tags=run_tags("", config or {}),
        dir=str(run_dir),
        config=config,
    )
    # Checkpoints are logged against their optimizer step, not W&B's own counter.
    run.define_metric("checkpoint_step")
    run.define_metric("eval/*", step_metric="checkpoint_step")
    columns = metric_columns(rows, benchmarks)
    for row in rows:
        values = {f"eval/{b}/{m}": row.results[b]["metrics"][m] for b, m in columns if b in row.results}
        run.log({"checkpoint_step": row.step, **values})
    table_columns = ["checkpoint", "step", "limit", *(f"{b}/{m}" for b, m in columns)]
    data = [
        [row.checkpoint, row.step, row_limit(row),
         *(row.results.get(b, {}).get("metrics", {}).get(m) for b, m in columns)]
        for row in rows
    ]  # fmt: skip
    run.log({"eval/summary": wandb.Table(columns=table_columns, data=data)})
    if any(row_limit(row) for row in rows):  # partial numbers are marked on the run, not only in its table
        run.tags = (*run.tags, "PARTIAL")
        run.summary["marks"] = "PARTIAL"
    run.finish()
