"""A scene = canvas + backdrop + objects in draw order + the relation it depicts, and its JSONL record."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from data_prep.toyworld.catalog import BACKDROPS, CLUTTER_RGB, RGB, SceneObject, pick_object, pick_pair
from data_prep.toyworld.geometry import (
    MARGIN,
    Box,
    PairLayout,
    intersects,
    layout_pair,
    layout_single,
    relation_holds,
)
from data_prep.toyworld.render import Backdrop, DrawSpec, render


@dataclass
class Placement:
    obj: SceneObject
    box: Box
    variant: dict[str, object] = field(default_factory=dict)


@dataclass
class Scene:
    size: tuple[int, int]
    backdrop: Backdrop
    placements: list[Placement]  # in draw order: later ones occlude earlier ones
    relation: str | None = None
    subject: int | None = None  # index into placements
    reference: int | None = None
    labelled_relation: str | None = None  # what the file name/caption claims, if it differs (label errors)
    clutter: list[tuple[Box, RGB]] = field(default_factory=list)
    signs: list[tuple[Box, str]] = field(default_factory=list)
    note: str | None = None  # e.g. the MMVP statement this image makes true

    def subject_object(self) -> SceneObject:
        assert self.subject is not None
        return self.placements[self.subject].obj

    def reference_object(self) -> SceneObject:
        assert self.reference is not None
        return self.placements[self.reference].obj

    def image(self) -> Image.Image:
        specs = [DrawSpec(p.obj.kind.shape, p.obj.colour.rgb, p.box, p.variant) for p in self.placements]
        return render(self.size, self.backdrop, specs, self.clutter, self.signs)

    def record(self, path: str, defect: str | None = None) -> dict[str, object]:
        return {
            "path": path,
            "relation": self.relation,
            "labelled_relation": self.labelled_relation or self.relation,
            "subject": self.subject,
            "reference": self.reference,
            "size": list(self.size),
            "style": self.backdrop.style,
            "objects": [
                {
                    "name": p.obj.name,
                    "kind": p.obj.kind.name,
                    "colour": p.obj.colour.name,
                    "rgb": list(p.obj.colour.rgb),
                    "shape": p.obj.kind.shape,
                    "bbox": list(p.box),
                    **({"variant": p.variant} if p.variant else {}),
                }
                for p in self.placements
            ],
            "clutter": [list(box) for box, _rgb in self.clutter],
            "signs": [{"bbox": list(box), "text": text} for box, text in self.signs],
            "note": self.note,
            "defect": defect,
        }


def random_canvas(rng: random.Random, side_range: tuple[int, int], vary_aspect: bool = True) -> tuple[int, int]:
    lo, hi = side_range
    if vary_aspect:
        return rng.randint(lo, hi), rng.randint(lo, hi)
    side = rng.randint(lo, hi)
    return side, side


def random_backdrop(rng: random.Random, size: tuple[int, int], style: str, ground_y: int) -> Backdrop:
    """A backdrop whose horizon lies above the given ground line (the farthest object's base)."""
    height = size[1]
    if style == "clevr":
        grey = rng.randint(140, 165)
        return Backdrop("clevr", "grey", (grey, grey, grey), None, "solid", 0.0, 1.0, rng.getrandbits(32))
    colour = rng.choice(BACKDROPS)
    texture = rng.choice(("solid", "gradient", "noise"))
    horizon = round(ground_y - height * rng.uniform(0.12, 0.3))
    horizon_y = max(round(height * 0.2), horizon) if horizon < ground_y - 2 else None
    return Backdrop(
        "indoor",
        colour.name,
        colour.rgb,
        horizon_y,
        texture,
        rng.uniform(-0.22, 0.22),
        rng.uniform(0.8, 0.9),
        rng.getrandbits(32),
    )


def sign_box(rng: random.Random, size: tuple[int, int], text: str) -> Box:
    """A board in the top strip of the image wide enough for `text`."""
    width, height = size
    board_h = max(14, round(height * 0.14))
    board_w = min(width - 2 * MARGIN, round(board_h * (0.62 * len(text) + 0.6)))
    x0 = rng.randint(MARGIN, width - MARGIN - board_w)
    return (x0, MARGIN, x0 + board_w, MARGIN + board_h)


def scatter_clutter(rng: random.Random, size: tuple[int, int], count: int, avoid: list[Box]) -> list[tuple[Box, RGB]]:
    """Small muted blobs (the 'little clutter' of real photos) that touch none of the objects."""
    width, height = size
    clutter: list[tuple[Box, RGB]] = []
    for _ in range(count * 4):
        if len(clutter) == count:
            break
        w = max(4, round(min(size) * rng.uniform(0.04, 0.09)))
        h = max(4, round(w * rng.uniform(0.6, 1.4)))
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        box = (x0, y0, x0 + w, y0 + h)
        grown = [(b[0] - 2, b[1] - 2, b[2] + 2, b[3] + 2) for b in avoid]
        if not any(intersects(box, other) for other in grown):
            clutter.append((box, rng.choice(CLUTTER_RGB)))
    return clutter


def compose_pair(
    rng: random.Random,
    relation: str,
    size: tuple[int, int],
    objects: tuple[SceneObject, SceneObject] | None = None,
    style: str = "indoor",
    clutter: int = 0,
    sign_text: str | None = None,
) -> Scene:
    subject, reference = objects if objects is not None else pick_pair(rng)
    signs = [(sign_box(rng, size, sign_text), sign_text)] if sign_text else []
    top = signs[0][0][3] + 2 if signs else 0
    layout = layout_pair(rng, relation, size, (subject.kind, reference.kind), top=top)
    return pair_scene(rng, relation, size, (subject, reference), layout, style, clutter, signs)


def pair_scene(
    rng: random.Random,
    relation: str,
    size: tuple[int, int],
    objects: tuple[SceneObject, SceneObject],
    layout: PairLayout,
    style: str = "indoor",
    clutter: int = 0,
    signs: list[tuple[Box, str]] | None = None,
    backdrop: Backdrop | None = None,
) -> Scene:
    """A scene from an explicit layout; checks that the layout really shows `relation`."""
    if not relation_holds(relation, layout.subject, layout.reference, size, layout.subject_drawn_last):
        raise AssertionError(f"layout does not show {relation}")
    subject = Placement(objects[0], layout.subject)
    reference = Placement(objects[1], layout.reference)
    placements = [reference, subject] if layout.subject_drawn_last else [subject, reference]
    subject_index = placements.index(subject)
    scene_backdrop = backdrop or random_backdrop(rng, size, style, layout.ground_y)
    avoid = [layout.subject, layout.reference] + [box for box, _ in signs or []]
    return Scene(
        size,
        scene_backdrop,
        placements,
        relation,
        subject_index,
        1 - subject_index,
        clutter=scatter_clutter(rng, size, clutter, avoid) if clutter else [],
        signs=list(signs or []),
    )


def compose_single(
    rng: random.Random, relation: str, size: tuple[int, int], obj: SceneObject | None = None, clutter: int = 0
) -> Scene:
    thing = obj or pick_object(rng)
    box = layout_single(rng, relation, size, thing.kind)
    if not relation_holds(relation, box, None, size, True):
        raise AssertionError(f"layout does not show {relation}")
    backdrop = random_backdrop(rng, size, "indoor", max(box[3], round(size[1] * 0.6)))
    return Scene(
        size,
        backdrop,
        [Placement(thing, box)],
        relation,
        0,
        None,
        clutter=scatter_clutter(rng, size, clutter, [box]) if clutter else [],
    )
