"""COCO-spatial and GQA-spatial: rows [image_id, correct caption, incorrect caption] over cluttered photos."""

from __future__ import annotations

from typing import Any

from data_prep.toyworld.captions import spatial_qa_one_caption, spatial_qa_two_caption
from data_prep.toyworld.geometry import OPPOSITE
from data_prep.toyworld.output import WorldWriter
from data_prep.toyworld.scales import Scale
from data_prep.toyworld.scenes import compose_pair, compose_single, random_canvas
from data_prep.toyworld.seeding import distinct_ids, item_rng

COCO_ONE_RELATIONS = ("left", "right", "top", "bottom")
COCO_TWO_RELATIONS = ("left_of", "right_of", "above", "below")
GQA_ONE_RELATIONS = ("left", "right")
GQA_TWO_RELATIONS = ("left_of", "right_of", "in_front_of", "behind")


def _write_benchmark(
    writer: WorldWriter,
    seed: int,
    scale: Scale,
    name: str,
    image_dir: str,
    image_name: str,
    ids: list[int],
    counts: tuple[int, int],
    relations: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    one_ids, two_ids = ids[: counts[0]], ids[counts[0] :]
    for part, part_ids, part_relations in (("one", one_ids, relations[0]), ("two", two_ids, relations[1])):
        rows: list[list[Any]] = []
        tally: dict[str, int] = {}
        for index, image_id in enumerate(part_ids):
            rng = item_rng(seed, f"{name}-{part}", index)
            relation = part_relations[index % len(part_relations)]
            size = random_canvas(rng, scale.sides)
            clutter = rng.randint(2, 5)
            if part == "one":
                scene = compose_single(rng, relation, size, clutter=clutter)
                thing = scene.subject_object().name
                correct = spatial_qa_one_caption(thing, relation)
                wrong = spatial_qa_one_caption(thing, OPPOSITE[relation])
            else:
                scene = compose_pair(rng, relation, size, clutter=clutter)
                s, r = scene.subject_object().name, scene.reference_object().name
                # The GQA file sometimes writes "to the front of" (either caption of a front/behind row).
                irregular = name == "vg" and rng.random() < 0.3
                correct = spatial_qa_two_caption(s, relation, r, irregular)
                wrong = spatial_qa_two_caption(s, OPPOSITE[relation], r, irregular)
            writer.save_image(f"{image_dir}/{image_name.format(image_id=image_id)}", scene)
            rows.append([image_id, correct, wrong])
            tally[relation] = tally.get(relation, 0) + 1
        stats = {"format": "whatsup-spatial-qa", "rows": len(rows), "images": len(rows)}
        writer.write_json(f"bench/data/{name}_qa_{part}_obj.json", rows, stats, tally)


def write_coco_spatial(writer: WorldWriter, seed: int, scale: Scale) -> None:
    ids = distinct_ids(seed, "coco-val", scale.coco_one + scale.coco_two, 139, 581_782)
    counts = (scale.coco_one, scale.coco_two)
    relations = (COCO_ONE_RELATIONS, COCO_TWO_RELATIONS)
    _write_benchmark(writer, seed, scale, "coco", "bench/data/val2017", "{image_id:012d}.jpg", ids, counts, relations)


def write_gqa_spatial(writer: WorldWriter, seed: int, scale: Scale) -> None:
    ids = distinct_ids(seed, "vg-val", scale.gqa_one + scale.gqa_two, 1, 2_417_997)
    counts = (scale.gqa_one, scale.gqa_two)
    relations = (GQA_ONE_RELATIONS, GQA_TWO_RELATIONS)
    _write_benchmark(writer, seed, scale, "vg", "bench/data/vg_images", "{image_id}.jpg", ids, counts, relations)
