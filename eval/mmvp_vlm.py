"""MMVP-VLM (Tong et al., 2024): pairs of near-identical images with contrasting statements, 9 visual patterns.

Official CLIP rule (`scripts/evaluate_vlm.py`, docs/formats.md): text = "a photo of " + statement;
a pair is two consecutive rows of Questions.csv in file order (an odd Question ID, image i1 with statement t1,
then an even one, i2 with t2). For each statement the script takes a softmax over the two images and predicts
`"img1" if p(img1) > 0.5 else "img2"`, the truth being img1 for an odd ID and img2 for an even one. So a tie
goes to img2: the pair is correct iff s(i1,t1) > s(i2,t1) and s(i2,t2) >= s(i1,t2), with s the cosine
similarity (the softmax preserves the order). Reported per visual pattern (the Type column) and as the mean over
patterns. Also: the paper's relaxed pair rule (Section 5.2), cos(i1,t1) - cos(i1,t2) > cos(i2,t1) - cos(i2,t2),
and the mean image-pair cosine similarity.

Images: `MMVP_VLM/MMVP_VLM_Images/<Type>/<qid>.jpg` (the dataset's README), `MMVP_VLM/MLLM_VLM Images/<Type>/`
(the folder the official script reads), `MMVP_VLM/MLLM_VLM_Images/<Type>/` (the authors' eval_clip.py) or
`MMVP_VLM/<Type>/` (the generated world); the first found is used and recorded. As the official script, both images
of a pair are read from the folder of the pair's first row's Type.

`mmvp_clip` (layout "mmvp_clip"): MMVP's 300 images scored the same way, with the statements of the authors'
`Questions-clip.csv` (GitHub lst627/CLIP-Embeds, additional_questions/; one statement per image, Type "Unknown"),
placed by the user beside MMVP's own files: `MMVP/Questions-clip.csv` with images `MMVP/MMVP_Images/<qid>.jpg`
(the authors' folder name) or `MMVP/MMVP Images/<qid>.jpg` (the dataset's).

Both score under scoring=official and released alike: the authors' eval_clip.py scores them with the official
script's rule, in fp32 (its MMVP code runs without autocast); the mode is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.common import (
    BenchmarkResult,
    Inputs,
    Scorer,
    check_label_fixes,
    check_scoring,
    file_record,
    make_table,
    mean,
    percent,
    read_csv_rows,
    require_file,
    require_images,
)

PROMPT = "a photo of "
COLUMNS = ("Question ID", "Type", "Statement")
# (folder under MMVP_VLM/, where that layout comes from), in the order they are looked for.
IMAGE_FOLDERS = (
    ("MMVP_VLM_Images", "the dataset's README"),
    ("MLLM_VLM Images", "the official scripts/evaluate_vlm.py"),
    ("MLLM_VLM_Images", "the authors' eval_clip.py"),
    ("", "the generated world"),
)


@dataclass(frozen=True)
class Layout:
    benchmark: str
    folder: str  # under the data root
    questions: str  # the statements file in it
    image_folders: tuple[tuple[str, str], ...]  # (folder under `folder`, where that layout comes from)
    by_type: bool  # images in <Type>/ subfolders (MMVP-VLM) or flat (MMVP)


LAYOUTS = {
    "mmvp_vlm": Layout("mmvp_vlm", "MMVP_VLM", "Questions.csv", IMAGE_FOLDERS, by_type=True),
    "mmvp_clip": Layout(
        "mmvp_clip",
        "MMVP",
        "Questions-clip.csv",
        (("MMVP_Images", "the authors' eval_clip.py"), ("MMVP Images", "the MMVP dataset")),
        by_type=False,
    ),
}
FP16_WHEN_RELEASED = False  # eval_clip.py's eval_MMVP runs without autocast
TIE_RULE = (
    "official evaluate_vlm.py: each statement picks image 1 iff p(image 1) > 0.5 (softmax over the pair's two "
    "images, compared here as s(i1,t) > s(i2,t) on the cosines), else image 2, so a tie goes to image 2: a tie on "
    "the first statement (truth: image 1) is wrong, a tie on the second (truth: image 2) is correct; a pair is "
    "correct iff s(i1,t1) > s(i2,t1) and s(i2,t2) >= s(i1,t2); relaxed pairs need a strict '>' (a tie is wrong)"
)
TIE_RULES = {
    "official": TIE_RULE,
    "released": TIE_RULE + " (the authors' eval_clip.py applies the same rule, in fp32)",
    "strict": TIE_RULE + " (the authors' eval_vqa_score.py applies the same rule to VQAScores)",
}


def metric_key(pattern: str) -> str:
    return pattern.strip().lower().replace(" ", "_")


def load_rows(data_root: Path, layout: str = "mmvp_vlm") -> tuple[list[dict[str, str]], Path]:
    """The statements file's rows in file order, checked: (odd, even) Question IDs pair up, each pair of one Type."""
    spec = LAYOUTS[layout]
    where = f"{spec.folder}/{spec.questions}"
    what = (
        "MMVP-VLM questions"
        if layout == "mmvp_vlm"
        else "the authors' MMVP statements for CLIP (from lst627/CLIP-Embeds additional_questions/)"
    )
    questions = require_file(data_root / spec.folder / spec.questions, f"{what} ({where})")
    # Values as the official script reads them (unstripped): the statement is the text, the Type the folder.
    rows = read_csv_rows(questions, COLUMNS)
    if not rows:
        raise ValueError(f"{questions}: no rows")
    if len(rows) % 2:
        raise ValueError(f"{questions}: {len(rows)} rows, but pairs are consecutive rows, so the count must be even")
    for n, row in enumerate(rows):
        if not row["Question ID"].strip().isdigit():
            raise ValueError(f"{questions} data row {n + 1}: Question ID {row['Question ID']!r} is not a whole number")
        if not row["Statement"].strip():
            raise ValueError(f"{questions} data row {n + 1} (Question ID {row['Question ID'].strip()}): no Statement")
    for k in range(0, len(rows), 2):
        first, second = rows[k], rows[k + 1]
        ids = f"Question IDs {first['Question ID'].strip()}, {second['Question ID'].strip()}"
        pair = f"{questions}: data rows {k + 1} and {k + 2} ({ids})"
        if first["Type"] != second["Type"]:
            raise ValueError(f"{pair} form a pair but have different Types ({first['Type']!r}, {second['Type']!r})")
        # The official script takes the truth from the ID's parity (odd: image 1, even: image 2); a pair that is
        # not (odd, even) would make both statements true of the same image, unlike every pair of the benchmark.
        if int(first["Question ID"]) % 2 != 1 or int(second["Question ID"]) % 2 != 0:
            raise ValueError(f"{pair} form a pair, but a pair must be an odd Question ID followed by an even one")
    return rows, questions


def first_pairs(rows: list[dict[str, str]], limit: int) -> list[dict[str, str]]:
    """`limit` > 0: the rows of the first `limit` pairs (an example is a pair: two consecutive rows); 0: every row."""
    if limit < 0:
        raise ValueError(f"limit {limit}: must be >= 0 (0 = every pair)")
    if not limit:
        return rows
    return rows[: 2 * limit]


def _id(row: dict[str, str]) -> str:
    return row["Question ID"].strip()


def image_folder(data_root: Path, rows: list[dict[str, str]], layout: str = "mmvp_vlm") -> Path:
    """The first of the layout's image folders that has a folder for one of the rows' Types (flat: any image)."""
    spec = LAYOUTS[layout]
    base = data_root / spec.folder
    types = list(dict.fromkeys(row["Type"] for row in rows))
    for name, _ in spec.image_folders:
        folder = base / name if name else base
        if spec.by_type and any((folder / kind).is_dir() for kind in types):
            return folder
        if not spec.by_type and folder.is_dir():
            return folder
    inner = "<Type>/<qid>.jpg" if spec.by_type else "<qid>.jpg"
    looked = "; ".join(f"{base / name if name else base}/{inner} ({where})" for name, where in spec.image_folders)
    kinds = f", with <Type> one of {', '.join(map(repr, types[:9]))}" if spec.by_type else ""
    what = "MMVP-VLM" if layout == "mmvp_vlm" else "MMVP (for mmvp_clip)"
    raise FileNotFoundError(f"{what} images not found: looked for {looked}{kinds}")


def image_paths(data_root: Path, rows: list[dict[str, str]], layout: str = "mmvp_vlm") -> tuple[list[Path], Path]:
    folder = image_folder(data_root, rows, layout)
    if not LAYOUTS[layout].by_type:
        return [folder / f"{int(row['Question ID'])}.jpg" for row in rows], folder
    # Both images of a pair come from the folder of the pair's first row's Type, as in the official script.
    kinds = [rows[k - k % 2]["Type"] for k in range(len(rows))]
    return [folder / kind / f"{int(row['Question ID'])}.jpg" for kind, row in zip(kinds, rows, strict=True)], folder


def inputs(data_root: Path | str, *, limit: int = 0, layout: str = "mmvp_vlm") -> Inputs:
    """The statements file and the images its rows read; `limit` as `run`."""
    data_root = Path(data_root)
    rows, questions = load_rows(data_root, layout)
    rows = first_pairs(rows, limit)
    images, folder = image_paths(data_root, rows, layout)
    return Inputs((questions,), tuple(images), folder)


def label_fix_rules(mode: str, *, layout: str = "mmvp_vlm") -> list[list[str]]:
    check_label_fixes(mode)
    return []  # no published fixes exist for this file


def run(
    scorer: Scorer,
    data_root: Path | str,
    *,
    label_fixes: str = "paper",
    limit: int = 0,
    scoring: str = "official",
    layout: str = "mmvp_vlm",
) -> BenchmarkResult:
    """`limit` > 0: only the first `limit` pairs (`first_pairs`), a partial result; 0: all. `scoring` is recorded:
    both modes apply the official rule in fp32 here (module docstring)."""
    check_label_fixes(label_fixes)  # recorded; no published fixes exist for this file
    check_scoring(scoring)
    data_root = Path(data_root)
    rows, questions = load_rows(data_root, layout)
    rows = first_pairs(rows, limit)
    images, folder = image_paths(data_root, rows, layout)
    texts = [PROMPT + row["Statement"] for row in rows]
    require_images(images, "MMVP-VLM images" if layout == "mmvp_vlm" else "MMVP images (mmvp_clip)")

    table = make_table(scorer, [str(p) for p in images], texts)
    examples: list[dict[str, Any]] = []
    for k in range(0, len(rows), 2):
        i1, i2, t1, t2 = str(images[k]), str(images[k + 1]), texts[k], texts[k + 1]
        scores = [[table(i1, t1), table(i1, t2)], [table(i2, t1), table(i2, t2)]]  # [image][text]
        (s11, s12), (s21, s22) = scores
        # The image each text picks: image 1 (0) only when it scores strictly higher, so a tie picks image 2 (1).
        prediction = [0 if s11 > s21 else 1, 0 if s12 > s22 else 1]
        examples.append(
            {
                "id": f"{_id(rows[k])}-{_id(rows[k + 1])}",
                "type": rows[k]["Type"],
                "images": [
                    images[k].relative_to(data_root).as_posix(),
                    images[k + 1].relative_to(data_root).as_posix(),
                ],
                "texts": [t1, t2],
                "scores": scores,
                "prediction": prediction,
                "correct": prediction == [0, 1],
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
        "tie_rule": TIE_RULES[scoring],
        "scoring": {"mode": scoring, "precision": "fp32"},
        "label_fixes": {"mode": label_fixes, "applied": []},
        "files": [file_record(questions, data_root)],
        "images_folder": folder.relative_to(data_root).as_posix(),
        "counts": {"rows": len(rows), "pairs": len(examples), "patterns": len(patterns)},
        "patterns": {metric_key(p): p for p in patterns},
        "denominators": {f"pairs/{metric_key(p)}": sum(e["type"] == p for e in examples) for p in patterns},
        "units": "percent; image_pair_cosine is a cosine similarity",
    }
    return BenchmarkResult(layout, metrics, chance, examples, details)
