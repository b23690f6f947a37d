"""The paper's Table 5 layout for a set of evaluated runs: the starting point, each run's last checkpoint, chance.

    python -m eval.table5 runs/tiny_clip_finetune runs/tiny_clip_neg [--out table5.md] [--csv table5.csv]

Columns: What'sUp A and B two-way Left/Right (individual and pair accuracy), COCO-spatial and GQA-spatial
one- and two-object accuracy. A result that is missing is shown as missing, never as zero. A row whose results score
only part of a benchmark (`eval.run --limit N`) is marked PARTIAL in the Markdown, the CSV's `marks` column and the
row's label cell; the CSV's `checkpoint` column names the checkpoint each row's numbers come from.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.report import read_result
from train.typed_config import ConfigError
from train.yaml_loading import load_yaml_file

# (header, benchmark, metric key) in the paper's column order.
COLUMNS = (
    ("What'sUp A L/R indiv", "whatsup_a", "left_right/indiv"),
    ("What'sUp A L/R pairs", "whatsup_a", "left_right/pairs"),
    ("What'sUp B L/R indiv", "whatsup_b", "left_right/indiv"),
    ("What'sUp B L/R pairs", "whatsup_b", "left_right/pairs"),
    ("COCO one-obj", "coco_spatial_one", "indiv"),
    ("COCO two-obj", "coco_spatial_two", "indiv"),
    ("GQA one-obj", "gqa_spatial_one", "indiv"),
    ("GQA two-obj", "gqa_spatial_two", "indiv"),
)


@dataclass(frozen=True)
class Row:
    label: str
    values: tuple[float | None, ...]
    source: str  # the eval folder the numbers come from ("" for chance)
    step: int | None = None  # the optimizer step of that checkpoint (None: chance, or no result)
    marks: tuple[str, ...] = ()  # e.g. "PARTIAL (--limit 4)", "MIXED (steps 4/6)": shown wherever the row is


def partial_marks(folder: Path | None) -> tuple[str, ...]:
    """ "PARTIAL (--limit N)" when any Table-5 result in the folder scores only the first N examples."""
    if folder is None:
        return ()
    limits = set()
    for benchmark in dict.fromkeys(b for _, b, _ in COLUMNS):
        result = read_result(folder, benchmark)
        if isinstance(result, dict) and result.get("limit"):
            limits.add(int(result["limit"]))
    return (f"PARTIAL (--limit {'/'.join(map(str, sorted(limits)))})",) if limits else ()


def shown_label(row: Row) -> str:
    """The row's label with its marks, as every table prints it."""
    return " ".join([row.label, *(f"**{m}**" for m in row.marks)])


def checkpoint_folders(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every evaluated checkpoint of a run, by step."""
    found = []
    for folder in (run / "eval").glob("*"):
        if folder.is_dir() and folder.name.split("_")[-1].isdigit():
            step = 0 if folder.name == "step_0" else _step_of(folder)
            found.append((step, folder))
    return sorted(found)


def _step_of(folder: Path) -> int:
    for _, benchmark, _ in COLUMNS:
        result = read_result(folder, benchmark)
        if result is not None and "step" in result:
            return int(result["step"])
    return int(folder.name.split("_")[-1])


def _values(folder: Path | None) -> tuple[float | None, ...]:
    out = []
    for _, benchmark, metric in COLUMNS:
        result = read_result(folder, benchmark) if folder is not None else None
        out.append(None if result is None else result["metrics"].get(metric))
    return tuple(out)


def _chance(folders: Sequence[Path]) -> tuple[float | None, ...]:
    out = []
    for _, benchmark, metric in COLUMNS:
        value = None
        for folder in folders:
            result = read_result(folder, benchmark)
            if result is not None and result["chance"].get(metric) is not None:
                value = result["chance"][metric]
                break
        out.append(value)
    return tuple(out)


def _variant(run: Path) -> str:
    config = load_yaml_file(run / "config.yaml", "run config") if (run / "config.yaml").exists() else {}
    parts = []
    text = (config.get("model") or {}).get("text") or {}
    if text.get("tower") == "llm2vec":
        parts.append("llm2vec")
    if not ((config.get("model") or {}).get("image") or {}).get("locked", True):
        parts.append("unlocked")
    head = ((config.get("model") or {}).get("head") or {}).get("kind", "dot")
    if head != "dot":  # an alignment head on the patch tokens in place of the dot product
        parts.append({"pacl": "PACL", "sparc": "SPARC", "xattn": "cross-attn. head"}.get(head, head))
    loss = (config.get("loss") or {}).get("name", "")
    parts.append("neg. cap." if loss.endswith("neg") or loss == "negclip" else "finetuning")
    return f"+ {', '.join(parts)} ({run.name})"


def table5_rows(runs: Sequence[Path]) -> list[Row]:
    rows: list[Row] = []
    starts = [f for run in runs for step, f in checkpoint_folders(run) if step == 0]
    if starts:
        model = (load_yaml_file(runs[0] / "config.yaml", "run config") or {}).get("model", {}).get("name", "model")
        rows.append(Row(f"{model} (starting weights)", _values(starts[0]), str(starts[0]), 0, partial_marks(starts[0])))
    for run in runs:
        evaluated = [(s, f) for s, f in checkpoint_folders(run) if s > 0]
        step, last = evaluated[-1] if evaluated else (None, None)
        rows.append(Row(_variant(run), _values(last), str(last or ""), step, partial_marks(last)))
    all_folders = [f for run in runs for _, f in checkpoint_folders(run)]
    rows.append(Row("Random chance", _chance(all_folders), ""))
    return rows


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown(
    rows: Sequence[Row],
    extra_headers: Sequence[str] = (),
    extra: Sequence[Sequence[str]] = (),
    cells: Sequence[Sequence[str]] = (),
) -> str:
    """The table in Markdown; `extra_headers`/`extra` add columns after Table 5's (one list of cells per row),
    `cells` replaces a row's value cells (e.g. "50.1 ± 0.3") where given."""
    header = ["", *(c[0] for c in COLUMNS), *extra_headers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(rows):
        values = list(cells[i]) if i < len(cells) and cells[i] else list(map(_cell, r.values))
        more = list(extra[i]) if i < len(extra) else ["–"] * len(extra_headers)
        lines.append("| " + " | ".join([shown_label(r), *values, *more]) + " |")
    return "\n".join(lines) + "\n"


def as_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", *(c[0] for c in COLUMNS), "checkpoint", "marks", "source"])
    for r in rows:
        values = ("" if v is None else f"{v:.4f}" for v in r.values)
        writer.writerow([r.label, *values, "" if r.step is None else f"step {r.step}", "; ".join(r.marks), r.source])
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.table5", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders already scored by eval.run")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "eval").is_dir()]
    if missing:
        print(f"table5: not evaluated yet (run python -m eval.run --run RUN): {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        rows = table5_rows(args.runs)
    except ConfigError as err:
        print(f"table5: {err}", file=sys.stderr)
        return 2
    text = markdown(rows)
    if any(r.marks for r in rows):
        text += "\nPARTIAL: the row's results score only the first N examples of a benchmark (eval.run --limit N).\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if args.csv:
        args.csv.write_text(as_csv(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
