"""How much of everything one generation writes: small (tests, demo) and medium (about 10x)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    lcs_items: int
    mix_image_items: int
    mix_text_items: int
    whatsup_a_pairs: int
    whatsup_b_pairs: int
    coco_one: int
    coco_two: int
    gqa_one: int
    gqa_two: int
    mmvp_pairs_per_type: int
    sides: tuple[int, int]  # image side length range in pixels


SCALES = {
    "small": Scale(400, 300, 20, 12, 12, 48, 32, 32, 24, 2, (96, 192)),
    "medium": Scale(4000, 3000, 200, 103, 102, 400, 240, 300, 200, 15, (224, 336)),
}
