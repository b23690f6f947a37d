"""The manifest: what was written, with counts recomputed from the written items themselves."""

from __future__ import annotations

import re
from typing import Any

from data_prep.toyworld.captions import KEY_PHRASES
from data_prep.toyworld.output import WorldWriter

GENERATOR = "clipablate.toyworld"
VERSION = "1.0"
# "left" as the verb (or "remaining") in the generated answers; spatial uses never match.
LEFT_AS_VERB = re.compile(r"\b(?:someone|somebody|owner|cinderella|apples|no paint|nothing else is) left\b", re.I)
IMAGE_DIRS = (
    "llava/images",
    "llava/coco/train2017",
    "llava/gqa/images",
    "llava/ocr_vqa/images",
    "llava/textvqa/train_images",
    "llava/vg/VG_100K",
    "llava/vg/VG_100K_2",
    "bench/data/controlled_images",
    "bench/data/controlled_clevr",
    "bench/data/val2017",
    "bench/data/vg_images",
    "bench/MMVP_VLM",
    "bench/MMVP/MMVP Images",
)


def gpt_answers(item: dict[str, Any]) -> list[str]:
    return [
        turn["value"]
        for turn in item.get("conversations") or []
        if turn.get("from") == "gpt" and isinstance(turn.get("value"), str)
    ]


def key_phrase_stats(items: list[dict[str, Any]]) -> dict[str, int]:
    """The paper's Appendix B.2 counts: instances with a key phrase in an answer, of them with an image,
    and answers containing one (lowercase substring match)."""
    instances = with_image = answers = 0
    for item in items:
        hits = sum(any(phrase in answer.lower() for phrase in KEY_PHRASES) for answer in gpt_answers(item))
        if hits:
            instances += 1
            with_image += "image" in item
            answers += hits
    # "captions" is the paper's name for the same answer count (13473 on the real DataMix-665K).
    return {"instances": instances, "instances_with_image": with_image, "answers": answers, "captions": answers}


def count_left_as_verb(items: list[dict[str, Any]]) -> int:
    return sum(bool(LEFT_AS_VERB.search(answer)) for item in items for answer in gpt_answers(item))


def build_manifest(
    writer: WorldWriter,
    seed: int,
    scale: str,
    dirty: bool,
    llava_items: dict[str, tuple[str, list[dict[str, Any]]]],  # dataset name -> (file, items)
    known_label_errors: list[dict[str, Any]],
    defects: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    image_dirs = dict.fromkeys(IMAGE_DIRS, 0)
    for path in writer.scene_records:
        for folder in IMAGE_DIRS:
            if path.startswith(folder + "/"):
                image_dirs[folder] += 1
    # Defective files that exist but were broken are still files; a missing image has no scene record.
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "scale": scale,
        "dirty": dirty,
        "files": writer.files,
        "image_dirs": image_dirs,
        "images_total": sum(image_dirs.values()),
        "relations": writer.relations,
        "key_phrases": {
            "phrases": list(KEY_PHRASES),
            **{name: {"file": rel, **key_phrase_stats(items)} for name, (rel, items) in llava_items.items()},
        },
        "left_as_verb_answers": sum(count_left_as_verb(items) for _rel, items in llava_items.values()),
        "known_label_errors": known_label_errors,
        "defects": {kind: entries for kind, entries in defects.items()},
        "defect_counts": {kind: len(entries) for kind, entries in defects.items()},
    }
