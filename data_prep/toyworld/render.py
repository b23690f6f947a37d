"""Pixels: backdrops, object shapes, shadows, clutter and text signs, drawn with PIL only.

Each object is drawn into its own mask the size of its box and the shape touches all four box edges,
so the recorded box is the object's true pixel extent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from data_prep.toyworld.catalog import RGB
from data_prep.toyworld.geometry import Box

SIGN_RGB: RGB = (70, 80, 95)  # dark slate board, far from every palette colour
SIGN_TEXT_RGB: RGB = (240, 240, 230)


@dataclass(frozen=True)
class Backdrop:
    """A background: 'indoor' (wall + floor band below a horizon) or 'clevr' (grey floor gradient)."""

    style: str
    name: str  # colour name used in captions
    rgb: RGB
    horizon_y: int | None
    texture: str  # solid | gradient | noise
    gradient: float  # relative brightness change from top to bottom
    floor_shade: float  # floor brightness relative to the wall
    noise_seed: int


@dataclass(frozen=True)
class DrawSpec:
    """How to draw one object: its shape in its box, colour, and shape variants used by MMVP."""

    shape: str
    rgb: RGB
    box: Box
    variant: dict[str, object] = field(default_factory=dict)


def paint_backdrop(size: tuple[int, int], backdrop: Backdrop) -> np.ndarray:
    width, height = size
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    if backdrop.style == "clevr":
        # CLEVR look: one grey floor, lighter far away (top) and darker near the camera.
        shade = 1.08 - 0.22 * rows
        base = np.asarray(backdrop.rgb, np.float32)[None, None, :] * shade[:, :, None]
        pixels = np.broadcast_to(base, (height, width, 3)).copy()
    else:
        gradient = backdrop.gradient if backdrop.texture == "gradient" else 0.0
        shade = 1.0 + gradient * (rows - 0.5)
        if backdrop.horizon_y is not None:
            shade = np.where(np.arange(height)[:, None] >= backdrop.horizon_y, shade * backdrop.floor_shade, shade)
        base = np.asarray(backdrop.rgb, np.float32)[None, None, :] * shade[:, :, None]
        pixels = np.broadcast_to(base, (height, width, 3)).copy()
    if backdrop.texture == "noise":
        noise = np.random.default_rng(backdrop.noise_seed).normal(0.0, 5.0, (height, width, 1))
        pixels += noise.astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render(
    size: tuple[int, int],
    backdrop: Backdrop,
    objects: list[DrawSpec],
    clutter: Sequence[tuple[Box, RGB]] = (),
    signs: Sequence[tuple[Box, str]] = (),
) -> Image.Image:
    image = Image.fromarray(paint_backdrop(size, backdrop), "RGB")
    draw = ImageDraw.Draw(image)
    for box, rgb in clutter:
        draw.ellipse(_inclusive(box), fill=rgb)
    if backdrop.style == "clevr":
        _draw_shadows(image, [spec.box for spec in objects])
    for box, text in signs:
        _draw_sign(image, box, text)
    for spec in objects:
        _draw_object(image, spec, shaded=backdrop.style == "clevr")
    return image


def _inclusive(box: Box) -> tuple[int, int, int, int]:
    return (box[0], box[1], box[2] - 1, box[3] - 1)


def _draw_shadows(image: Image.Image, boxes: list[Box]) -> None:
    """Soft contact shadows, offset right as if lit from the upper left."""
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for x0, _y0, x1, y1 in boxes:
        w = x1 - x0
        h = max(3, round(w * 0.18))
        draw.ellipse((x0 + w * 0.05, y1 - h * 0.6, x1 + w * 0.2, y1 + h * 0.4), fill=110)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.5, image.size[0] / 80)))
    image.paste(Image.new("RGB", image.size, (0, 0, 0)), (0, 0), mask)


def _draw_object(image: Image.Image, spec: DrawSpec, shaded: bool) -> None:
    x0, y0, x1, y1 = spec.box
    w, h = x1 - x0, y1 - y0
    mask = Image.new("L", (w, h), 0)
    draw_shape(ImageDraw.Draw(mask), spec.shape, w, h, spec.variant)
    if shaded:
        # Mild top-to-bottom shading (within the colour tolerance the tests allow) for a 3-D look.
        shade = np.linspace(1.07, 0.9, h, dtype=np.float32)[:, None, None]
        layer = np.clip(np.asarray(spec.rgb, np.float32)[None, None, :] * shade, 0, 255)
        fill = Image.fromarray(np.broadcast_to(layer, (h, w, 3)).astype(np.uint8), "RGB")
    else:
        fill = Image.new("RGB", (w, h), spec.rgb)
    image.paste(fill, (x0, y0), mask)
    if spec.variant.get("state") == "empty":
        # An empty cup: the body is hollow, showing a dark inside.
        inner = Image.new("L", (w, h), 0)
        ImageDraw.Draw(inner).polygon(
            [(0.16 * w, 0.12 * h), (0.66 * w, 0.12 * h), (0.6 * w, 0.86 * h), (0.2 * w, 0.86 * h)], fill=255
        )
        image.paste(Image.new("RGB", (w, h), SIGN_RGB), (x0, y0), inner)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, w: int, h: int, variant: dict[str, object]) -> None:
    """Fill `shape` with 255 so that it touches all edges of the w x h box."""
    r, b = w - 1, h - 1
    if shape in ("circle", "flat_ellipse"):
        draw.ellipse((0, 0, r, b), fill=255)
    elif shape in ("square", "tall_rect"):
        draw.rectangle((0, 0, r, b), fill=255)
    elif shape == "rounded_rect":
        draw.rounded_rectangle((0, 0, r, b), radius=max(2, h // 3), fill=255)
    elif shape == "triangle":
        if variant.get("pointing") == "down":
            draw.polygon([(0, 0), (r, 0), (r / 2, b)], fill=255)
        else:
            draw.polygon([(0, b), (r, b), (r / 2, 0)], fill=255)
    elif shape == "star":
        draw.polygon(_star_points(int(variant.get("points", 5)), r, b), fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, r, b), outline=255, width=max(3, round(min(w, h) * 0.22)))
    elif shape == "cup":
        draw.polygon([(0, 0), (0.8 * r, 0), (0.7 * r, b), (0.1 * r, b)], fill=255)
        draw.ellipse((0.55 * r, 0.18 * b, r, 0.72 * b), outline=255, width=max(2, round(w * 0.09)))
    elif shape == "chair":
        draw.rectangle((0, 0, 0.2 * r, b), fill=255)  # back and back leg
        draw.rectangle((0, 0.5 * b, r, 0.64 * b), fill=255)  # seat
        draw.rectangle((0.8 * r, 0.5 * b, r, b), fill=255)  # front leg
    elif shape == "diamond":
        draw.polygon([(r / 2, 0), (r, b / 2), (r / 2, b), (0, b / 2)], fill=255)
    elif shape == "hexagon":
        draw.polygon([(0.25 * r, 0), (0.75 * r, 0), (r, b / 2), (0.75 * r, b), (0.25 * r, b), (0, b / 2)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=8)
def _unit_star(points: int) -> tuple[tuple[float, float], ...]:
    angles = [np.pi / 2 + k * np.pi / points for k in range(2 * points)]
    radii = [1.0 if k % 2 == 0 else 0.45 for k in range(2 * points)]
    xs = [rad * np.cos(a) for rad, a in zip(radii, angles, strict=True)]
    ys = [-rad * np.sin(a) for rad, a in zip(radii, angles, strict=True)]
    # Normalise to the unit square so the star touches every edge of its box.
    x_min, x_max, y_min, y_max = min(xs), max(xs), min(ys), max(ys)
    return tuple(((x - x_min) / (x_max - x_min), (y - y_min) / (y_max - y_min)) for x, y in zip(xs, ys, strict=True))


def _star_points(points: int, r: float, b: float) -> list[tuple[float, float]]:
    return [(x * r, y * b) for x, y in _unit_star(points)]


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_sign(image: Image.Image, box: Box, text: str) -> None:
    draw = ImageDraw.Draw(image)
    draw.rectangle(_inclusive(box), fill=SIGN_RGB)
    height = box[3] - box[1]
    font = _font(max(8, round(height * 0.7)))
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    draw.text(centre, text, fill=SIGN_TEXT_RGB, font=font, anchor="mm")
