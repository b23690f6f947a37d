"""The toy world's vocabulary: named colours, object kinds and backdrop colours.

Colours are saturated and far apart (pairwise RGB distance > 90) and backdrops are muted mid-tones far
from every palette colour, so an object's pixels can be found by colour alone (tests rely on this).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Colour:
    name: str
    rgb: RGB


@dataclass(frozen=True)
class ObjectKind:
    """One kind of thing; the name determines the shape, so different names mean different shapes."""

    name: str
    shape: str
    aspect: float  # width / height of the drawn bounding box


@dataclass(frozen=True)
class SceneObject:
    kind: ObjectKind
    colour: Colour
    label: str | None = None  # overrides "<colour> <kind>" (the What'sUp "pillow"/"chair" pair)

    @property
    def name(self) -> str:
        return self.label if self.label is not None else f"{self.colour.name} {self.kind.name}"

    @property
    def slug(self) -> str:
        """File-name form: words joined by '-' so that '_' only separates objects and relations."""
        return self.name.replace(" ", "-")


PALETTE: tuple[Colour, ...] = (
    Colour("red", (205, 30, 40)),
    Colour("orange", (245, 125, 15)),
    Colour("yellow", (245, 225, 45)),
    Colour("green", (35, 160, 60)),
    Colour("blue", (35, 75, 225)),
    Colour("purple", (130, 45, 180)),
    Colour("pink", (250, 135, 205)),
    Colour("brown", (115, 65, 20)),
    Colour("black", (20, 20, 20)),
    Colour("white", (248, 248, 248)),
)

KINDS: tuple[ObjectKind, ...] = (
    ObjectKind("ball", "circle", 1.0),
    ObjectKind("box", "square", 1.0),
    ObjectKind("cone", "triangle", 0.9),
    ObjectKind("star", "star", 1.0),
    ObjectKind("ring", "ring", 1.0),
    ObjectKind("cup", "cup", 1.15),
    ObjectKind("book", "tall_rect", 0.7),
    ObjectKind("plate", "flat_ellipse", 2.4),
    ObjectKind("pillow", "rounded_rect", 1.8),
    ObjectKind("chair", "chair", 0.75),
    ObjectKind("kite", "diamond", 0.8),
    ObjectKind("tile", "hexagon", 1.1),
)

KIND_BY_NAME: dict[str, ObjectKind] = {kind.name: kind for kind in KINDS}
COLOUR_BY_NAME: dict[str, Colour] = {colour.name: colour for colour in PALETTE}


@dataclass(frozen=True)
class BackdropColour:
    name: str  # used in captions ("on a grey background")
    rgb: RGB


BACKDROPS: tuple[BackdropColour, ...] = (
    BackdropColour("grey", (150, 150, 150)),
    BackdropColour("beige", (188, 172, 138)),
    BackdropColour("sage", (148, 174, 146)),
    BackdropColour("steel blue", (138, 158, 186)),
    BackdropColour("teal grey", (112, 148, 150)),
    BackdropColour("khaki", (166, 160, 110)),
)

# Muted clutter for the COCO/GQA-style images; kept away from palette colours as well.
CLUTTER_RGB: tuple[RGB, ...] = ((120, 110, 95), (95, 110, 120), (165, 150, 165), (135, 135, 120))


def colour_distance(a: RGB, b: RGB) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5


def article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def pick_object(rng: random.Random, avoid: tuple[SceneObject, ...] = ()) -> SceneObject:
    """A random object whose colour and kind both differ from every object in `avoid`."""
    colours = [c for c in PALETTE if all(c != o.colour for o in avoid)]
    kinds = [k for k in KINDS if all(k != o.kind for o in avoid)]
    return SceneObject(rng.choice(kinds), rng.choice(colours))


def pick_pair(rng: random.Random) -> tuple[SceneObject, SceneObject]:
    first = pick_object(rng)
    return first, pick_object(rng, (first,))
