"""What'sUp Subsets A and B (Kamath et al., 2023): four-way, the paper's two-way subsets, relaxed pairs, cosines.

Definitions (docs/formats.md, "Evaluation data"):
- four-way: each image scores its 4 caption options; correct iff argmax == 0 (numpy argmax, a tie is correct).
  Individual accuracy over rows; pairs (both images of one axis correct, per object pair) over rows/2;
  set of 4 (all four images of an object pair correct) over rows/4.
- two-way (paper, Tables 1 and 5): A splits into Left/Right and On/Under, B into Left/Right and Front/Behind;
  each image chooses between its correct caption and the caption of the opposite relation on its axis.
  Individual accuracy over the axis' images (rows/2), pairs over the axis' object pairs (rows/4).
- relaxed pairs (paper, Section 5.2): for the axis pair (i1, c1), (i2, c2), correct iff
  cos(i1,c1) - cos(i1,c2) > cos(i2,c1) - cos(i2,c2); each image's own caption of each relation is used.
- image-pair cosine: mean cosine similarity of the two images of each axis pair (Tables 1 and 12).

An image's relation and object pair come from its file name `<obj1>_<relation>_<obj2>.jpeg`; an option's
relation from its words, never from its position among the distractors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
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
    mean,
    percent,
    pick,
    require_file,
    require_images,
)


@dataclass(frozen=True)
class Subset:
    name: str  # benchmark name
    what: str  # for error messages
    captions_file: str  # under <data_root>/data/
    relations: tuple[str, ...]  # file-name relation keys, in the order of the set of 4
    axes: tuple[tuple[str, str, str], ...]  # (two-way subset name, first relation, second relation)


SUBSETS = {
    "A": Subset(
        name="whatsup_a",
        what="What'sUp Subset A",
        captions_file="controlled_images_dataset.json",
        relations=("left_of", "right_of", "on", "under"),
        axes=(("left_right", "left_of", "right_of"), ("on_under", "on", "under")),
    ),
    "B": Subset(
        name="whatsup_b",
        what="What'sUp Subset B",
        captions_file="controlled_clevr_dataset.json",
        relations=("left_of", "right_of", "in-front_of", "behind"),
        axes=(("left_right", "left_of", "right_of"), ("front_behind", "in-front_of", "behind")),
    ),
}

# The published correction (reported in the benchmark's issue tracker, applied by the paper): these Subset A
# images show each other's relation, so with label_fixes=paper each of the two rows reads the other file.
PAPER_IMAGE_SWAPS = {"A": (("pillow_left_of_chair.jpeg", "pillow_right_of_chair.jpeg"),), "B": ()}

# Caption words that name a relation (the paper's own code matches these words the same way).
RELATION_WORDS = {
    "left": "left_of",
    "right": "right_of",
    "front": "in-front_of",
    "behind": "behind",
    "on": "on",
    "under": "under",
}

TIE_RULES = {
    "official": ARGMAX_TIE_RULE + "; relaxed pairs need a strict '>' (a tie is wrong)",
    "released": STRICT_TIE_RULE + "; relaxed pairs need a strict '>' (a tie is wrong)",
    "strict": STRICT_FP32_TIE_RULE + "; relaxed pairs need a strict '>' (a tie is wrong)",
}
FP16_WHEN_RELEASED = True
TIE_RULE = TIE_RULES["official"]

CHANCE_FOUR_WAY = {"indiv": 25.0, "pairs": 100.0 / 16, "set_of_4": 100.0 / 256}
CHANCE_TWO_WAY = {"indiv": 50.0, "pairs": 25.0, "relaxed_pairs": 50.0, "image_pair_cosine": None}


@dataclass(frozen=True)
class Row:
    label: str  # file-name stem of the row's own image: carries the label
    labelled_image: str  # image_path as written in the captions file
    image: Path  # the file actually scored (differs from the labelled one only under a label fix)
    objects: tuple[str, str]
    relation: str
    options: tuple[str, ...]
    option_relations: tuple[str, ...]


def parse_file_name(name: str) -> tuple[str, str, str]:
    """`beer-bottle_left_of_armchair.jpeg` -> ('beer-bottle', 'left_of', 'armchair') (official split on '_')."""
    parts = PurePosixPath(name).stem.split("_")
    if len(parts) < 3:
        raise ValueError(f"What'sUp image name {name!r} is not <obj1>_<relation>_<obj2>.<ext>")
    return parts[0], "_".join(parts[1:-1]), parts[-1]


def caption_relation(caption: str) -> str:
    found = {RELATION_WORDS[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in RELATION_WORDS}
    if len(found) != 1:
        raise ValueError(f"caption {caption!r}: expected exactly one relation word of {sorted(RELATION_WORDS)}")
    return found.pop()


def image_file(data_root: Path, image_path: str) -> Path:
    """Official `image_path` values start with `data/`, relative to the folder that contains `data/`."""
    parts = PurePosixPath(image_path).parts
    return data_root.joinpath("data", *(parts[1:] if parts and parts[0] == "data" else parts))


def load_rows(data_root: Path, subset: Subset) -> tuple[list[Row], Path]:
    captions_path = require_file(
        data_root / "data" / subset.captions_file, f"{subset.what} captions ({subset.captions_file})"
    )
    items, repeats = loads_json(captions_path.read_text())
    if not isinstance(items, list):
        raise ValueError(f"{captions_path}: expected a JSON list of rows")
    rows = []
    for n, item in enumerate(items):
        if repeats and (twice := repeated_keys(item)):
            raise ValueError(
                f"{captions_path} row {n}: a key given twice, which to use is ambiguous: {'; '.join(twice)}"
            )
        if not isinstance(item, dict) or "image_path" not in item or "caption_options" not in item:
            raise ValueError(f"{captions_path} row {n}: expected an object with image_path and caption_options")
        name = PurePosixPath(item["image_path"]).name
        obj1, relation, obj2 = parse_file_name(name)
        options = tuple(item["caption_options"])
        option_relations = tuple(caption_relation(c) for c in options)
        where = f"{captions_path} row {n} ({name})"
        if relation not in subset.relations:
            raise ValueError(f"{where}: relation {relation!r} is not one of {', '.join(subset.relations)}")
        if sorted(option_relations) != sorted(subset.relations):
            raise ValueError(f"{where}: options name relations {option_relations}, expected each of {subset.relations}")
        if option_relations[0] != relation:
            raise ValueError(f"{where}: option 0 {options[0]!r} is not the file name's relation {relation!r}")
        rows.append(
            Row(
                label=PurePosixPath(name).stem,
                labelled_image=item["image_path"],
                image=image_file(data_root, item["image_path"]),
                objects=(obj1, obj2),
                relation=relation,
                options=options,
                option_relations=option_relations,
            )
        )
    return rows, captions_path


def first_rows(rows: list[Row], limit: int) -> list[Row]:
    """`limit` > 0: the object pairs of the first `limit` rows, each whole (its four rows), in file order (pairs and
    sets of 4 need all four images of an object pair); 0: every row."""
    if limit < 0:
        raise ValueError(f"limit {limit}: must be >= 0 (0 = every row)")
    if not limit:
        return rows
    kept = set(row.objects for row in rows[:limit])
    return [row for row in rows if row.objects in kept]


def group_rows(rows: list[Row], subset: Subset) -> dict[tuple[str, str], dict[str, int]]:
    """(obj1, obj2) -> relation -> row index; every object pair must have each relation exactly once."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for i, row in enumerate(rows):
        group = groups.setdefault(row.objects, {})
        if row.relation in group:
            raise ValueError(
                f"{subset.what}: {row.label} and {rows[group[row.relation]].label} share a pair and relation"
            )
        group[row.relation] = i
    incomplete = [f"{a}/{b}: {sorted(g)}" for (a, b), g in groups.items() if len(g) != len(subset.relations)]
    if incomplete:
        raise ValueError(f"{subset.what}: object pairs without all of {subset.relations}: {'; '.join(incomplete[:5])}")
    return groups


def inputs(data_root: Path | str, *, subset: str = "A", limit: int = 0) -> Inputs:
    """The captions file and every image it names (validated as for scoring); `limit` as `run`."""
    data_root = Path(data_root)
    rows, captions_path = load_rows(data_root, SUBSETS[subset])
    rows = first_rows(rows, limit)
    images = tuple(row.image for row in rows)
    return Inputs((captions_path,), images, _common_folder(images, data_root))


def _common_folder(images: tuple[Path, ...], data_root: Path) -> Path:
    return Path(os.path.commonpath([p.parent for p in images])) if images else data_root / "data"


def label_fix_rules(mode: str, *, subset: str = "A") -> list[list[str]]:
    """The image swaps `mode` applies to this subset (recorded, so a changed list rescores)."""
    check_label_fixes(mode)
    return [list(pair) for pair in PAPER_IMAGE_SWAPS[subset]] if mode == "paper" else []


def apply_label_fixes(rows: list[Row], subset_key: str, mode: str) -> tuple[list[Row], list[dict[str, str]]]:
    """label_fixes=paper: the swapped images are read by each other's row; labels and captions stay."""
    applied: list[dict[str, str]] = []
    if mode != "paper":
        return rows, applied
    by_file = {row.image.name: i for i, row in enumerate(rows)}
    rows = list(rows)
    for first, second in PAPER_IMAGE_SWAPS[subset_key]:
        if first not in by_file or second not in by_file:
            continue  # this copy of the benchmark lacks the pair: nothing to fix
        i, j = by_file[first], by_file[second]
        image_i, image_j = rows[i].image, rows[j].image
        rows[i], rows[j] = replace(rows[i], image=image_j), replace(rows[j], image=image_i)
        for row, other in ((rows[i], second), (rows[j], first)):
            applied.append({"row": row.label, "reads": other, "reason": "published What'sUp A label error (swapped)"})
    return rows, applied


def run(
    scorer: Scorer,
    data_root: Path | str,
    *,
    subset: str = "A",
    label_fixes: str = "paper",
    limit: int = 0,
    scoring: str = "official",
) -> BenchmarkResult:
    """`limit` > 0: only the object pairs of the first `limit` rows (`first_rows`), a partial result; 0: all.
    `scoring`: official (argmax, a tie is correct) or released (the authors' strict '>' on fp16 scores)."""
    check_label_fixes(label_fixes)
    check_scoring(scoring)
    spec = SUBSETS[subset]
    data_root = Path(data_root)
    rows, captions_path = load_rows(data_root, spec)
    rows = first_rows(rows, limit)
    groups = group_rows(rows, spec)
    rows, fixes = apply_label_fixes(rows, subset, label_fixes)
    require_images([row.image for row in rows], f"{spec.what} images")

    texts = [c for r in rows for c in r.options]
    table = make_table(scorer, [str(r.image) for r in rows], texts, fp16_logits=scoring == "released")
    examples = []
    for row in rows:
        scores = [table(str(row.image), c) for c in row.options]
        prediction = pick(scores, scoring)
        examples.append(
            {
                "id": row.label,
                "image": row.image.relative_to(data_root).as_posix(),
                "labelled_image": row.labelled_image,
                "objects": list(row.objects),
                "relation": row.relation,
                "options": list(row.options),
                "option_relations": list(row.option_relations),
                "scores": scores,
                "prediction": prediction,
                "correct": prediction == 0,
            }
        )

    n = len(rows)
    correct = [e["correct"] for e in examples]
    # A pair scores when both images of one axis are correct, a set when all four are.
    pairs_correct = sum(correct[g[a]] and correct[g[b]] for g in groups.values() for _, a, b in spec.axes)
    sets_correct = sum(all(correct[i] for i in g.values()) for g in groups.values())
    # Official denominators rows/2 and rows/4 (equal to the counts of pairs and sets: the grouping is checked).
    metrics = {
        "indiv": percent(sum(correct), n),
        "pairs": percent(pairs_correct, n / 2),
        "set_of_4": percent(sets_correct, n / 4),
    }
    chance: dict[str, float | None] = dict(CHANCE_FOUR_WAY)
    denominators = {"indiv": n, "pairs": n // 2, "set_of_4": n // 4}

    for axis, first, second in spec.axes:
        axis_metrics = _two_way(examples, rows, groups, axis, first, second, table, scoring)
        for key, value in axis_metrics.items():
            metrics[f"{axis}/{key}"] = value
            chance[f"{axis}/{key}"] = CHANCE_TWO_WAY[key]
        denominators.update({f"{axis}/indiv": n // 2, f"{axis}/pairs": n // 4, f"{axis}/relaxed_pairs": n // 4})

    details: dict[str, Any] = {
        "tie_rule": TIE_RULES[scoring],
        "scoring": {"mode": scoring, "precision": "fp16" if scoring == "released" else "fp32"},
        "label_fixes": {"mode": label_fixes, "applied": fixes},
        "files": [file_record(captions_path, data_root)],
        "counts": {"rows": n, "object_pairs": len(groups), "images": len({r.image for r in rows})},
        "denominators": denominators,
        "units": "percent; image_pair_cosine is a cosine similarity",
    }
    return BenchmarkResult(spec.name, metrics, chance, examples, details)


def _two_way(
    examples: list[dict[str, Any]],
    rows: list[Row],
    groups: dict[tuple[str, str], dict[str, int]],
    axis: str,
    first: str,
    second: str,
    table: Any,  # a ScoreTable or a scorer's own pair table
    scoring: str = "official",
) -> dict[str, float]:
    """Adds each axis image's two-way record and pair record to `examples`; returns the axis' metrics."""
    opposite = {first: second, second: first}
    for example in examples:
        if example["relation"] not in opposite:
            continue
        other = example["option_relations"].index(opposite[example["relation"]])
        scores = [example["scores"][0], example["scores"][other]]
        prediction = pick(scores, scoring)
        example["two_way"] = {
            "subset": axis,
            "options": [0, other],
            "scores": scores,
            "prediction": prediction,
            "correct": prediction == 0,
        }

    indiv, pairs, relaxed, cosines = [], [], [], []
    for group in groups.values():
        one, two = examples[group[first]], examples[group[second]]
        cosine = table.image_cosine(str(rows[group[first]].image), str(rows[group[second]].image))
        indiv += [one["two_way"]["correct"], two["two_way"]["correct"]]
        pairs.append(one["two_way"]["correct"] and two["two_way"]["correct"])
        relaxed_correct = _margin(one, first, second) > _margin(two, first, second)
        relaxed.append(relaxed_correct)
        cosines.append(cosine)
        for example, partner in ((one, two), (two, one)):
            example["pair"] = {
                "subset": axis,
                "partner": partner["id"],
                "relaxed_correct": relaxed_correct,
                "image_cosine": cosine,
            }
    return {
        "indiv": percent(sum(indiv), len(indiv)),
        "pairs": percent(sum(pairs), len(pairs)),
        "relaxed_pairs": percent(sum(relaxed), len(relaxed)),
        "image_pair_cosine": mean(cosines),
    }


def _margin(example: dict[str, Any], first: str, second: str) -> float:
    """cos(image, caption of `first`) - cos(image, caption of `second`), with the image's own options."""
    relations = example["option_relations"]
    return example["scores"][relations.index(first)] - example["scores"][relations.index(second)]
