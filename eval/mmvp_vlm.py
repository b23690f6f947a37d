"""MMVP-VLM (Tong et al., 2024): pairs of near-identical images with contrasting statements, 9 visual patterns.

Official CLIP rule (../shared/reference/formats.md): text = "a photo of " + statement; a pair is two consecutive
rows of Questions.csv in file order (image i1 with statement t1, then i2 with t2); the pair is correct iff
s(i1,t1) > s(i2,t1) and s(i2,t2) > s(i1,t2) with s the cosine similarity (a softmax over the two images per
text preserves the order), strict, so a tie is wrong. Reported per visual pattern (the Type column) and as the
mean over patterns. Also: the paper's relaxed pair rule (Section 5.2), cos(i1,t1) - cos(i1,t2) >
cos(i2,t1) - cos(i2,t2), and the mean image-pair cosine similarity.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from eval.common import (
    BenchmarkResult,
    Scorer,
    ScoreTable,
    check_label_fixes,
    file_record,
    mean,
    percent,
    require_file,
    require_images,
)

PROMPT = "a photo of "
COLUMNS = ("Question ID", "Type", "Statement")
TIE_RULE = (
    "strict: a pair is correct iff s(i1,t1) > s(i2,t1) and s(i2,t2) > s(i1,t2), so a tie is wrong; "
    "relaxed pairs also need a strict '>'"
)


def metric_key(pattern: str) -> str:
    return pattern.strip().lower().replace(" ", "_")


def load_rows(data_root: Path) -> tuple[list[dict[str, str]], Path]:
    questions = require_file(data_root / "MMVP_VLM" / "Questions.csv", "MMVP-VLM questions (MMVP_VLM/Questions.csv)")
    with open(questions, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if not set(COLUMNS) <= set(header):
            raise ValueError(f"{questions}: expected columns {', '.join(COLUMNS)}, found {header}")
        rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
    if len(rows) % 2:
        raise ValueError(f"{questions}: {len(rows)} rows, but pairs are consecutive rows, so the count must be even")
    return rows, questions


def run(scorer: Scorer, data_root: Path | str, *, label_fixes: str = "paper") -> BenchmarkResult:
    check_label_fixes(label_fixes)  # recorded; no published fixes exist for this file
    data_root = Path(data_root)
    rows, questions = load_rows(data_root)
    images = [data_root / "MMVP_VLM" / row["Type"] / f"{int(row['Question ID'])}.jpg" for row in rows]
    texts = [PROMPT + row["Statement"] for row in rows]
    require_images(images, "MMVP-VLM images")
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        if first["Type"] != second["Type"]:
            raise ValueError(
                f"{questions}: questions {first['Question ID']} and {second['Question ID']} form a pair "
                f"but have different types ({first['Type']!r}, {second['Type']!r})"
            )

    table = ScoreTable(scorer, [str(p) for p in images], texts)
    examples: list[dict[str, Any]] = []
    for k in range(0, len(rows), 2):
        i1, i2, t1, t2 = str(images[k]), str(images[k + 1]), texts[k], texts[k + 1]
        scores = [[table(i1, t1), table(i1, t2)], [table(i2, t1), table(i2, t2)]]  # [image][text]
        (s11, s12), (s21, s22) = scores
        examples.append(
            {
                "id": f"{rows[k]['Question ID']}-{rows[k + 1]['Question ID']}",
                "type": rows[k]["Type"],
                "images": [
                    images[k].relative_to(data_root).as_posix(),
                    images[k + 1].relative_to(data_root).as_posix(),
                ],
                "texts": [t1, t2],
                "scores": scores,
                # The image each text picks; with the strict rule a tie picks the wrong one.
                "prediction": [0 if s11 > s21 else 1, 1 if s22 > s12 else 0],
                "correct": s11 > s21 and s22 > s12,
                "relaxed_correct": s11 - s12 > s21 - s22,
                "image_cosine": table.image_cosine(i1, i2),
            }
        )

    patterns = list(dict.fromkeys(e["type"] for e in examples))
    metrics: dict[str, float] = {}
    chance: dict[str, float | None] = {}
    for name, field, chance_value in (("pairs", "correct", 25.0), ("relaxed_pairs", "relaxed_correct", 50.0)):
        per_pattern = {}
        for pattern in patterns:
            outcomes = [e[field] for e in examples if e["type"] == pattern]
            per_pattern[pattern] = percent(sum(outcomes), len(outcomes))
            metrics[f"{name}/{metric_key(pattern)}"] = per_pattern[pattern]
            chance[f"{name}/{metric_key(pattern)}"] = chance_value
        metrics[f"{name}/mean"] = mean(list(per_pattern.values()))  # mean over visual patterns
        chance[f"{name}/mean"] = chance_value
    metrics["image_pair_cosine"] = mean([e["image_cosine"] for e in examples])
    chance["image_pair_cosine"] = None

    details: dict[str, Any] = {
        "tie_rule": TIE_RULE,
        "label_fixes": {"mode": label_fixes, "applied": []},
        "files": [file_record(questions, data_root)],
        "counts": {"rows": len(rows), "pairs": len(examples), "patterns": len(patterns)},
        "patterns": {metric_key(p): p for p in patterns},
        "denominators": {f"pairs/{metric_key(p)}": sum(e["type"] == p for e in examples) for p in patterns},
        "units": "percent; image_pair_cosine is a cosine similarity",
    }
    return BenchmarkResult("mmvp_vlm", metrics, chance, examples, details)
