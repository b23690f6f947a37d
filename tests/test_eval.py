"""Benchmark metrics against fake encoders whose right answers are known (tests/eval_doubles.py)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from eval_doubles import OracleScorer, TableScorer

from eval import mmvp_vlm, spatial_qa, whatsup
from eval.benchmarks import BENCHMARKS, get_benchmark, run_benchmark
from eval.common import first_argmax

PHRASES = {
    "on": "on",
    "under": "under",
    "left_of": "to the left of",
    "right_of": "to the right of",
    "in-front_of": "in front of",
    "behind": "behind",
}
RELATIONS = {"A": ("on", "under", "left_of", "right_of"), "B": ("left_of", "right_of", "in-front_of", "behind")}
FOLDER = {"A": "controlled_images", "B": "controlled_clevr"}


def caption(obj1: str, relation: str, obj2: str) -> str:
    return f"A {obj1.replace('-', ' ')} {PHRASES[relation]} a {obj2.replace('-', ' ')}"


def write_whatsup(root: Path, subset: str, pairs: list[tuple[str, str]]) -> None:
    """Official layout; distractor order differs from row to row, so nothing may rely on it."""
    folder = root / "data" / FOLDER[subset]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (obj1, obj2) in enumerate(pairs):
        for k, relation in enumerate(RELATIONS[subset]):
            name = f"{obj1}_{relation}_{obj2}.jpeg"
            (folder / name).touch()  # TableScorer never opens images; they only need to exist
            others = [r for r in RELATIONS[subset] if r != relation]
            others = others[(n + k) % 3 :] + others[: (n + k) % 3]
            options = [caption(obj1, r, obj2) for r in (relation, *others)]
            rows.append({"image_path": f"data/{FOLDER[subset]}/{name}", "caption_options": options})
    file = "controlled_images_dataset.json" if subset == "A" else "controlled_clevr_dataset.json"
    (root / "data" / file).write_text(json.dumps(rows))


def image_key(subset: str, obj1: str, relation: str, obj2: str) -> str:
    """TableScorer row name of an image (its last two path parts)."""
    return f"{FOLDER[subset]}/{obj1}_{relation}_{obj2}.jpeg"


def cosines(obj1: str, obj2: str, by_relation: dict[str, float]) -> dict[str, float]:
    """A TableScorer row: cosine with the caption of each relation."""
    return {caption(obj1, r, obj2): c for r, c in by_relation.items()}


def own(relation: str, high: float = 0.4, low: float = 0.1, relations: tuple[str, ...] = RELATIONS["A"]) -> dict:
    return {r: high if r == relation else low for r in relations}


# Four object pairs of Subset A with hand-set cosines (see the expected numbers in the tests below).
PAIRS_A = [("beer-bottle", "coffee-table"), ("mug", "plate"), ("dog", "sofa"), ("tv-remote", "couch")]
COSINES_A = {
    # pair 1: everything right
    ("beer-bottle", "left_of"): own("left_of"),
    ("beer-bottle", "right_of"): own("right_of"),
    ("beer-bottle", "on"): own("on"),
    ("beer-bottle", "under"): own("under"),
    # pair 2: the right image prefers the left caption; the on image prefers the left caption four-way,
    # but beats under two-way
    ("mug", "left_of"): {"left_of": 0.4, "right_of": 0.2, "on": 0.1, "under": 0.1},
    ("mug", "right_of"): {"left_of": 0.35, "right_of": 0.2, "on": 0.1, "under": 0.1},
    ("mug", "on"): {"on": 0.3, "under": 0.1, "left_of": 0.45, "right_of": 0.1},
    ("mug", "under"): own("under"),
    # pair 3: the left image ties its caption with 'under' (a tie is correct); the on image prefers 'under'
    ("dog", "left_of"): {"left_of": 0.3, "under": 0.3, "right_of": 0.1, "on": 0.1},
    ("dog", "right_of"): own("right_of"),
    ("dog", "on"): {"on": 0.2, "under": 0.5, "left_of": 0.1, "right_of": 0.1},
    ("dog", "under"): own("under", high=0.45),
    # pair 4: both left/right images score identically: the right one is wrong, the relaxed margins tie
    ("tv-remote", "left_of"): {"left_of": 0.3, "right_of": 0.2, "on": 0.1, "under": 0.1},
    ("tv-remote", "right_of"): {"left_of": 0.3, "right_of": 0.2, "on": 0.1, "under": 0.1},
    ("tv-remote", "on"): own("on"),
    ("tv-remote", "under"): own("under"),
}


def table_a() -> TableScorer:
    objects = dict(PAIRS_A)
    return TableScorer({image_key("A", o, r, objects[o]): cosines(o, objects[o], c) for (o, r), c in COSINES_A.items()})


@pytest.fixture
def subset_a(tmp_path: Path) -> Path:
    write_whatsup(tmp_path, "A", PAIRS_A)
    return tmp_path


def test_registry_matches_the_recipe_schema() -> None:
    from train.config import BENCHMARK_NAMES

    assert tuple(BENCHMARKS) == BENCHMARK_NAMES
    with pytest.raises(KeyError, match="known: whatsup_a, whatsup_b, coco_spatial_one"):
        get_benchmark("whatsup_c")


def test_importing_eval_imports_neither_accelerate_nor_wandb() -> None:
    code = (
        "import sys, eval.run, eval.benchmarks, eval.scoring, eval.report; "
        "print(sorted(m for m in ('accelerate', 'wandb', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_first_argmax_is_numpy_argmax() -> None:
    assert first_argmax([0.3, 0.3, 0.1]) == 0  # a tie goes to the first: correct
    assert first_argmax([0.1, 0.3, 0.3]) == 1
    assert first_argmax([0.2]) == 0


def test_file_names_give_object_pairs_and_relations() -> None:
    assert whatsup.parse_file_name("beer-bottle_left_of_coffee-table.jpeg") == (
        "beer-bottle",
        "left_of",
        "coffee-table",
    )
    assert whatsup.parse_file_name("red-cube_in-front_of_blue-ball.jpeg") == ("red-cube", "in-front_of", "blue-ball")
    assert whatsup.parse_file_name("mug_on_plate.jpeg") == ("mug", "on", "plate")
    assert whatsup.caption_relation("A beer bottle to the right of a coffee table") == "right_of"
    assert whatsup.caption_relation("A cube in front of a ball") == "in-front_of"
    with pytest.raises(ValueError, match="exactly one relation"):
        whatsup.caption_relation("A cup on a table to the left of a chair")


def test_whatsup_four_way(subset_a: Path) -> None:
    result = run_benchmark("whatsup_a", table_a(), subset_a)
    m = result.metrics
    # Correct: pair 1 all 4, pair 2 left+under, pair 3 left (tie)+right+under, pair 4 left+on+under -> 12 of 16.
    assert m["indiv"] == 100 * 12 / 16
    # Pairs over rows/2 = 8: pair 1 both axes, pair 3 left/right, pair 4 on/under.
    assert m["pairs"] == 100 * 4 / 8
    assert m["set_of_4"] == 100 * 1 / 4  # rows/4 = 4 object pairs, only pair 1 has all four
    assert result.details["denominators"] == {
        "indiv": 16,
        "pairs": 8,
        "set_of_4": 4,
        "left_right/indiv": 8,
        "left_right/pairs": 4,
        "left_right/relaxed_pairs": 4,
        "on_under/indiv": 8,
        "on_under/pairs": 4,
        "on_under/relaxed_pairs": 4,
    }
    tie = next(e for e in result.examples if e["id"] == "dog_left_of_sofa")
    assert tie["scores"][0] == max(tie["scores"]) and tie["prediction"] == 0 and tie["correct"]
    assert "tie counts as correct" in result.details["tie_rule"]
    assert result.chance["indiv"] == 25.0 and result.chance["pairs"] == 6.25 and result.chance["set_of_4"] == 100 / 256


def test_whatsup_two_way_subsets_relaxed_pairs_and_cosines(subset_a: Path) -> None:
    scorer = table_a()
    result = run_benchmark("whatsup_a", scorer, subset_a)
    m = result.metrics
    # Left/Right: wrong are mug right and tv-remote right -> 6/8; pairs: beer-bottle, dog -> 2/4.
    assert (m["left_right/indiv"], m["left_right/pairs"]) == (75.0, 50.0)
    # Relaxed: mug passes (0.2 > 0.15) though its pair fails; tv-remote's margins tie exactly -> wrong.
    assert m["left_right/relaxed_pairs"] == 75.0
    # On/Under: the mug 'on' image is wrong four-way (left wins) but right two-way; dog 'on' is wrong.
    assert (m["on_under/indiv"], m["on_under/pairs"], m["on_under/relaxed_pairs"]) == (87.5, 75.0, 100.0)
    mug_on = next(e for e in result.examples if e["id"] == "mug_on_plate")
    assert not mug_on["correct"] and mug_on["two_way"]["correct"]
    assert mug_on["options"][mug_on["two_way"]["options"][1]] == "A mug under a plate"
    # Mean cosine of the image pairs = mean dot product of the table rows (unit vectors by construction).
    objects = dict(PAIRS_A)
    expected = {}
    for axis, first, second in (("left_right", "left_of", "right_of"), ("on_under", "on", "under")):
        dots = []
        for obj1, obj2 in objects.items():
            a = scorer.image_vector_of(image_key("A", obj1, first, obj2))
            b = scorer.image_vector_of(image_key("A", obj1, second, obj2))
            dots.append(sum(x * y for x, y in zip(a, b, strict=True)))
        expected[axis] = sum(dots) / len(dots)
    assert m["left_right/image_pair_cosine"] == pytest.approx(expected["left_right"], abs=1e-6)
    assert m["left_right/image_pair_cosine"] == pytest.approx((0.10 + 0.20 + 0.11 + 0.15) / 4, abs=1e-6)
    assert m["on_under/image_pair_cosine"] == pytest.approx(expected["on_under"], abs=1e-6)
    assert result.chance["left_right/indiv"] == 50.0 and result.chance["left_right/pairs"] == 25.0
    assert result.chance["left_right/relaxed_pairs"] == 50.0 and result.chance["left_right/image_pair_cosine"] is None


def test_whatsup_b_front_behind_with_multi_word_names(tmp_path: Path) -> None:
    pairs = [("red-rubber-cube", "blue-ball"), ("green-cylinder", "small-gray-sphere")]
    write_whatsup(tmp_path, "B", pairs)
    rel_b = RELATIONS["B"]
    table = {image_key("B", o1, r, o2): cosines(o1, o2, own(r, relations=rel_b)) for o1, o2 in pairs for r in rel_b}
    # One image wrong: the first pair's 'behind' image prefers 'in front of'.
    (obj1, obj2) = pairs[0]
    table[image_key("B", obj1, "behind", obj2)] = cosines(obj1, obj2, {"in-front_of": 0.4, "behind": 0.3})
    result = run_benchmark("whatsup_b", TableScorer(table), tmp_path)
    m = result.metrics
    assert (m["indiv"], m["pairs"], m["set_of_4"]) == (100 * 7 / 8, 100 * 3 / 4, 50.0)
    assert (m["front_behind/indiv"], m["front_behind/pairs"]) == (75.0, 50.0)
    assert (m["left_right/indiv"], m["left_right/pairs"]) == (100.0, 100.0)
    assert result.details["counts"] == {"rows": 8, "object_pairs": 2, "images": 8}
    assert {tuple(e["objects"]) for e in result.examples} == set(pairs)


def test_whatsup_label_fixes_swap_exactly_the_pillow_chair_images(tmp_path: Path) -> None:
    pairs = [("pillow", "chair"), ("mug", "plate")]
    write_whatsup(tmp_path, "A", pairs)
    table = {image_key("A", o1, r, o2): cosines(o1, o2, own(r)) for o1, o2 in pairs for r in RELATIONS["A"]}
    # The file named left_of shows right_of and vice versa (the published error).
    table["controlled_images/pillow_left_of_chair.jpeg"] = cosines("pillow", "chair", own("right_of"))
    table["controlled_images/pillow_right_of_chair.jpeg"] = cosines("pillow", "chair", own("left_of"))
    scorer = TableScorer(table)
    fixed = run_benchmark("whatsup_a", scorer, tmp_path, label_fixes="paper")
    as_is = run_benchmark("whatsup_a", scorer, tmp_path, label_fixes="none")
    assert fixed.metrics["indiv"] == 100.0 and as_is.metrics["indiv"] == 75.0
    assert as_is.metrics["left_right/pairs"] == 50.0 and as_is.metrics["set_of_4"] == 50.0
    applied = fixed.details["label_fixes"]["applied"]
    assert fixed.details["label_fixes"]["mode"] == "paper"
    assert [(a["row"], a["reads"]) for a in applied] == [
        ("pillow_left_of_chair", "pillow_right_of_chair.jpeg"),
        ("pillow_right_of_chair", "pillow_left_of_chair.jpeg"),
    ]
    assert as_is.details["label_fixes"] == {"mode": "none", "applied": []}
    differing = [a["id"] for a, b in zip(fixed.examples, as_is.examples, strict=True) if a != b]
    assert differing == ["pillow_left_of_chair", "pillow_right_of_chair"]
    swapped = fixed.examples[[e["id"] for e in fixed.examples].index("pillow_left_of_chair")]
    assert swapped["image"] == "data/controlled_images/pillow_right_of_chair.jpeg"
    assert swapped["labelled_image"] == "data/controlled_images/pillow_left_of_chair.jpeg"
    assert swapped["options"][0] == "A pillow to the left of a chair"  # labels and captions stay


def test_oracle_on_the_generated_world(world: Path) -> None:
    """A perfect model is perfect everywhere with the paper's fix; without it only the two pillow images fail."""
    scorer = OracleScorer(world)
    for name in BENCHMARKS:
        result = run_benchmark(name, scorer, world / "bench")
        accuracies = {k: v for k, v in result.metrics.items() if not k.endswith("cosine")}
        assert set(accuracies.values()) == {100.0}, name
    fixed = run_benchmark("whatsup_a", scorer, world / "bench", label_fixes="paper")
    as_is = run_benchmark("whatsup_a", scorer, world / "bench", label_fixes="none")
    differing = {a["id"] for a, b in zip(fixed.examples, as_is.examples, strict=True) if a["correct"] != b["correct"]}
    assert differing == {"pillow_left_of_chair", "pillow_right_of_chair"}
    changed_scores = {
        a["id"] for a, b in zip(fixed.examples, as_is.examples, strict=True) if a["scores"] != b["scores"]
    }
    assert changed_scores == differing
    assert (
        as_is.metrics["left_right/pairs"]
        == 100 * (fixed.details["counts"]["object_pairs"] - 1) / (fixed.details["counts"]["object_pairs"])
    )
    other = run_benchmark("whatsup_b", scorer, world / "bench", label_fixes="paper")
    assert other.details["label_fixes"] == {"mode": "paper", "applied": []}


def write_qa(root: Path, file: str, image_dir: str, rows: list[list], names: list[str]) -> None:
    (root / "data" / image_dir).mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "data" / image_dir / name).touch()
    (root / "data" / file).write_text(json.dumps(rows))


def test_coco_and_gqa_rows_with_int_and_str_ids(tmp_path: Path) -> None:
    rows = [
        [397133, "A photo of a dog on the left", "A photo of a dog on the right"],
        ["139", "A photo of a cat above a mat", "A photo of a cat below a mat"],
        [285, "A photo of a bear on the top", "A photo of a bear on the bottom"],
    ]
    names = ["000000397133.jpg", "000000000139.jpg", "000000000285.jpg"]
    write_qa(tmp_path, "coco_qa_one_obj.json", "val2017", rows, names)
    cosines = {
        "val2017/000000397133.jpg": {rows[0][1]: 0.4, rows[0][2]: 0.1},  # right
        "val2017/000000000139.jpg": {rows[1][1]: 0.2, rows[1][2]: 0.2},  # tie: correct
        "val2017/000000000285.jpg": {rows[2][1]: 0.1, rows[2][2]: 0.3},  # wrong
    }
    result = run_benchmark("coco_spatial_one", TableScorer(cosines), tmp_path)
    assert result.metrics == {"indiv": 100 * 2 / 3} and result.chance == {"indiv": 50.0}
    assert [e["correct"] for e in result.examples] == [True, True, False]
    assert [e["image"] for e in result.examples] == [f"data/val2017/{n}" for n in names]
    assert result.details["counts"] == {"rows": 3, "images": 3}

    vg_rows = [[2345, "A photo of a cup to the left of a box", "A photo of a cup to the right of a box"]]
    vg_rows.append(["712", "A photo of a kite to the front of a tree", "A photo of a kite behind a tree"])
    write_qa(tmp_path, "vg_qa_two_obj.json", "vg_images", vg_rows, ["2345.jpg", "712.jpg"])
    vg = {
        "vg_images/2345.jpg": {vg_rows[0][1]: 0.1, vg_rows[0][2]: 0.3},
        "vg_images/712.jpg": {vg_rows[1][1]: 0.3, vg_rows[1][2]: 0.1},
    }
    result = run_benchmark("gqa_spatial_two", TableScorer(vg), tmp_path)
    assert result.metrics == {"indiv": 50.0}
    assert [e["image"] for e in result.examples] == ["data/vg_images/2345.jpg", "data/vg_images/712.jpg"]
    assert spatial_qa.image_name(397133, 12) == spatial_qa.image_name("397133", 12) == "000000397133.jpg"


def write_mmvp(root: Path, rows: list[tuple[int, str, str]]) -> None:
    folder = root / "MMVP_VLM"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "Questions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Question ID", "Type", "Statement"])
        for qid, kind, statement in rows:
            writer.writerow([qid, kind, statement])
            (folder / kind).mkdir(exist_ok=True)
            (folder / kind / f"{qid}.jpg").touch()


def mmvp_table(rows: list[tuple[int, str, str]], pairs: list[tuple[float, float, float, float]]) -> TableScorer:
    """Per pair (file order): s(i1,t1), s(i1,t2), s(i2,t1), s(i2,t2)."""
    table = {}
    for (q1, kind, st1), (q2, _, st2), (s11, s12, s21, s22) in zip(rows[::2], rows[1::2], pairs, strict=True):
        t1, t2 = "a photo of " + st1, "a photo of " + st2
        table[f"{kind}/{q1}.jpg"] = {t1: s11, t2: s12}
        table[f"{kind}/{q2}.jpg"] = {t1: s21, t2: s22}
    return TableScorer(table)


def test_mmvp_official_rule_per_type_and_relaxed(tmp_path: Path) -> None:
    rows = [
        (3, "Color", "The ball is red"),
        (4, "Color", "The ball is blue"),
        (1, "Color", "The cup is full"),
        (2, "Color", "The cup is empty"),
        (5, "Camera Perspective", "Seen from above"),
        (6, "Camera Perspective", "Seen from the side"),
        (7, "Camera Perspective", "A close-up view"),
        (8, "Camera Perspective", "A distant view"),
    ]
    write_mmvp(tmp_path, rows)
    pairs = [
        (0.5, 0.1, 0.2, 0.4),  # correct; relaxed 0.4 > -0.2
        (0.3, 0.1, 0.3, 0.4),  # s(i1,t1) == s(i2,t1): a tie on the first statement is wrong; relaxed 0.2 > -0.1
        (0.4, 0.35, 0.3, 0.2),  # t2 picks i1: wrong; relaxed 0.05 > 0.1 fails
        (0.5, 0.1, 0.1, 0.5),  # correct
    ]
    result = run_benchmark("mmvp_vlm", mmvp_table(rows, pairs), tmp_path)
    assert [e["id"] for e in result.examples] == ["3-4", "1-2", "5-6", "7-8"]  # file order, not sorted
    assert [e["correct"] for e in result.examples] == [True, False, False, True]
    assert [e["relaxed_correct"] for e in result.examples] == [True, True, False, True]
    assert result.examples[1]["prediction"] == [1, 1]  # the tie goes to image 2, the wrong one for t1
    m = result.metrics
    assert (m["pairs/color"], m["pairs/camera_perspective"], m["pairs/mean"]) == (50.0, 50.0, 50.0)
    assert (m["relaxed_pairs/color"], m["relaxed_pairs/camera_perspective"], m["relaxed_pairs/mean"]) == (100, 50, 75)
    assert result.examples[0]["texts"] == ["a photo of The ball is red", "a photo of The ball is blue"]
    assert result.examples[0]["images"] == ["MMVP_VLM/Color/3.jpg", "MMVP_VLM/Color/4.jpg"]
    assert result.chance["pairs/mean"] == 25.0 and result.chance["relaxed_pairs/mean"] == 50.0
    assert result.details["tie_rule"] == mmvp_vlm.TIE_RULE and "a tie goes to image 2" in mmvp_vlm.TIE_RULE
    assert result.details["counts"] == {"rows": 8, "pairs": 4, "patterns": 2}


def official_mmvp_pairs(csv_path: Path, score: Callable[[int, int], float]) -> list[bool]:
    """scripts/evaluate_vlm.py of the MMVP repository, its comparisons kept as written: per text a softmax over
    the two images (CLIP's logit scale 100, float32 as the script's torch tensors), `"img1" if p > 0.5 else "img2"`,
    the truth by Question ID parity. `score(image_qid, text_qid)` is the cosine similarity."""
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        outcomes = []
        for row in reader:
            qid1 = int(row[0])
            qid2 = int(next(reader)[0])
            preds = []
            for text in (qid1, qid2):
                logits = 100.0 * torch.tensor([score(qid1, text), score(qid2, text)], dtype=torch.float32)
                img1_score = logits.softmax(dim=-1).numpy()[0]
                preds.append("img1" if img1_score > 0.5 else "img2")
            gt1 = "img1" if qid1 % 2 == 1 else "img2"
            gt2 = "img1" if qid2 % 2 == 1 else "img2"
            outcomes.append(preds[0] == gt1 and preds[1] == gt2)
    return outcomes


def test_mmvp_ties_follow_the_official_script(tmp_path: Path) -> None:
    """Exact ties: on the first statement wrong, on the second correct, as the official `p > 0.5 else img2`."""
    rows = [(q, "State", f"statement {q}") for q in range(1, 11)]
    write_mmvp(tmp_path, rows)
    pairs = [  # s(i1,t1), s(i1,t2), s(i2,t1), s(i2,t2)
        (0.5, -0.5, -0.5, 0.5),  # no tie: correct
        (0.5, -0.5, 0.5, 0.5),  # tie on t1: image 2 picked for t1, wrong
        (0.5, 0.5, -0.5, 0.5),  # tie on t2: image 2 picked for t2, correct
        (0.5, 0.5, 0.5, 0.5),  # ties on both: wrong (t1)
        (0.5, 0.5, -0.5, -0.5),  # t2 picks image 1: wrong
    ]
    # Every image vector is (+-0.5, +-0.5, 0.5 on a padding text, 0.5 on its own axis): unit norm exactly, so each
    # cosine is exactly +-0.5 and equal table entries tie bit for bit.
    table = {}
    for (q1, kind, st1), (q2, _, st2), (s11, s12, s21, s22) in zip(rows[::2], rows[1::2], pairs, strict=True):
        t1, t2 = "a photo of " + st1, "a photo of " + st2
        table[f"{kind}/{q1}.jpg"] = {t1: s11, t2: s12, "padding": 0.5}
        table[f"{kind}/{q2}.jpg"] = {t1: s21, t2: s22, "padding": 0.5}
    result = run_benchmark("mmvp_vlm", TableScorer(table), tmp_path)
    assert [e["scores"] for e in result.examples] == [[[a, b], [c, d]] for a, b, c, d in pairs]  # exact
    assert [e["prediction"] for e in result.examples] == [[0, 1], [1, 1], [0, 1], [1, 1], [0, 0]]
    assert [e["correct"] for e in result.examples] == [True, False, True, False, False]
    by_qid = {}
    for example in result.examples:
        q1, q2 = map(int, example["id"].split("-"))
        for i, image in enumerate((q1, q2)):
            for t, text in enumerate((q1, q2)):
                by_qid[image, text] = example["scores"][i][t]
    official = official_mmvp_pairs(tmp_path / "MMVP_VLM" / "Questions.csv", lambda i, t: by_qid[i, t])
    assert official == [e["correct"] for e in result.examples]
    assert result.metrics["pairs/state"] == 40.0


def test_mmvp_pairs_are_consecutive_rows_in_file_order(tmp_path: Path) -> None:
    rows = [(1, "State", "s1"), (4, "State", "s4"), (3, "State", "s3"), (2, "State", "s2")]
    write_mmvp(tmp_path, rows)
    result = run_benchmark("mmvp_vlm", mmvp_table(rows, [(0.5, 0.1, 0.1, 0.5)] * 2), tmp_path)
    assert [e["id"] for e in result.examples] == ["1-4", "3-2"]
    assert result.metrics["pairs/state"] == 100.0
    write_mmvp(tmp_path, rows[:3])
    with pytest.raises(ValueError, match="must be even"):
        run_benchmark("mmvp_vlm", mmvp_table(rows, [(0.5, 0.1, 0.1, 0.5)] * 2), tmp_path)
    # The official truth comes from the ID's parity, so a pair must be (odd, even).
    rows = [(1, "State", "s1"), (3, "State", "s3"), (2, "State", "s2"), (4, "State", "s4")]
    write_mmvp(tmp_path, rows)
    with pytest.raises(ValueError, match=r"Questions.csv: data rows 1 and 2 \(Question IDs 1, 3\) form a pair, but"):
        run_benchmark("mmvp_vlm", mmvp_table(rows, [(0.5, 0.1, 0.1, 0.5)] * 2), tmp_path)
    write_mmvp(tmp_path, [(1, "State", "s1"), (2, "Color", "s2")])
    with pytest.raises(ValueError, match="have different Types"):
        run_benchmark("mmvp_vlm", TableScorer({}), tmp_path)


def copy_mmvp(world: Path, root: Path, images_folder: str) -> Path:
    """The generated world's MMVP-VLM files in one of the real download's layouts."""
    source = world / "bench" / "MMVP_VLM"
    (root / "MMVP_VLM").mkdir(parents=True)
    shutil.copy2(source / "Questions.csv", root / "MMVP_VLM" / "Questions.csv")
    for folder in source.iterdir():
        if folder.is_dir():
            shutil.copytree(folder, root / "MMVP_VLM" / images_folder / folder.name)
    return root


@pytest.mark.parametrize("images_folder", ["MMVP_VLM_Images", "MLLM_VLM Images"])
def test_mmvp_reads_the_real_download_layouts(world: Path, tmp_path: Path, images_folder: str) -> None:
    root = copy_mmvp(world, tmp_path, images_folder)
    assert not (root / "MMVP_VLM" / "Color").exists()  # only the layout's folder holds images
    oracle = OracleScorer(world)
    generated = run_benchmark("mmvp_vlm", oracle, world / "bench")
    result = run_benchmark("mmvp_vlm", oracle, root)
    assert result.details["images_folder"] == f"MMVP_VLM/{images_folder}"
    assert generated.details["images_folder"] == "MMVP_VLM"
    assert result.examples[0]["images"][0].startswith(f"MMVP_VLM/{images_folder}/")
    assert oracle.image_calls[-1][0].startswith(str(root / "MMVP_VLM" / images_folder))
    assert result.metrics == generated.metrics and result.metrics["pairs/mean"] == 100.0
    assert mmvp_vlm.inputs(root).image_folder == root / "MMVP_VLM" / images_folder


def test_mmvp_without_images_names_the_folders_looked_for(world: Path, tmp_path: Path) -> None:
    (tmp_path / "MMVP_VLM").mkdir()
    shutil.copy2(world / "bench" / "MMVP_VLM" / "Questions.csv", tmp_path / "MMVP_VLM" / "Questions.csv")
    (tmp_path / "MMVP_VLM" / "Images").mkdir()  # a folder of another name is not a layout
    with pytest.raises(FileNotFoundError) as err:
        run_benchmark("mmvp_vlm", OracleScorer(world), tmp_path)
    message = str(err.value)
    assert message.startswith("MMVP-VLM images not found: looked for")
    for looked in ("MMVP_VLM/MMVP_VLM_Images/<Type>/<qid>.jpg", "MMVP_VLM/MLLM_VLM Images/<Type>/<qid>.jpg"):
        assert looked in message
    assert "MMVP_VLM/<Type>/<qid>.jpg (the generated world)" in message and "'Orientation'" in message
    # A layout with some images missing lists them before any scoring.
    copy_mmvp(world, tmp_path / "partial", "MLLM_VLM Images")
    next((tmp_path / "partial" / "MMVP_VLM" / "MLLM_VLM Images" / "Orientation").glob("*.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 MMVP-VLM images not found: .*MLLM_VLM Images/Orientation/"):
        run_benchmark("mmvp_vlm", OracleScorer(world), tmp_path / "partial")


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("whatsup_a", r"What'sUp Subset A captions \(controlled_images_dataset.json\) not found: expected .*data/"),
        ("whatsup_b", r"What'sUp Subset B captions \(controlled_clevr_dataset.json\)"),
        ("coco_spatial_one", r"COCO-spatial one-object questions \(coco_qa_one_obj.json\)"),
        ("gqa_spatial_two", r"GQA-spatial two-object questions \(vg_qa_two_obj.json\)"),
        ("mmvp_vlm", r"MMVP-VLM questions \(MMVP_VLM/Questions.csv\) not found: expected .*MMVP_VLM/Questions.csv"),
    ],
)
def test_missing_file_names_what_and_where(tmp_path: Path, name: str, what: str) -> None:
    with pytest.raises(FileNotFoundError, match=what):
        run_benchmark(name, TableScorer({}), tmp_path)


def test_missing_images_are_listed_before_scoring(subset_a: Path) -> None:
    (subset_a / "data" / "controlled_images" / "mug_on_plate.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match="1 What'sUp Subset A images not found: .*mug_on_plate.jpeg"):
        run_benchmark("whatsup_a", table_a(), subset_a)


def test_inconsistent_captions_are_refused(subset_a: Path) -> None:
    path = subset_a / "data" / "controlled_images_dataset.json"
    rows = json.loads(path.read_text())
    rows[0]["caption_options"][0], rows[0]["caption_options"][1] = (
        rows[0]["caption_options"][1],
        rows[0]["caption_options"][0],
    )
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="option 0 .* is not the file name's relation"):
        run_benchmark("whatsup_a", table_a(), subset_a)
    path.write_text(json.dumps(rows[1:]))
    with pytest.raises(ValueError, match="object pairs without all of"):
        run_benchmark("whatsup_a", table_a(), subset_a)


def test_unknown_label_fix_mode(subset_a: Path) -> None:
    with pytest.raises(ValueError, match="expected one of paper, none"):
        whatsup.run(table_a(), subset_a, label_fixes="all")
    assert mmvp_vlm.PROMPT == "a photo of "
