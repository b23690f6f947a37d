"""COCO-spatial and GQA-spatial, one- and two-object (Kamath et al., 2023): two-way caption choice per image.

Each row is `[image_id, correct_caption, incorrect_caption]`; the image scores both captions and is correct
iff argmax == 0 (numpy argmax: a tie counts as correct). Images: COCO `val2017/{image_id:012d}.jpg`,
GQA (Visual Genome) `vg_images/{image_id}.jpg`; ids may be ints or strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.strict_json import loads as loads_json
from data_prep.strict_json import repeated_keys
from eval.common import (
    ARGMAX_TIE_RULE,
    STRICT_FP32_TIE_RULE,
    STRICT_TIE_RULE,
    BenchmarkResult,
    Inputs,
    Scorer,
    check_label_fixes,
    check_scoring,
    file_record,
    make_table,
    percent,
    pick,
    require_file,
    require_images,
)


@dataclass(frozen=True)
class Source:
    what: str
    file_prefix: str  # <prefix>_qa_<one|two>_obj.json
    image_dir: str
    zero_pad: int  # COCO names images by the id padded to 12 digits, Visual Genome by the bare id


SOURCES = {
    "coco": Source("COCO-spatial", "coco", "val2017", 12),
    "gqa": Source("GQA-spatial", "vg", "vg_images", 0),
}


def image_name(image_id: int | str, zero_pad: int) -> str:
    # str().zfill as the official loader: the same name for 397133 and "397133".
    return f"{str(image_id).zfill(zero_pad)}.jpg"


TIE_RULES = {"official": ARGMAX_TIE_RULE, "released": STRICT_TIE_RULE, "strict": STRICT_FP32_TIE_RULE}
FP16_WHEN_RELEASED = True
TIE_RULE = TIE_RULES["official"]


def load_rows(data_root: Path, source: str, objects: str) -> tuple[list[list[Any]], list[Path], Path]:
    """The questions file's rows, the image each row reads, and the file's path."""
    spec = SOURCES[source]
    file_name = f"{spec.file_prefix}_qa_{objects}_obj.json"
    qa_path = require_file(data_root / "data" / file_name, f"{spec.what} {objects}-object questions ({file_name})")
    rows, repeats = loads_json(qa_path.read_text())
    if repeats:  # rows are lists: a repeated key can only be the file's mistake at its top level or inside a row
        twice = repeated_keys(rows)
        raise ValueError(f"{qa_path}: a key given twice, which to use is ambiguous: {'; '.join(twice)}")
    if not isinstance(rows, list):
        raise ValueError(f"{qa_path}: expected a JSON list of [image_id, correct, incorrect] rows")
    for n, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(c, str) for c in row[1:])):
            raise ValueError(f"{qa_path} row {n}: expected [image_id, correct_caption, incorrect_caption], got {row!r}")
    images = [data_root / "data" / spec.image_dir / image_name(row[0], spec.zero_pad) for row in rows]
    return rows, images, qa_path


def first_rows(rows: list[list[Any]], images: list[Path], limit: int) -> tuple[list[list[Any]], list[Path]]:
    """`limit` > 0: the first `limit` rows and their images; 0: every row."""
    if limit < 0:
        raise ValueError(f"limit {limit}: must be >= 0 (0 = every row)")
    if not limit:
        return rows, images
    return rows[:limit], images[:limit]


def inputs(data_root: Path | str, *, source: str = "coco", objects: str = "one", limit: int = 0) -> Inputs:
    """The questions file and the images its rows read; `limit` as `run`."""
    data_root = Path(data_root)
    rows, images, qa_path = load_rows(data_root, source, objects)
    _, images = first_rows(rows, images, limit)
    return Inputs((qa_path,), tuple(images), data_root / "data" / SOURCES[source].image_dir)


def label_fix_rules(mode: str, **_variant: str) -> list[list[str]]:
    check_label_fixes(mode)
    return []  # no published fixes exist for these files


def run(
    scorer: Scorer,
    data_root: Path | str,
    *,
    source: str = "coco",
    objects: str = "one",
    label_fixes: str = "paper",
    limit: int = 0,
    scoring: str = "official",
) -> BenchmarkResult:
    """`limit` > 0: only the first `limit` rows (`first_rows`), a partial result; 0: all. `scoring`: official
    (argmax, a tie is correct) or released (the authors' strict '>' on fp16 scores)."""
    check_label_fixes(label_fixes)  # recorded; no published fixes exist for these files
    check_scoring(scoring)
    data_root = Path(data_root)
    rows, images, qa_path = load_rows(data_root, source, objects)
    rows, images = first_rows(rows, images, limit)
    require_images(images, f"{SOURCES[source].what} images")

    texts = [c for row in rows for c in row[1:]]
    table = make_table(scorer, [str(p) for p in images], texts, fp16_logits=scoring == "released")
    examples: list[dict[str, Any]] = []
    for n, (row, image) in enumerate(zip(rows, images, strict=True)):
        options = [row[1], row[2]]
        scores = [table(str(image), c) for c in options]
        prediction = pick(scores, scoring)
        examples.append(
            {
                "id": n,  # row index: image ids repeat across rows
                "image_id": row[0],
                "image": image.relative_to(data_root).as_posix(),
                "options": options,
                "scores": scores,
                "prediction": prediction,
                "correct": prediction == 0,
            }
        )
    correct = sum(e["correct"] for e in examples)
    details: dict[str, Any] = {
        "tie_rule": TIE_RULES[scoring],
        "scoring": {"mode": scoring, "precision": "fp16" if scoring == "released" else "fp32"},
        "label_fixes": {"mode": label_fixes, "applied": []},
        "files": [file_record(qa_path, data_root)],
        "counts": {"rows": len(rows), "images": len(set(images))},
        "denominators": {"indiv": len(rows)},
        "units": "percent",
    }
    name = f"{source}_spatial_{objects}"
    return BenchmarkResult(name, {"indiv": percent(correct, len(rows))}, {"indiv": 50.0}, examples, details)
