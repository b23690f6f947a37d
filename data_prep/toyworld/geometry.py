"""Placement of objects on the canvas so that each relation is geometrically (and so visually) true.

Boxes are (x0, y0, x1, y1) in pixels with x1/y1 exclusive. Objects "stand" on a ground line: their box
bottom is the ground y. Relations between a subject A and a reference B:
  left_of   both on about the same ground line, A.x1 < B.x0 (right_of is the mirror)
  on        A's bottom touches B's top, A's centre x inside B's x-range (under: B on A)
  above     A entirely higher than B, not touching (below is the converse)
  in_front_of  A lower (closer ground), larger, drawn after B and overlapping it (behind: converse)
Single-object relations (left/right/top/bottom) put the whole object in that half of the image.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from data_prep.toyworld.catalog import ObjectKind

Box = tuple[int, int, int, int]

PAIR_RELATIONS = ("left_of", "right_of", "on", "under", "above", "below", "in_front_of", "behind")
SINGLE_RELATIONS = ("left", "right", "top", "bottom")
OPPOSITE = {
    "left_of": "right_of",
    "right_of": "left_of",
    "on": "under",
    "under": "on",
    "above": "below",
    "below": "above",
    "in_front_of": "behind",
    "behind": "in_front_of",
    "left": "right",
    "right": "left",
    "top": "bottom",
    "bottom": "top",
}

MARGIN = 3  # keep every object fully inside the image
FRONT_SCALE = (1.25, 1.45)  # perspective: the closer object is drawn larger


class LayoutError(ValueError):
    """The requested objects do not fit the canvas; callers retry smaller."""


@dataclass(frozen=True)
class PairLayout:
    subject: Box
    reference: Box
    subject_drawn_last: bool
    ground_y: int  # the ground line of the farthest object (backdrop horizon goes above it)


def object_dims(kind: ObjectKind, base: float) -> tuple[int, int]:
    root = math.sqrt(kind.aspect)
    return max(6, round(base * root)), max(6, round(base / root))


def stand(cx: float, bottom: int, dims: tuple[int, int]) -> Box:
    """The box of an object of `dims` centred at cx whose bottom rests on the line y=bottom."""
    w, h = dims
    x0 = round(cx - w / 2)
    return (x0, bottom - h, x0 + w, bottom)


def centre_x(box: Box) -> float:
    return (box[0] + box[2]) / 2


def inside(box: Box, size: tuple[int, int], top: int = 0) -> bool:
    width, height = size
    return box[0] >= MARGIN and box[1] >= max(MARGIN, top) and box[2] <= width - MARGIN and box[3] <= height - 1


def intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def relation_holds(relation: str, a: Box, b: Box | None, size: tuple[int, int], a_drawn_last: bool) -> bool:
    """The project's definition of each relation, checked on every composed scene."""
    width, height = size
    if relation in SINGLE_RELATIONS:
        return {
            "left": a[2] <= width / 2,
            "right": a[0] >= width / 2,
            "top": a[3] <= height / 2,
            "bottom": a[1] >= height / 2,
        }[relation]
    assert b is not None
    if relation == "left_of":
        return a[2] < b[0] and abs(a[3] - b[3]) <= 6
    if relation == "right_of":
        return relation_holds("left_of", b, a, size, not a_drawn_last)
    if relation == "on":
        return abs(a[3] - b[1]) <= 2 and b[0] <= centre_x(a) <= b[2]
    if relation == "under":
        return relation_holds("on", b, a, size, not a_drawn_last)
    if relation == "above":
        return a[3] < b[1]
    if relation == "below":
        return relation_holds("above", b, a, size, not a_drawn_last)
    if relation == "in_front_of":
        return a[3] > b[3] and area(a) > area(b) and a_drawn_last and intersects(a, b)
    if relation == "behind":
        return relation_holds("in_front_of", b, a, size, not a_drawn_last)
    raise ValueError(f"unknown relation {relation!r}")


def layout_pair(
    rng: random.Random,
    relation: str,
    size: tuple[int, int],
    kinds: tuple[ObjectKind, ObjectKind],
    top: int = 0,
    base_range: tuple[float, float] = (0.2, 0.32),
) -> PairLayout:
    """Random boxes for (subject, reference) making `relation` true; shrinks the objects until they fit."""
    shrink = 1.0
    for _ in range(40):
        base_a = rng.uniform(*base_range) * min(size) * shrink
        base_b = rng.uniform(*base_range) * min(size) * shrink
        try:
            layout = _try_layout(rng, relation, size, kinds, (base_a, base_b), top)
        except LayoutError:
            shrink *= 0.9
            continue
        if relation_holds(relation, layout.subject, layout.reference, size, layout.subject_drawn_last):
            return layout
        shrink *= 0.95
    raise LayoutError(f"cannot lay out {relation} in {size}")


def _try_layout(
    rng: random.Random,
    relation: str,
    size: tuple[int, int],
    kinds: tuple[ObjectKind, ObjectKind],
    bases: tuple[float, float],
    top: int,
) -> PairLayout:
    width, height = size
    dims_a, dims_b = object_dims(kinds[0], bases[0]), object_dims(kinds[1], bases[1])
    if relation in ("right_of", "under", "below", "behind"):
        # Lay out the converse with the roles exchanged, then hand the boxes back in subject order.
        flipped = _try_layout(rng, OPPOSITE[relation], size, (kinds[1], kinds[0]), (bases[1], bases[0]), top)
        return PairLayout(flipped.reference, flipped.subject, not flipped.subject_drawn_last, flipped.ground_y)
    if relation == "left_of":
        ground = round(height * rng.uniform(0.7, 0.92))
        gap = max(4, round(width * rng.uniform(0.04, 0.12)))
        free = width - 2 * MARGIN - dims_a[0] - dims_b[0] - gap
        if free < 0:
            raise LayoutError
        left_pad = rng.uniform(0, free)
        gap += rng.uniform(0, free - left_pad)
        cx_a = MARGIN + left_pad + dims_a[0] / 2
        cx_b = cx_a + dims_a[0] / 2 + gap + dims_b[0] / 2
        box_a = stand(cx_a, ground + rng.randint(-2, 2), dims_a)
        box_b = stand(cx_b, ground + rng.randint(-2, 2), dims_b)
        _check_inside(size, top, box_a, box_b)
        return PairLayout(box_a, box_b, rng.random() < 0.5, ground)
    if relation == "on":
        ground = round(height * rng.uniform(0.75, 0.95))
        half = dims_b[0] / 2
        cx_b = rng.uniform(MARGIN + half, width - MARGIN - half)
        box_b = stand(cx_b, ground, dims_b)
        cx_a = box_b[0] + dims_b[0] * rng.uniform(0.3, 0.7)
        cx_a = min(max(cx_a, MARGIN + dims_a[0] / 2), width - MARGIN - dims_a[0] / 2)
        box_a = stand(cx_a, box_b[1], dims_a)
        _check_inside(size, top, box_a, box_b)
        return PairLayout(box_a, box_b, True, ground)
    if relation == "above":
        ground = round(height * rng.uniform(0.75, 0.95))
        cx_b = rng.uniform(MARGIN + dims_b[0] / 2, width - MARGIN - dims_b[0] / 2)
        box_b = stand(cx_b, ground, dims_b)
        gap = max(4, round(height * 0.06))
        lowest = box_b[1] - gap
        highest = max(MARGIN, top) + dims_a[1]
        if lowest < highest:
            raise LayoutError
        cx_a = cx_b + rng.uniform(-0.5, 0.5) * dims_b[0]
        cx_a = min(max(cx_a, MARGIN + dims_a[0] / 2), width - MARGIN - dims_a[0] / 2)
        box_a = stand(cx_a, rng.randint(highest, lowest), dims_a)
        _check_inside(size, top, box_a, box_b)
        return PairLayout(box_a, box_b, rng.random() < 0.5, ground)
    if relation == "in_front_of":
        dims_a = object_dims(kinds[0], bases[0] * rng.uniform(*FRONT_SCALE))
        back_ground = round(height * rng.uniform(0.55, 0.72))
        depth = round(min(height * rng.uniform(0.1, 0.25), dims_a[1] * 0.6))
        front_ground = min(back_ground + max(depth, 3), height - 1)
        cx_b = rng.uniform(MARGIN + dims_b[0] / 2, width - MARGIN - dims_b[0] / 2)
        # A partial horizontal overlap so the front object occludes part of the back one.
        shift = rng.choice((-1, 1)) * rng.uniform(0.3, 0.6) * (dims_a[0] + dims_b[0]) / 2
        cx_a = cx_b + shift
        if not MARGIN + dims_a[0] / 2 <= cx_a <= width - MARGIN - dims_a[0] / 2:
            cx_a = cx_b - shift
        box_a = stand(cx_a, front_ground, dims_a)
        box_b = stand(cx_b, back_ground, dims_b)
        if area(box_a) <= area(box_b):
            raise LayoutError
        _check_inside(size, top, box_a, box_b)
        return PairLayout(box_a, box_b, True, back_ground)
    raise ValueError(f"not a pair relation: {relation!r}")


def _check_inside(size: tuple[int, int], top: int, *boxes: Box) -> None:
    if not all(inside(box, size, top) for box in boxes):
        raise LayoutError


def layout_single(
    rng: random.Random,
    relation: str,
    size: tuple[int, int],
    kind: ObjectKind,
    base_range: tuple[float, float] = (0.2, 0.32),
) -> Box:
    """A box lying wholly in the named half of the image (left/right/top/bottom)."""
    width, height = size
    shrink = 1.0
    for _ in range(40):
        w, h = object_dims(kind, rng.uniform(*base_range) * min(size) * shrink)
        x_lo, x_hi = MARGIN, width - MARGIN - w
        y_lo, y_hi = MARGIN, height - 1 - h
        if relation == "left":
            x_hi = min(x_hi, width // 2 - w)
        elif relation == "right":
            x_lo = max(x_lo, math.ceil(width / 2))
        elif relation == "top":
            y_hi = min(y_hi, height // 2 - h)
        elif relation == "bottom":
            y_lo = max(y_lo, math.ceil(height / 2))
        else:
            raise ValueError(f"not a single-object relation: {relation!r}")
        if x_lo <= x_hi and y_lo <= y_hi:
            x0, y0 = rng.randint(x_lo, x_hi), rng.randint(y_lo, y_hi)
            return (x0, y0, x0 + w, y0 + h)
        shrink *= 0.9
    raise LayoutError(f"cannot place {kind.name} {relation} in {size}")
