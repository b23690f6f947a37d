"""The toy world generator: real file formats, true geometry, honest manifest, determinism, dirty inputs.

Everything is read back with plain json/csv/PIL, independently of the generator's own code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from data_prep.toyworld import generate

ROOT = Path(__file__).resolve().parents[1]
LCS = "llava/blip_laion_cc_sbu_558k.json"
MIX = "llava/llava_v1_5_mix665k.json"
WHATSUP_A = "bench/data/controlled_images_dataset.json"
WHATSUP_B = "bench/data/controlled_clevr_dataset.json"
SPATIAL_QA = (
    "bench/data/coco_qa_one_obj.json",
    "bench/data/coco_qa_two_obj.json",
    "bench/data/vg_qa_one_obj.json",
    "bench/data/vg_qa_two_obj.json",
)
MMVP_CSV = "bench/MMVP_VLM/Questions.csv"
MMVP_MLLM_CSV = "bench/MMVP/Questions.csv"
MMVP_TYPES = [
    "Orientation",
    "Presence",
    "State",
    "Quantity",
    "Spatial",
    "Color",
    "Structural Character",
    "Text",
    "Camera Perspective",
]
KEY_PHRASES = ("on the left", "on the right", "to the left", "at the left", "at the right")
MIX_IMAGE_PATTERNS = (
    r"coco/train2017/\d{12}\.jpg",
    r"gqa/images/n?\d+\.jpg",
    r"ocr_vqa/images/\d{9}[\dX]\.jpg",
    r"textvqa/train_images/[0-9a-f]{16}\.jpg",
    r"vg/VG_100K(_2)?/\d+\.jpg",
)
WHATSUP_WORDS = {
    "on": "on",
    "under": "under",
    "left_of": "to the left of",
    "right_of": "to the right of",
    "in-front_of": "in front of",
    "behind": "behind",
}
CONVERSE = {"right_of": "left_of", "under": "on", "below": "above", "behind": "in_front_of"}
JPEG_MAGIC = b"\xff\xd8\xff"


def load(root: Path, rel: str) -> Any:
    return json.loads((root / rel).read_text(encoding="utf-8"))


def scenes(root: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in (root / "scenes.jsonl").read_text(encoding="utf-8").splitlines()]
    return {record["path"]: record for record in records}


def manifest(root: Path) -> dict:
    return load(root, "manifest.json")


def gpt_values(item: dict) -> list:
    return [turn["value"] for turn in item.get("conversations", []) if turn["from"] == "gpt"]


def image_files(root: Path) -> set[str]:
    suffixes = {".jpg", ".jpeg"}
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in suffixes}


def referenced_images(root: Path) -> set[str]:
    refs = {f"llava/images/{item['image']}" for item in load(root, LCS)}
    refs |= {f"llava/{item['image']}" for item in load(root, MIX) if "image" in item}
    for rel in (WHATSUP_A, WHATSUP_B):
        refs |= {"bench/" + row["image_path"] for row in load(root, rel)}
    for rel in SPATIAL_QA:
        folder = "val2017" if "coco" in rel else "vg_images"
        name = "{:012d}.jpg" if "coco" in rel else "{}.jpg"
        refs |= {f"bench/data/{folder}/{name.format(row[0])}" for row in load(root, rel)}
    with (root / MMVP_CSV).open(newline="", encoding="utf-8") as handle:
        refs |= {f"bench/MMVP_VLM/{row['Type']}/{row['Question ID']}.jpg" for row in csv.DictReader(handle)}
    with (root / MMVP_MLLM_CSV).open(newline="", encoding="utf-8") as handle:
        refs |= {f"bench/MMVP/MMVP Images/{row['Index']}.jpg" for row in csv.DictReader(handle)}
    return refs


def file_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- LLaVA training files


def test_lcs_items_have_the_real_shape(world: Path) -> None:
    items = load(world, LCS)
    assert isinstance(items, list) and len(items) == 400
    positions = Counter()
    for item in items:
        assert list(item) == ["id", "image", "conversations"]
        assert re.fullmatch(r"\d{9}", item["id"])
        assert item["image"] == f"{item['id'][:5]}/{item['id']}.jpg"
        human, gpt = item["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].count("<image>") == 1
        assert human["value"].startswith("<image>\n") or human["value"].endswith("\n<image>")
        positions["before" if human["value"].startswith("<image>") else "after"] += 1
        assert isinstance(gpt["value"], str) and gpt["value"].strip() and "<image>" not in gpt["value"]
    assert positions["before"] > 50 and positions["after"] > 50
    assert len({item["id"] for item in items}) == len(items)
    left_right = sum(("left" in v or "right" in v) for item in items for v in gpt_values(item))
    assert left_right >= len(items) * 0.45  # enough left/right captions to learn from


def test_mix665k_items_have_the_real_shape(world: Path) -> None:
    items = load(world, MIX)
    assert isinstance(items, list)
    image_items = [item for item in items if "image" in item]
    text_items = [item for item in items if "image" not in item]
    assert len(image_items) == 300 and len(text_items) == 20
    # Text-only items come last.
    first_text = next(i for i, item in enumerate(items) if "image" not in item)
    assert all("image" not in item for item in items[first_text:])
    positions = Counter()
    rounds = Counter()
    folders = Counter()
    for item in items:
        assert isinstance(item["id"], str) and item["id"]
        turns = item["conversations"]
        assert turns and len(turns) % 2 == 0 and len(turns) <= 8
        rounds[len(turns) // 2] += 1
        for k, turn in enumerate(turns):
            assert list(turn) == ["from", "value"]
            assert turn["from"] == ("human" if k % 2 == 0 else "gpt")
            assert isinstance(turn["value"], str) and turn["value"].strip()
        if "image" in item:
            assert set(item) == {"id", "image", "conversations"}
            assert any(re.fullmatch(p, item["image"]) for p in MIX_IMAGE_PATTERNS), item["image"]
            folders[item["image"].split("/")[0]] += 1
            first = turns[0]["value"]
            assert first.count("<image>") == 1
            assert first.startswith("<image>\n") or first.endswith("\n<image>")
            positions["before" if first.startswith("<image>") else "after"] += 1
            assert all("<image>" not in turn["value"] for turn in turns[1:])
        else:
            assert set(item) == {"id", "conversations"}
            assert all("<image>" not in turn["value"] for turn in turns)
    assert positions["before"] > 30 and positions["after"] > 30
    assert set(rounds) == {1, 2, 3, 4}
    assert set(folders) == {"coco", "gqa", "ocr_vqa", "textvqa", "vg"}
    assert {p.split("/")[1] for p in (i["image"] for i in image_items) if p.startswith("vg/")} == {
        "VG_100K",
        "VG_100K_2",
    }
    # The same COCO image in two items: same id, different conversations (as in the real file).
    by_id = defaultdict(list)
    for item in image_items:
        by_id[item["id"]].append(item)
    repeated = [group for group in by_id.values() if len(group) > 1]
    assert repeated
    for group in repeated:
        assert len({g["image"] for g in group}) == 1 and group[0]["image"].startswith("coco/")
        assert len({json.dumps(g["conversations"]) for g in group}) == len(group)


def test_key_phrase_counts_match_an_independent_recount(world: Path) -> None:
    stats = manifest(world)["key_phrases"]
    assert stats["phrases"] == list(KEY_PHRASES)
    for name, rel in (("lcs558k", LCS), ("mix665k", MIX)):
        instances = with_image = answers = 0
        for item in load(world, rel):
            hits = [v for v in gpt_values(item) if isinstance(v, str) and any(p in v.lower() for p in KEY_PHRASES)]
            instances += bool(hits)
            with_image += bool(hits) and "image" in item
            answers += len(hits)
        assert stats[name]["file"] == rel
        assert (stats[name]["instances"], stats[name]["instances_with_image"]) == (instances, with_image)
        assert stats[name]["answers"] == stats[name]["captions"] == answers
        assert instances > 50
    # Like the real DataMix: several answers per instance, and some key-phrase instances have no image.
    mix = stats["mix665k"]
    assert mix["answers"] > mix["instances"] > mix["instances_with_image"]
    phrases_used = {p for item in load(world, MIX) for v in gpt_values(item) for p in KEY_PHRASES if p in v.lower()}
    assert phrases_used == set(KEY_PHRASES)


def _left_as_verb(answer: str) -> bool:
    """'left' still present after removing every spatial use of the word."""
    spatial = r"\b(?:on|to|at) the left\b|\bleft (?:of|side|or|and|hand|third)\b|^left$"
    return re.search(r"\bleft\b", re.sub(spatial, " ", answer, flags=re.I), flags=re.I) is not None


def test_left_as_a_verb_occurs_and_is_counted(world: Path) -> None:
    answers = [v for rel in (LCS, MIX) for item in load(world, rel) for v in gpt_values(item)]
    verbs = [a for a in answers if _left_as_verb(a)]
    assert len(verbs) == manifest(world)["left_as_verb_answers"] > 5
    # Some answers mix the verb with a real spatial phrase: a swap must touch only the latter.
    assert any(any(p in v.lower() for p in KEY_PHRASES) for v in verbs)


# ---------------------------------------------------------------- benchmarks


@pytest.mark.parametrize(
    ("rel", "relations", "folder"),
    [
        (WHATSUP_A, ("on", "under", "left_of", "right_of"), "controlled_images"),
        (WHATSUP_B, ("left_of", "right_of", "in-front_of", "behind"), "controlled_clevr"),
    ],
)
def test_whatsup_rows_put_the_correct_caption_first(world: Path, rel: str, relations: tuple, folder: str) -> None:
    rows = load(world, rel)
    assert len(rows) == 48
    orders = set()
    pairs = defaultdict(set)
    for row in rows:
        assert list(row) == ["image_path", "caption_options"]
        match = re.fullmatch(rf"data/{folder}/([a-z-]+)_({'|'.join(relations)})_([a-z-]+)\.jpeg", row["image_path"])
        assert match, row["image_path"]
        stem = Path(row["image_path"]).stem
        obj1, relation, obj2 = match.groups()
        assert (stem.split("_")[0], stem.split("_")[-1]) == (obj1, obj2)
        subject, reference = obj1.replace("-", " "), obj2.replace("-", " ")
        options = row["caption_options"]
        assert len(options) == 4 and all(isinstance(o, str) for o in options)
        assert options[0] == f"A {subject} {WHATSUP_WORDS[relation]} a {reference}"
        assert sorted(options) == sorted(f"A {subject} {WHATSUP_WORDS[r]} a {reference}" for r in relations)
        orders.add(tuple(o.split(subject)[1] for o in options[1:]))
        pairs[(obj1, obj2)].add(relation)
    assert len(pairs) == 12 and all(rels == set(relations) for rels in pairs.values())
    assert len(orders) > 3  # distractor order varies across rows


def test_whatsup_quadruples_are_minimal_changes(world: Path) -> None:
    records = scenes(world)
    for rel in (WHATSUP_A, WHATSUP_B):
        groups = defaultdict(list)
        for row in load(world, rel):
            stem = Path(row["image_path"]).stem
            groups[(stem.split("_")[0], stem.split("_")[-1])].append(records["bench/" + row["image_path"]])
        for group in groups.values():
            assert len(group) == 4
            assert len({tuple(r["size"]) for r in group}) == 1
            identities = {tuple(sorted((o["name"], o["colour"], tuple(o["rgb"])) for o in r["objects"])) for r in group}
            assert len(identities) == 1
            sides = [r for r in group if r["relation"] in ("left_of", "right_of")]
            dims = {
                tuple(
                    sorted((o["name"], o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]) for o in r["objects"])
                )
                for r in sides
            }
            assert len(dims) == 1  # same object sizes; only positions change
            if rel == WHATSUP_A:
                all_dims = {
                    tuple(
                        sorted(
                            (o["name"], o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]) for o in r["objects"]
                        )
                    )
                    for r in group
                }
                assert len(all_dims) == 1


def test_pillow_chair_swap_is_the_one_recorded_label_error(world: Path) -> None:
    records = scenes(world)
    mismatched = {path for path, r in records.items() if r["relation"] != r["labelled_relation"]}
    assert mismatched == {
        "bench/data/controlled_images/pillow_left_of_chair.jpeg",
        "bench/data/controlled_images/pillow_right_of_chair.jpeg",
    }
    for path in mismatched:
        r = records[path]
        assert {r["relation"], r["labelled_relation"]} == {"left_of", "right_of"}
        assert [o["name"] for o in r["objects"]] == ["pillow", "chair"]
    errors = manifest(world)["known_label_errors"]
    assert sorted(("bench/" + e["image_path"], e["labelled"], e["shown"]) for e in errors) == sorted(
        (p, records[p]["labelled_relation"], records[p]["relation"]) for p in mismatched
    )
    rows = {row["image_path"]: row for row in load(world, WHATSUP_A)}
    assert (
        rows["data/controlled_images/pillow_left_of_chair.jpeg"]["caption_options"][0]
        == "A pillow to the left of a chair"
    )
    # Every other What'sUp image shows exactly what its file name says.
    for rel in (WHATSUP_A, WHATSUP_B):
        for row in load(world, rel):
            record = records["bench/" + row["image_path"]]
            named = (
                Path(row["image_path"]).stem.split("_", 1)[1].rsplit("_", 1)[0].replace("in-front_of", "in_front_of")
            )
            assert record["labelled_relation"] == named


@pytest.mark.parametrize("rel", SPATIAL_QA)
def test_spatial_qa_rows_are_id_correct_incorrect(world: Path, rel: str) -> None:
    rows = load(world, rel)
    expected = {"coco_qa_one_obj": 48, "coco_qa_two_obj": 32, "vg_qa_one_obj": 32, "vg_qa_two_obj": 24}
    assert len(rows) == expected[Path(rel).stem]
    records = scenes(world)
    ids = set()
    for row in rows:
        assert isinstance(row, list) and len(row) == 3
        image_id, correct, wrong = row
        assert type(image_id) is int and isinstance(correct, str) and isinstance(wrong, str)
        assert correct.startswith("A photo of a ") and wrong.startswith("A photo of a ") and correct != wrong
        ids.add(image_id)
        path = f"bench/data/val2017/{image_id:012d}.jpg" if "coco" in rel else f"bench/data/vg_images/{image_id}.jpg"
        record = records[path]
        subject = record["objects"][record["subject"]]["name"]
        assert correct.startswith(f"A photo of a {subject} ")
        words = {
            "left": " on the left",
            "right": " on the right",
            "top": " on the top",
            "bottom": " on the bottom",
            "left_of": " to the left of ",
            "right_of": " to the right of ",
            "above": " above ",
            "below": " below ",
            "in_front_of": (" in front of ", " to the front of "),
            "behind": " behind ",
        }[record["relation"]]
        assert any(w in correct for w in ([words] if isinstance(words, str) else words))
        assert not any(w in wrong for w in ([words] if isinstance(words, str) else words))
        if "one_obj" in rel:
            assert correct.endswith(words) and len(record["objects"]) == 1
        assert record["clutter"]  # a little clutter, like real photos
    assert len(ids) == len(rows)
    text = json.dumps(rows)
    if rel.endswith("coco_qa_one_obj.json"):
        assert all(f"on the {w}" in text for w in ("left", "right", "top", "bottom"))
    if rel.endswith("coco_qa_two_obj.json"):
        assert " above " in text and " below " in text
    if rel.endswith("vg_qa_two_obj.json"):
        assert "to the front of" in text and " in front of " in text and " behind " in text


def test_mmvp_for_mllms_in_the_official_layout(world: Path) -> None:
    """MMVP (for MLLMs): Index,Question,Options,Correct Answer; a pair asks one question with the same options of
    two images that differ only in the tested property, and each image's own statement is its correct answer."""
    text = (world / MMVP_MLLM_CSV).read_text(encoding="utf-8")
    assert text.splitlines()[0] == "Index,Question,Options,Correct Answer"
    with (world / MMVP_MLLM_CSV).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["Index"]) for r in rows] == list(range(1, 37))
    records = scenes(world)
    answers = Counter()
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert (first["Question"], first["Options"]) == (second["Question"], second["Options"])
        assert {first["Correct Answer"], second["Correct Answer"]} == {"(a)", "(b)"}
        options = dict(re.findall(r"\(([ab])\) (.*?)(?= \([ab]\)|$)", first["Options"]))
        pair = [records[f"bench/MMVP/MMVP Images/{r['Index']}.jpg"] for r in (first, second)]
        assert [p["note"] for p in pair] == [options[r["Correct Answer"][1]] for r in (first, second)]
        assert pair[0]["size"] == pair[1]["size"]
        answers[first["Correct Answer"]] += 1
    assert answers["(a)"] and answers["(b)"]  # the correct option's position varies
    vlm = {p.read_bytes() for p in (world / "bench" / "MMVP_VLM").rglob("*.jpg")}
    assert not vlm & {p.read_bytes() for p in (world / "bench" / "MMVP" / "MMVP Images").glob("*.jpg")}


def test_mmvp_csv_pairs_and_types(world: Path) -> None:
    text = (world / MMVP_CSV).read_text(encoding="utf-8")
    assert text.splitlines()[0] == "Question ID,Type,Statement"
    with (world / MMVP_CSV).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 36
    assert [int(r["Question ID"]) for r in rows] == list(range(1, 37))
    assert list(dict.fromkeys(r["Type"] for r in rows)) == MMVP_TYPES
    assert Counter(r["Type"] for r in rows) == dict.fromkeys(MMVP_TYPES, 4)
    records = scenes(world)
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert int(first["Question ID"]) % 2 == 1 and int(second["Question ID"]) == int(first["Question ID"]) + 1
        assert first["Type"] == second["Type"] and first["Statement"] != second["Statement"]
        pair = [records[f"bench/MMVP_VLM/{r['Type']}/{r['Question ID']}.jpg"] for r in (first, second)]
        assert [p["note"] for p in pair] == [first["Statement"], second["Statement"]]
        assert pair[0]["size"] == pair[1]["size"]
        if first["Type"] == "Spatial":
            for row, record in zip((first, second), pair, strict=True):
                side = "left" if "to the left of" in row["Statement"] else "right"
                assert record["relation"] == f"{side}_of"


# ---------------------------------------------------------------- geometry and pixels


def _holds(relation: str, a: list[int], b: list[int] | None, size: list[int], a_after_b: bool) -> bool:
    """The relations as the task defines them, on [x0, y0, x1, y1] boxes (x1, y1 exclusive)."""
    width, height = size
    if relation in CONVERSE:
        return _holds(CONVERSE[relation], b, a, size, not a_after_b)
    if relation == "left":
        return a[2] <= width / 2
    if relation == "right":
        return a[0] >= width / 2
    if relation == "top":
        return a[3] <= height / 2
    if relation == "bottom":
        return a[1] >= height / 2
    if relation == "left_of":  # same ground line, horizontally separated
        return a[2] < b[0] and abs(a[3] - b[3]) <= 6
    if relation == "on":  # resting on top, centre over the support
        return abs(a[3] - b[1]) <= 2 and b[0] <= (a[0] + a[2]) / 2 <= b[2]
    if relation == "above":
        return a[3] < b[1]
    if relation == "in_front_of":  # lower, larger, drawn later and overlapping
        overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        area = (a[2] - a[0]) * (a[3] - a[1]) > (b[2] - b[0]) * (b[3] - b[1])
        return a[3] > b[3] and area and a_after_b and overlap
    raise AssertionError(relation)


def test_every_rendered_relation_is_geometrically_true(world: Path) -> None:
    checked = Counter()
    for record in scenes(world).values():
        width, height = record["size"]
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        if record["relation"] is None:
            continue
        subject, reference = record["subject"], record["reference"]
        a = record["objects"][subject]["bbox"]
        b = None if reference is None else record["objects"][reference]["bbox"]
        assert _holds(record["relation"], a, b, record["size"], reference is None or subject > reference), record
        if reference is not None:
            one, two = record["objects"][subject], record["objects"][reference]
            assert one["colour"] != two["colour"] and one["shape"] != two["shape"]
        checked[record["relation"]] += 1
    assert set(checked) == {
        "left_of",
        "right_of",
        "on",
        "under",
        "above",
        "below",
        "in_front_of",
        "behind",
        "left",
        "right",
        "top",
        "bottom",
    }


def _colour_mask(pixels: np.ndarray, rgb: list[int], others: list[list[int]], exclude: list[list[int]]) -> np.ndarray:
    """Pixels close to `rgb` and closer to it than to the scene's other object colours (JPEG edges blend)."""

    def distance(colour: list[int]) -> np.ndarray:
        return np.linalg.norm(pixels.astype(np.float32) - np.asarray(colour, np.float32), axis=2)

    own = distance(rgb)
    mask = own < 45
    for other in others:
        mask &= own < distance(other)
    for x0, y0, x1, y1 in exclude:
        mask[y0:y1, x0:x1] = False
    return mask


def test_left_and_right_are_true_in_the_pixels(world: Path) -> None:
    """Decode each left/right JPEG and find each object by its colour alone."""
    records = [r for r in scenes(world).values() if r["relation"] in ("left_of", "right_of", "left", "right")]
    assert len(records) > 400
    for record in records:
        with Image.open(world / record["path"]) as image:
            pixels = np.asarray(image.convert("RGB"))
        exclude = record["clutter"] + [sign["bbox"] for sign in record["signs"]]
        centroids = []
        for obj in record["objects"]:
            others = [o["rgb"] for o in record["objects"] if o is not obj]
            mask = _colour_mask(pixels, obj["rgb"], others, exclude)
            x0, y0, x1, y1 = obj["bbox"]
            inside = mask[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3].sum()
            assert inside >= 0.95 * mask.sum(), record["path"]  # the colour is found only on the object
            assert inside >= 0.12 * (x1 - x0) * (y1 - y0), record["path"]
            centroids.append(float(np.nonzero(mask)[1].mean()))
        subject_x = centroids[record["subject"]]
        if record["relation"] in ("left", "right"):
            half = record["size"][0] / 2
            assert subject_x < half if record["relation"] == "left" else subject_x > half
        else:
            reference_x = centroids[record["reference"]]
            assert subject_x < reference_x if record["relation"] == "left_of" else subject_x > reference_x


def test_colour_roles_do_not_give_left_right_away(world: Path) -> None:
    left_colours, right_colours = Counter(), Counter()
    for record in scenes(world).values():
        if record["path"].startswith("llava/") and record["relation"] in ("left_of", "right_of"):
            objects = sorted(record["objects"], key=lambda o: o["bbox"][0])
            left_colours[objects[0]["colour"]] += 1
            right_colours[objects[1]["colour"]] += 1
    assert len(left_colours) == len(right_colours) == 10
    for colour in left_colours:
        share = left_colours[colour] / (left_colours[colour] + right_colours[colour])
        assert 0.25 < share < 0.75, colour


# ---------------------------------------------------------------- files, manifest, determinism


def test_every_referenced_image_exists_and_decodes(world: Path) -> None:
    refs = referenced_images(world)
    assert refs == image_files(world)  # nothing missing, nothing unreferenced
    assert refs == set(scenes(world))
    for rel in refs:
        data = (world / rel).read_bytes()
        assert data.startswith(JPEG_MAGIC), rel
        with Image.open(world / rel) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"


def test_counts_equal_the_manifest(world: Path) -> None:
    info = manifest(world)
    assert (info["generator"], info["seed"], info["scale"], info["dirty"]) == ("clipablate.toyworld", 0, "small", False)
    files = info["files"]
    lcs, mix = load(world, LCS), load(world, MIX)
    assert files[LCS]["items"] == files[LCS]["image_items"] == len(lcs)
    assert files[MIX]["items"] == len(mix)
    assert files[MIX]["text_only_items"] == sum("image" not in i for i in mix)
    assert files[MIX]["images"] == len({i["image"] for i in mix if "image" in i})
    for rel in (WHATSUP_A, WHATSUP_B, *SPATIAL_QA):
        assert files[rel]["rows"] == files[rel]["images"] == len(load(world, rel))
    with (world / MMVP_CSV).open(newline="", encoding="utf-8") as handle:
        assert files[MMVP_CSV]["rows"] == len(list(csv.DictReader(handle))) == 36
    assert files["scenes.jsonl"]["rows"] == len(scenes(world))
    on_disk = image_files(world)
    assert info["images_total"] == len(on_disk)
    for folder, count in info["image_dirs"].items():
        assert count == sum(p.startswith(folder + "/") for p in on_disk), folder
    # Relation counts per file, recounted from the scenes (rendered) and file names (What'sUp labels).
    records = scenes(world)
    recount = Counter(records[f"llava/images/{i['image']}"]["relation"] for i in lcs)
    assert info["relations"][LCS] == dict(recount)
    recount = Counter(records[f"llava/{i['image']}"]["relation"] for i in mix if "image" in i)
    assert info["relations"][MIX] == dict(recount)
    for rel in (WHATSUP_A, WHATSUP_B):
        recount = Counter(records["bench/" + r["image_path"]]["labelled_relation"] for r in load(world, rel))
        assert info["relations"][rel] == dict(recount) == dict.fromkeys(recount, 12)
    assert info["defect_counts"] == dict.fromkeys(info["defects"], 0)


def test_same_seed_is_byte_identical(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, seed=0, scale="small", dirty=False)
    assert file_digests(again) == file_digests(world)


def test_cli_writes_a_world_for_another_seed(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli world"
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.toyworld", "--out", str(out), "--seed", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(out.resolve()) in result.stdout and "controlled_images_dataset.json" in result.stdout
    assert manifest(out)["seed"] == 1
    ours, theirs = file_digests(world), file_digests(out)
    assert ours[LCS] != theirs[LCS] and ours[MMVP_CSV] != theirs[MMVP_CSV]
    shared = set(ours) & set(theirs)
    assert sum(ours[p] != theirs[p] for p in shared) > 0.9 * len(shared)


def test_refuses_to_overwrite_a_folder_that_is_not_a_toy_world(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------- --dirty


def _entries(root: Path, kind: str) -> list[dict]:
    entries = manifest(root)["defects"][kind]
    assert entries, kind
    return entries


def test_clean_world_has_none_of_the_defects(world: Path) -> None:
    for rel in (LCS, MIX):
        items = load(world, rel)
        dumps = [json.dumps(item, sort_keys=True) for item in items]
        assert len(set(dumps)) == len(dumps)
        for item in items:
            assert item["conversations"]
            assert all(isinstance(v, str) and v.strip() for v in gpt_values(item))
        assert (world / rel).read_bytes().isascii() and all(d.encode().isascii() for d in dumps)
        assert "\\u" not in (world / rel).read_text(encoding="utf-8")


def test_dirty_world_has_every_defect_really_broken(world: Path, dirty_world: Path) -> None:
    info = manifest(dirty_world)
    assert info["dirty"] is True and all(info["defect_counts"].values())
    lcs, mix = load(dirty_world, LCS), load(dirty_world, MIX)
    by_id = {(item["id"], item.get("image")): item for item in lcs + mix}

    missing = _entries(dirty_world, "missing_image")
    assert all(not (dirty_world / e["path"]).exists() and (e["id"], e["image"]) in by_id for e in missing)

    for entry in _entries(dirty_world, "truncated_jpeg"):
        data = (dirty_world / entry["path"]).read_bytes()
        assert data.startswith(JPEG_MAGIC) and not data.endswith(b"\xff\xd9")
        with Image.open(dirty_world / entry["path"]) as image, pytest.raises(OSError):
            image.load()

    assert all((dirty_world / e["path"]).stat().st_size == 0 for e in _entries(dirty_world, "zero_byte_jpeg"))

    for kind, magic, fmt in (("png_as_jpg", b"\x89PNG\r\n\x1a\n", "PNG"), ("gif_as_jpg", b"GIF8", "GIF")):
        for entry in _entries(dirty_world, kind):
            assert entry["path"].startswith("llava/ocr_vqa/images/") and entry["path"].endswith(".jpg")
            assert (dirty_world / entry["path"]).read_bytes().startswith(magic)
            with Image.open(dirty_world / entry["path"]) as image:
                image.load()
                assert image.format == fmt

    for entry in _entries(dirty_world, "cmyk_jpeg"):
        assert (dirty_world / entry["path"]).read_bytes().startswith(JPEG_MAGIC)
        with Image.open(dirty_world / entry["path"]) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "CMYK"

    for entry in _entries(dirty_world, "empty_conversations"):
        assert by_id[(entry["id"], entry.get("image"))]["conversations"] == []

    odd_values = [
        v for e in _entries(dirty_world, "non_string_value") for v in gpt_values(by_id[(e["id"], e["image"])])
    ]
    assert {type(v) for v in odd_values if not isinstance(v, str)} == {int, type(None)}

    dumps = Counter(json.dumps(item, sort_keys=True) for item in mix)
    duplicated = [json.loads(d) for d, n in dumps.items() if n > 1]
    assert [(d["id"], d["image"]) for d in duplicated] == [
        (e["id"], e["image"]) for e in _entries(dirty_world, "duplicate_item")
    ]

    for entry in _entries(dirty_world, "empty_caption"):
        assert entry["file"] == LCS and gpt_values(by_id[(entry["id"], entry["image"])])[0].strip() == ""

    for entry in _entries(dirty_world, "non_ascii_text"):
        answers = gpt_values(by_id[(entry["id"], entry["image"])])
        assert any(not a.isascii() for a in answers if isinstance(a, str))

    # Defects only add items: the clean items are all still there, text-only items still last, and the
    # benchmarks are untouched.
    for rel in (LCS, MIX):
        clean = [json.dumps(i, sort_keys=True) for i in load(world, rel)]
        dirty = Counter(json.dumps(i, sort_keys=True) for i in load(dirty_world, rel))
        assert not Counter(clean) - dirty
    first_text = next(i for i, item in enumerate(mix) if "image" not in item)
    assert all("image" not in item for item in mix[first_text:])
    clean_digests, dirty_digests = file_digests(world), file_digests(dirty_world)
    bench = [p for p in clean_digests if p.startswith("bench/")]
    assert bench and all(clean_digests[p] == dirty_digests[p] for p in bench)
