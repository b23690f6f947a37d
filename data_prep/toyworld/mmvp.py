"""MMVP-VLM and MMVP (for MLLMs): 9 visual-pattern types, pairs of near-identical images with contrasting statements.

Statement i is true of image i; the two images of a pair share canvas, backdrop and layout and differ
only in the property the type tests. MMVP-VLM (for CLIP) lists the statements; MMVP (for MLLMs, the official
`Questions.csv` + `MMVP Images/<Index>.jpg` layout) asks one question of both images of a pair, the same two
options in the same order for both, each image's own statement being its correct answer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from data_prep.toyworld.catalog import KIND_BY_NAME, KINDS, PALETTE, SceneObject, article, pick_object, pick_pair
from data_prep.toyworld.geometry import MARGIN, Box, layout_pair, object_dims, stand
from data_prep.toyworld.output import WorldWriter
from data_prep.toyworld.scales import Scale
from data_prep.toyworld.scenes import Placement, Scene, random_backdrop
from data_prep.toyworld.seeding import item_rng

MMVP_TYPES = (
    "Orientation",
    "Presence",
    "State",
    "Quantity",
    "Spatial",
    "Color",
    "Structural Character",
    "Text",
    "Camera Perspective",
)
CSV_FILE = "bench/MMVP_VLM/Questions.csv"
MLLM_CSV_FILE = "bench/MMVP/Questions.csv"
MLLM_IMAGES = "bench/MMVP/MMVP Images"
# The authors' statements for scoring CLIP on MMVP (lst627/CLIP-Embeds additional_questions/Questions-clip.csv), which
# users place beside MMVP's own files: one statement per image, Type "Unknown".
CLIP_CSV_FILE = "bench/MMVP/Questions-clip.csv"
MLLM_QUESTION = "Which of these describes the image?"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")

Pair = tuple[tuple[Scene, str], tuple[Scene, str]]


def _centred(rng: random.Random, size: tuple[int, int], dims: tuple[int, int]) -> Box:
    width, height = size
    cx = rng.uniform(width * 0.35, width * 0.65)
    ground = min(height - 1, round(height * rng.uniform(0.72, 0.88)))
    return stand(cx, ground, dims)


def _dims(obj: SceneObject, size: tuple[int, int], fraction: float) -> tuple[int, int]:
    return object_dims(obj.kind, fraction * min(size))


def _scene(
    rng: random.Random, size: tuple[int, int], placements: list[Placement], signs: list[tuple[Box, str]] | None = None
) -> Scene:
    """The first image of a pair, with a fresh backdrop; the second reuses `scene.backdrop`."""
    ground = max((p.box[3] for p in placements), default=round(size[1] * 0.8))
    return Scene(size, random_backdrop(rng, size, "indoor", ground), placements, signs=list(signs or []))


def _orientation(rng: random.Random, size: tuple[int, int]) -> Pair:
    cone = SceneObject(KIND_BY_NAME["cone"], rng.choice(PALETTE))
    box = _centred(rng, size, _dims(cone, size, rng.uniform(0.35, 0.5)))
    up = _scene(rng, size, [Placement(cone, box, {"pointing": "up"})])
    down = Scene(size, up.backdrop, [Placement(cone, box, {"pointing": "down"})])
    return (
        (up, f"The {cone.name} is pointing up"),
        (down, f"The {cone.name} is pointing down"),
    )


def _presence(rng: random.Random, size: tuple[int, int]) -> Pair:
    extra, kept = pick_pair(rng)
    layout = layout_pair(rng, rng.choice(("left_of", "right_of")), size, (extra.kind, kept.kind))
    both = _scene(rng, size, [Placement(extra, layout.subject), Placement(kept, layout.reference)])
    only = Scene(size, both.backdrop, [Placement(kept, layout.reference)])
    return (
        (both, f"There is {article(extra.name)} {extra.name} in the image"),
        (only, f"There is no {extra.name} in the image"),
    )


def _state(rng: random.Random, size: tuple[int, int]) -> Pair:
    colours = [c for c in PALETTE if c.name != "black"]  # the empty cup shows a dark inside
    cup = SceneObject(KIND_BY_NAME["cup"], rng.choice(colours))
    box = _centred(rng, size, _dims(cup, size, rng.uniform(0.35, 0.5)))
    full = _scene(rng, size, [Placement(cup, box, {"state": "full"})])
    empty = Scene(size, full.backdrop, [Placement(cup, box, {"state": "empty"})])
    return ((full, f"The {cup.name} is full"), (empty, f"The {cup.name} is empty"))


def _row(size: tuple[int, int], obj: SceneObject, count: int, base: float) -> list[Placement]:
    """`count` identical objects standing side by side, evenly spaced."""
    width, height = size
    dims = _dims(obj, size, base)
    ground = min(height - 1, round(height * 0.82))
    step = (width - 2 * MARGIN) / count
    return [Placement(obj, stand(MARGIN + step * (k + 0.5), ground, dims)) for k in range(count)]


def _quantity(rng: random.Random, size: tuple[int, int]) -> Pair:
    obj = pick_object(rng)
    low = rng.randint(1, 3)
    counts = (low, low + 1)
    base = min(0.22, 0.8 / (counts[1] + 1))
    first = _scene(rng, size, _row(size, obj, counts[0], base))
    second = Scene(size, first.backdrop, _row(size, obj, counts[1], base))

    def statement(n: int) -> str:
        noun = obj.kind.name if n == 1 else f"{obj.kind.name}s"
        return f"There {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} {obj.colour.name} {noun}"

    return ((first, statement(counts[0])), (second, statement(counts[1])))


def _spatial(rng: random.Random, size: tuple[int, int]) -> Pair:
    subject, reference = pick_pair(rng)
    layout = layout_pair(rng, "left_of", size, (subject.kind, reference.kind))
    width = size[0]

    def mirror(box: Box) -> Box:
        return (width - box[2], box[1], width - box[0], box[3])

    left = _scene(rng, size, [Placement(subject, layout.subject), Placement(reference, layout.reference)])
    left.relation, left.subject, left.reference = "left_of", 0, 1
    placements = [Placement(subject, mirror(layout.subject)), Placement(reference, mirror(layout.reference))]
    right = Scene(size, left.backdrop, placements, "right_of", 0, 1)
    return (
        (left, f"The {subject.name} is to the left of the {reference.name}"),
        (right, f"The {subject.name} is to the right of the {reference.name}"),
    )


def _colour(rng: random.Random, size: tuple[int, int]) -> Pair:
    kind = rng.choice(KINDS)
    first, second = rng.sample(PALETTE, 2)
    box = _centred(rng, size, _dims(SceneObject(kind, first), size, rng.uniform(0.3, 0.45)))
    one = _scene(rng, size, [Placement(SceneObject(kind, first), box)])
    two = Scene(size, one.backdrop, [Placement(SceneObject(kind, second), box)])
    return ((one, f"The {kind.name} is {first.name}"), (two, f"The {kind.name} is {second.name}"))


def _structure(rng: random.Random, size: tuple[int, int]) -> Pair:
    star = SceneObject(KIND_BY_NAME["star"], rng.choice(PALETTE))
    box = _centred(rng, size, _dims(star, size, rng.uniform(0.4, 0.55)))
    points = rng.sample((4, 5, 6, 8), 2)
    one = _scene(rng, size, [Placement(star, box, {"points": points[0]})])
    two = Scene(size, one.backdrop, [Placement(star, box, {"points": points[1]})])
    return (
        (one, f"The {star.name} has {NUMBER_WORDS[points[0]]} points"),
        (two, f"The {star.name} has {NUMBER_WORDS[points[1]]} points"),
    )


def _text(rng: random.Random, size: tuple[int, int]) -> Pair:
    letters = rng.sample("ABCDEFGHKMNPRSTXYZ", 2)
    width, height = size
    side = round(min(size) * rng.uniform(0.32, 0.45))  # a big board: the sign is the subject here
    x0 = rng.randint(MARGIN, width - MARGIN - side)
    y0 = rng.randint(round(height * 0.2), height - MARGIN - side)
    board = (x0, y0, x0 + side, y0 + side)
    one = _scene(rng, size, [], signs=[(board, letters[0])])
    two = Scene(size, one.backdrop, [], signs=[(board, letters[1])])
    return ((one, f"The sign reads {letters[0]}"), (two, f"The sign reads {letters[1]}"))


def _perspective(rng: random.Random, size: tuple[int, int]) -> Pair:
    obj = pick_object(rng)
    near = _centred(rng, size, _dims(obj, size, 0.62))
    far = _centred(rng, size, _dims(obj, size, 0.16))
    close = _scene(rng, size, [Placement(obj, near)])
    distant = Scene(size, close.backdrop, [Placement(obj, far)])
    return (
        (close, f"The {obj.name} is photographed up close"),
        (distant, f"The {obj.name} is photographed from far away"),
    )


BUILDERS: dict[str, Callable[[random.Random, tuple[int, int]], Pair]] = {
    "Orientation": _orientation,
    "Presence": _presence,
    "State": _state,
    "Quantity": _quantity,
    "Spatial": _spatial,
    "Color": _colour,
    "Structural Character": _structure,
    "Text": _text,
    "Camera Perspective": _perspective,
}


def _pairs(seed: int, scale: Scale, namespace: str) -> Iterator[tuple[str, random.Random, list[tuple[Scene, str]]]]:
    """(type, the pair's rng, its two (scene, statement)) for every pair, type by type; which comes first varies."""
    for mmvp_type in MMVP_TYPES:
        for index in range(scale.mmvp_pairs_per_type):
            rng = item_rng(seed, f"{namespace}-{mmvp_type}", index)
            side = rng.randint(*scale.sides)
            pair = list(BUILDERS[mmvp_type](rng, (side, side)))
            rng.shuffle(pair)
            yield mmvp_type, rng, pair


def write_mmvp(writer: WorldWriter, seed: int, scale: Scale) -> None:
    rows: list[list[Any]] = []
    tally: dict[str, int] = {}
    qid = 0
    for mmvp_type, _, pair in _pairs(seed, scale, "mmvp"):
        for scene, statement in pair:
            qid += 1
            scene.note = statement
            writer.save_image(f"bench/MMVP_VLM/{mmvp_type}/{qid}.jpg", scene)
            rows.append([qid, mmvp_type, statement])
        tally[mmvp_type] = tally.get(mmvp_type, 0) + 2
    stats = {
        "format": "mmvp-vlm",
        "rows": len(rows),
        "pairs": len(rows) // 2,
        "types": len(MMVP_TYPES),
        "images": len(rows),
    }
    writer.write_csv(CSV_FILE, ["Question ID", "Type", "Statement"], rows, stats, tally)


def write_mmvp_mllm(writer: WorldWriter, seed: int, scale: Scale) -> None:
    """MMVP for MLLMs in the official layout: `Index,Question,Options,Correct Answer`, e.g.
        `1,Which of these describes the image?,(a) The cone is pointing up (b) The cone is pointing down,(a)`;
        pairs are consecutive rows (1, 2), (3, 4), ...; images `MMVP Images/<Index>.jpg`. Its own scenes (seeded apart
        from MMVP-VLM's), so the two benchmarks share no image. Beside it, `Questions-clip.csv` in the authors' layout
    (`Question ID,Type,Statement`, Type "Unknown", each image's own statement) for benchmark mmvp_clip."""
    rows: list[list[Any]] = []
    clip_rows: list[list[Any]] = []
    tally: dict[str, int] = {}
    index = 0
    for mmvp_type, rng, pair in _pairs(seed, scale, "mmvp-mllm"):
        statements = [statement for _, statement in pair]
        order = rng.sample(range(2), 2)  # option order, shared by the pair
        options = " ".join(f"({letter}) {statements[k]}" for letter, k in zip("ab", order, strict=True))
        for k, (scene, statement) in enumerate(pair):
            index += 1
            scene.note = statement
            writer.save_image(f"{MLLM_IMAGES}/{index}.jpg", scene)
            rows.append([index, MLLM_QUESTION, options, f"({'ab'[order.index(k)]})"])
            clip_rows.append([index, "Unknown", statement])
        tally[mmvp_type] = tally.get(mmvp_type, 0) + 2
    stats = {"format": "mmvp", "rows": len(rows), "pairs": len(rows) // 2, "types": len(MMVP_TYPES)}
    stats["images"] = len(rows)
    writer.write_csv(MLLM_CSV_FILE, ["Index", "Question", "Options", "Correct Answer"], rows, stats, tally)
    clip_stats = {"format": "mmvp-clip", "rows": len(clip_rows), "pairs": len(clip_rows) // 2, "images": len(clip_rows)}
    writer.write_csv(
        CLIP_CSV_FILE, ["Question ID", "Type", "Statement"], clip_rows, clip_stats, {"Unknown": len(clip_rows)}
    )
