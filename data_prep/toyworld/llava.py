"""LLaVA-1.5 training data: LCS-558K captions and DataMix-665K conversations, with their images."""

from __future__ import annotations

import random
from typing import Any

from data_prep.toyworld.captions import lcs_caption, lcs_instruction
from data_prep.toyworld.conversations import (
    plain_conversation,
    scene_dialogue,
    sharegpt_id,
    text_chat,
    to_conversation,
)
from data_prep.toyworld.output import WorldWriter
from data_prep.toyworld.scales import Scale
from data_prep.toyworld.scenes import Scene, compose_pair, random_canvas
from data_prep.toyworld.seeding import distinct_ids, item_rng

LCS_FILE = "llava/blip_laion_cc_sbu_558k.json"
LCS_IMAGE_ROOT = "llava/images"
MIX_FILE = "llava/llava_v1_5_mix665k.json"
MIX_IMAGE_ROOT = "llava"

# Relation mix of the training scenes: left/right dominate so that it is learnable.
TRAIN_RELATIONS = ("left_of", "right_of", "on", "under", "in_front_of", "behind")
TRAIN_RELATION_WEIGHTS = (3, 3, 1, 1, 1, 1)
# Image folders of DataMix-665K (roughly the real shares, OCR/TextVQA raised so they occur at small scale).
MIX_FOLDERS = ("coco", "vg", "gqa", "ocr_vqa", "textvqa")
MIX_FOLDER_WEIGHTS = (0.55, 0.14, 0.13, 0.12, 0.06)
SIGN_WORDS = ("OPEN", "SALE", "EXIT", "CAFE", "BOOKS", "STOP", "PARK", "HOTEL", "MUSIC", "TAXI", "BAKERY")
SPARE_IDS = 32  # ids reserved beyond the clean items for dirty-mode extras


def training_relation(rng: random.Random) -> str:
    return rng.choices(TRAIN_RELATIONS, TRAIN_RELATION_WEIGHTS)[0]


class LlavaBuilder:
    """Makes LCS and DataMix items one at a time, each from its own random stream, writing its image."""

    def __init__(self, writer: WorldWriter, seed: int, scale: Scale) -> None:
        self.writer = writer
        self.seed = seed
        self.scale = scale
        self.lcs_ids = distinct_ids(seed, "lcs", scale.lcs_items + SPARE_IDS, 0, 6_600_000)
        self.lcs_next = 0
        pool = scale.mix_image_items + SPARE_IDS
        self.mix_ids: dict[str, list[str]] = {
            "coco": [f"{n:012d}" for n in distinct_ids(seed, "coco-train", pool, 9, 581_929)],
            "vg": [str(n) for n in distinct_ids(seed, "vg", pool, 1, 2_417_997)],
            "gqa": [self._gqa_id(n) for n in distinct_ids(seed, "gqa", pool, 1, 2_417_997)],
            "ocr_vqa": [self._isbn(n) for n in distinct_ids(seed, "ocr_vqa", pool, 10**8, 10**9)],
            "textvqa": [f"{n:016x}" for n in distinct_ids(seed, "textvqa", pool, 0, 2**62)],
        }
        self.mix_next = dict.fromkeys(MIX_FOLDERS, 0)
        self.scenes: dict[str, Scene] = {}  # mix image path -> scene, for extra conversations

    @staticmethod
    def _gqa_id(n: int) -> str:
        # A few real GQA image names carry an "n" prefix (n161313.jpg).
        return f"n{n}" if n % 10 == 0 else str(n)

    @staticmethod
    def _isbn(n: int) -> str:
        check = sum((10 - i) * int(d) for i, d in enumerate(f"{n:09d}")) % 11
        digit = (11 - check) % 11
        return f"{n:09d}" + ("X" if digit == 10 else str(digit))

    def lcs_item(self, stream: str, index: int) -> dict[str, Any]:
        rng = item_rng(self.seed, stream, index)
        item_id = f"{self.lcs_ids[self.lcs_next]:09d}"
        self.lcs_next += 1
        image = f"{item_id[:5]}/{item_id}.jpg"
        scene = compose_pair(
            rng, training_relation(rng), random_canvas(rng, self.scale.sides), clutter=rng.choice((0, 0, 1, 2))
        )
        self.writer.save_image(f"{LCS_IMAGE_ROOT}/{image}", scene)
        caption = lcs_caption(rng, scene, scene.backdrop.name)
        return {
            "id": item_id,
            "image": image,
            "conversations": [{"from": "human", "value": lcs_instruction(rng)}, {"from": "gpt", "value": caption}],
        }

    def mix_item(self, stream: str, index: int, folder: str | None = None) -> dict[str, Any]:
        rng = item_rng(self.seed, stream, index)
        folder = folder or rng.choices(MIX_FOLDERS, MIX_FOLDER_WEIGHTS)[0]
        item_id = self.mix_ids[folder][self.mix_next[folder]]
        self.mix_next[folder] += 1
        image = self._mix_image_path(rng, folder, item_id)
        sign = rng.choice(SIGN_WORDS) if folder in ("ocr_vqa", "textvqa") else None
        size = random_canvas(rng, self.scale.sides)
        clutter = rng.choice((0, 1, 2, 3)) if folder == "coco" else 0
        scene = compose_pair(rng, training_relation(rng), size, clutter=clutter, sign_text=sign)
        self.writer.save_image(f"{MIX_IMAGE_ROOT}/{image}", scene)
        self.scenes[image] = scene
        return self._mix_record(rng, item_id, image, scene, folder)

    def extra_conversation(self, stream: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
        """Another item on an already written image, same id (as with COCO images in the real file)."""
        rng = item_rng(self.seed, stream, index)
        scene = self.scenes[item["image"]]
        folder = item["image"].split("/")[0]
        for _ in range(10):
            extra = self._mix_record(rng, item["id"], item["image"], scene, folder)
            # Different answers, not just different questions: same-image items with the same answers
            # would be one sample twice, which converters rightly drop as duplicates.
            if _answers(extra) != _answers(item):
                return extra
        raise RuntimeError("could not vary the conversation")

    @staticmethod
    def _mix_image_path(rng: random.Random, folder: str, item_id: str) -> str:
        if folder == "coco":
            return f"coco/train2017/{item_id}.jpg"
        if folder == "gqa":
            return f"gqa/images/{item_id}.jpg"
        if folder == "ocr_vqa":
            return f"ocr_vqa/images/{item_id}.jpg"
        if folder == "textvqa":
            return f"textvqa/train_images/{item_id}.jpg"
        return f"vg/{rng.choice(('VG_100K', 'VG_100K_2'))}/{item_id}.jpg"

    @staticmethod
    def _mix_record(rng: random.Random, item_id: str, image: str, scene: Scene, folder: str) -> dict[str, Any]:
        rounds = scene_dialogue(rng, scene, folder)
        return {"id": item_id, "image": image, "conversations": to_conversation(rng, rounds)}

    def text_item(self, index: int) -> dict[str, Any]:
        rng = item_rng(self.seed, "mix-text", index)
        return {"id": sharegpt_id(rng), "conversations": plain_conversation(text_chat(rng))}


def build_lcs(builder: LlavaBuilder) -> list[dict[str, Any]]:
    return [builder.lcs_item("lcs", index) for index in range(builder.scale.lcs_items)]


def mix_repeats(image_items: int) -> int:
    """How many DataMix image items reuse an already used COCO image."""
    return max(2, image_items // 12)


def build_mix_image_items(builder: LlavaBuilder) -> list[dict[str, Any]]:
    """Image items, about 8% of COCO images asked about twice, shuffled as in the real file."""
    total = builder.scale.mix_image_items
    repeats = mix_repeats(total)
    items = [builder.mix_item("mix", index) for index in range(total - repeats)]
    coco = [item for item in items if item["image"].startswith("coco/")]
    chooser = item_rng(builder.seed, "mix-repeat-choice", 0)
    originals = chooser.sample(coco, min(repeats, len(coco)))
    items += [builder.extra_conversation("mix-repeat", k, item) for k, item in enumerate(originals)]
    item_rng(builder.seed, "mix-order", 0).shuffle(items)
    return items


def build_mix_text_items(builder: LlavaBuilder) -> list[dict[str, Any]]:
    return [builder.text_item(index) for index in range(builder.scale.mix_text_items)]


def write_llava_file(writer: WorldWriter, rel: str, image_root: str, items: list[dict[str, Any]]) -> None:
    with_image = [item for item in items if "image" in item]
    images = sorted({item["image"] for item in with_image})
    relations: dict[str, int] = {}
    for item in with_image:
        relation = writer.scene_relation(f"{image_root}/{item['image']}")
        if relation is not None:
            relations[relation] = relations.get(relation, 0) + 1
    stats = {
        "format": "llava-lcs-558k" if rel == LCS_FILE else "llava-mix-665k",
        "image_root": image_root,
        "items": len(items),
        "image_items": len(with_image),
        "text_only_items": len(items) - len(with_image),
        "images": len(images),
        "images_present": sum(writer.path(f"{image_root}/{image}").exists() for image in images),
    }
    writer.write_json(rel, items, stats, relations)


def _answers(item: dict[str, Any]) -> list[object]:
    return [turn["value"] for turn in item["conversations"] if turn["from"] == "gpt"]
