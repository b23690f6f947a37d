"""What'sUp Subsets A (on/under/left/right, photo-like) and B (left/right/front/behind, CLEVR-like).

The four images of one object pair are minimal changes: same objects, colours, sizes, canvas and
backdrop; only the positions differ. Subset A carries the real benchmark's known label error: the
images of pillow_left_of_chair and pillow_right_of_chair are swapped.
"""

from __future__ import annotations

import random
from typing import Any

from data_prep.toyworld.captions import whatsup_caption
from data_prep.toyworld.catalog import KIND_BY_NAME, PALETTE, SceneObject, pick_pair
from data_prep.toyworld.geometry import (
    FRONT_SCALE,
    MARGIN,
    OPPOSITE,
    PairLayout,
    inside,
    object_dims,
    relation_holds,
    stand,
)
from data_prep.toyworld.output import WorldWriter
from data_prep.toyworld.scales import Scale
from data_prep.toyworld.scenes import pair_scene, random_backdrop
from data_prep.toyworld.seeding import item_rng

A_FILE = "bench/data/controlled_images_dataset.json"
B_FILE = "bench/data/controlled_clevr_dataset.json"
A_RELATIONS = ("on", "under", "left_of", "right_of")
B_RELATIONS = ("left_of", "right_of", "in_front_of", "behind")
FILE_RELATION = {"in_front_of": "in-front_of"}  # as spelled in Subset B file names
LABEL_ERROR_PAIR = ("pillow", "chair")


def _pair_layouts(
    rng: random.Random, relations: tuple[str, ...], size: tuple[int, int], objects: tuple[SceneObject, SceneObject]
) -> dict[str, PairLayout]:
    width, height = size
    shrink = 1.0
    for _ in range(60):
        dims_a = object_dims(objects[0].kind, rng.uniform(0.22, 0.3) * min(size) * shrink)
        dims_b = object_dims(objects[1].kind, rng.uniform(0.22, 0.3) * min(size) * shrink)
        shrink *= 0.93
        ground = round(height * rng.uniform(0.8, 0.9) if "on" in relations else height * rng.uniform(0.66, 0.74))
        # Left/right: two fixed slots; the objects trade places.
        span = (dims_a[0] + dims_b[0]) / 2 + max(6, width * rng.uniform(0.08, 0.16))
        half_widest = max(dims_a[0], dims_b[0]) / 2
        lo, hi = MARGIN + half_widest, width - MARGIN - half_widest
        if hi - lo < span:
            continue
        c_left = rng.uniform(lo, hi - span)
        c_right = c_left + span
        layouts = {
            "left_of": PairLayout(stand(c_left, ground, dims_a), stand(c_right, ground, dims_b), False, ground),
            "right_of": PairLayout(stand(c_right, ground, dims_a), stand(c_left, ground, dims_b), False, ground),
        }
        centre = rng.uniform(lo, hi)
        offset = rng.uniform(-0.15, 0.15)
        if "on" in relations:
            support_b = stand(centre, ground, dims_b)
            support_a = stand(centre, ground, dims_a)
            layouts["on"] = PairLayout(
                stand(centre + offset * dims_b[0], support_b[1], dims_a), support_b, True, ground
            )
            layouts["under"] = PairLayout(
                support_a, stand(centre + offset * dims_a[0], support_a[1], dims_b), False, ground
            )
        if "in_front_of" in relations:
            # Perspective: the near object stands lower and is drawn larger, overlapping the far one.
            near = rng.uniform(*FRONT_SCALE)
            near_a = (round(dims_a[0] * near), round(dims_a[1] * near))
            near_b = (round(dims_b[0] * near), round(dims_b[1] * near))
            far_ground = round(height * rng.uniform(0.56, 0.64))
            # The near object must still reach up past the far one's base, or they would not overlap.
            depth = max(3, round(min(near_a[1], near_b[1]) * rng.uniform(0.45, 0.7)))
            near_ground = min(height - 1, far_ground + depth)
            shift = rng.choice((-1, 1)) * rng.uniform(0.35, 0.6) * (dims_a[0] + dims_b[0]) / 2
            layouts["in_front_of"] = PairLayout(
                stand(centre + shift, near_ground, near_a), stand(centre, far_ground, dims_b), True, far_ground
            )
            layouts["behind"] = PairLayout(
                stand(centre, far_ground, dims_a), stand(centre + shift, near_ground, near_b), False, far_ground
            )
        if all(
            inside(layout.subject, size)
            and inside(layout.reference, size)
            and relation_holds(rel, layout.subject, layout.reference, size, layout.subject_drawn_last)
            for rel, layout in layouts.items()
            if rel in relations
        ):
            return {rel: layouts[rel] for rel in relations}
    raise RuntimeError(f"cannot lay out an object pair in {size}")


def _object_pairs(seed: int, stream: str, count: int, with_label_error: bool) -> list[tuple[SceneObject, SceneObject]]:
    """Distinct (subject, reference) pairs; Subset A gets the bare 'pillow'/'chair' pair at a seeded slot."""
    pairs: list[tuple[SceneObject, SceneObject]] = []
    seen: set[tuple[str, str]] = set()
    attempt = 0
    target = count - 1 if with_label_error else count
    while len(pairs) < target:
        pair = pick_pair(item_rng(seed, stream, attempt))
        attempt += 1
        if (pair[0].slug, pair[1].slug) not in seen:
            seen.add((pair[0].slug, pair[1].slug))
            pairs.append(pair)
    if with_label_error:
        rng = item_rng(seed, stream + "-label-error", 0)
        pillow_colour, chair_colour = rng.sample(PALETTE, 2)
        special = (
            SceneObject(KIND_BY_NAME["pillow"], pillow_colour, label=LABEL_ERROR_PAIR[0]),
            SceneObject(KIND_BY_NAME["chair"], chair_colour, label=LABEL_ERROR_PAIR[1]),
        )
        pairs.insert(rng.randint(0, len(pairs)), special)
    return pairs


def write_subset(writer: WorldWriter, seed: int, scale: Scale, subset: str) -> list[dict[str, Any]]:
    """Writes Subset A or B; returns the known label errors it contains."""
    is_a = subset == "A"
    rel_file, relations = (A_FILE, A_RELATIONS) if is_a else (B_FILE, B_RELATIONS)
    folder = "controlled_images" if is_a else "controlled_clevr"
    style = "indoor" if is_a else "clevr"
    stream = f"whatsup-{subset.lower()}"
    pairs = _object_pairs(seed, stream + "-pairs", scale.whatsup_a_pairs if is_a else scale.whatsup_b_pairs, is_a)
    lo, hi = scale.sides
    rows: list[dict[str, Any]] = []
    label_errors: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for index, objects in enumerate(pairs):
        rng = item_rng(seed, stream, index)
        width = rng.randint((lo + hi) // 2, hi)
        size = (width, max(lo, round(width * rng.uniform(0.72, 0.8))))
        layouts = _pair_layouts(rng, relations, size, objects)
        backdrop = random_backdrop(rng, size, style, min(layout.ground_y for layout in layouts.values()))
        swapped = is_a and (objects[0].name, objects[1].name) == LABEL_ERROR_PAIR
        for rel in relations:
            # The real benchmark's swapped pair: the image shows the opposite of its name and caption.
            shown = OPPOSITE[rel] if swapped and rel in ("left_of", "right_of") else rel
            scene = pair_scene(rng, shown, size, objects, layouts[shown], style, backdrop=backdrop)
            scene.labelled_relation = rel
            name = f"{objects[0].slug}_{FILE_RELATION.get(rel, rel)}_{objects[1].slug}.jpeg"
            writer.save_image(f"bench/data/{folder}/{name}", scene)
            distractors = [
                whatsup_caption(objects[0].name, other, objects[1].name) for other in relations if other != rel
            ]
            rng.shuffle(distractors)
            rows.append(
                {
                    "image_path": f"data/{folder}/{name}",
                    "caption_options": [whatsup_caption(objects[0].name, rel, objects[1].name), *distractors],
                }
            )
            counts[rel] = counts.get(rel, 0) + 1
            if shown != rel:
                label_errors.append(
                    {"file": rel_file, "image_path": f"data/{folder}/{name}", "labelled": rel, "shown": shown}
                )
    stats = {
        "format": f"whatsup-subset-{subset.lower()}",
        "rows": len(rows),
        "object_pairs": len(pairs),
        "images": len(rows),
    }
    writer.write_json(rel_file, rows, stats, counts)
    return label_errors
