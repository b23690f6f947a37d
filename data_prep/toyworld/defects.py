"""--dirty: the broken inputs real LLaVA data contains, added to the training files and logged.

Every defect is an extra item (the clean items stay as they are) inserted at a seeded position among
the image items; text-only items stay at the end of DataMix. Benchmarks are never made dirty.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.toyworld.llava import LCS_FILE, LCS_IMAGE_ROOT, MIX_FILE, MIX_IMAGE_ROOT, LlavaBuilder
from data_prep.toyworld.output import JPEG_QUALITY
from data_prep.toyworld.seeding import item_rng

DEFECT_KINDS = (
    "missing_image",  # referenced file absent (about 355 OCR-VQA images in common downloads)
    "truncated_jpeg",  # file cut in half: header fine, decoding fails
    "zero_byte_jpeg",
    "png_as_jpg",  # decodable PNG content under a .jpg name (OCR-VQA)
    "gif_as_jpg",  # decodable GIF content under a .jpg name (OCR-VQA)
    "cmyk_jpeg",  # valid JPEG in CMYK mode
    "empty_conversations",  # "conversations": []
    "non_string_value",  # a gpt "value" that is an int or null
    "duplicate_item",  # the same item (id, image, conversations) twice
    "empty_caption",  # LCS caption that is empty or whitespace
    "non_ascii_text",  # a valid item with accents, a dash and a check mark
)

NON_ASCII_TEXT = "Un café à gauche de la boîte — ✓"


class DefectLog:
    def __init__(self) -> None:
        self.entries: dict[str, list[dict[str, Any]]] = {kind: [] for kind in DEFECT_KINDS}

    def add(self, kind: str, file: str, item: dict[str, Any], image_root: str, note: str = "") -> None:
        entry: dict[str, Any] = {"file": file, "id": item.get("id")}
        if "image" in item:
            entry["image"] = item["image"]
            entry["path"] = f"{image_root}/{item['image']}"
        if note:
            entry["note"] = note
        self.entries[kind].append(entry)


def inject_lcs_defects(builder: LlavaBuilder, items: list[dict[str, Any]], log: DefectLog) -> None:
    writer = builder.writer
    truncated = builder.lcs_item("lcs-defect", 0)
    _truncate(writer.path(f"{LCS_IMAGE_ROOT}/{truncated['image']}"))
    writer.mark_defect(f"{LCS_IMAGE_ROOT}/{truncated['image']}", "truncated_jpeg")
    log.add("truncated_jpeg", LCS_FILE, truncated, LCS_IMAGE_ROOT)

    empty = builder.lcs_item("lcs-defect", 1)
    empty["conversations"][1]["value"] = "  "
    log.add("empty_caption", LCS_FILE, empty, LCS_IMAGE_ROOT)

    accented = builder.lcs_item("lcs-defect", 2)
    accented["conversations"][1]["value"] = NON_ASCII_TEXT
    log.add("non_ascii_text", LCS_FILE, accented, LCS_IMAGE_ROOT)

    _insert(builder, "lcs-defect-positions", items, [truncated, empty, accented])


def inject_mix_defects(builder: LlavaBuilder, items: list[dict[str, Any]], log: DefectLog) -> None:
    """`items` are DataMix's image items only; text-only items are appended after this."""
    writer = builder.writer
    extras: list[dict[str, Any]] = []

    def add(kind: str, folder: str, index: int, note: str = "") -> dict[str, Any]:
        item = builder.mix_item("mix-defect", index, folder)
        log.add(kind, MIX_FILE, item, MIX_IMAGE_ROOT, note)
        extras.append(item)
        return item

    def rel(item: dict[str, Any]) -> str:
        return f"{MIX_IMAGE_ROOT}/{item['image']}"

    missing = add("missing_image", "ocr_vqa", 0)
    writer.forget_image(rel(missing))

    truncated = add("truncated_jpeg", "gqa", 1)
    _truncate(writer.path(rel(truncated)))
    writer.mark_defect(rel(truncated), "truncated_jpeg")

    zero = add("zero_byte_jpeg", "ocr_vqa", 2)
    writer.path(rel(zero)).write_bytes(b"")
    writer.mark_defect(rel(zero), "zero_byte_jpeg")

    for kind, fmt, index in (("png_as_jpg", "PNG", 3), ("gif_as_jpg", "GIF", 4)):
        item = add(kind, "ocr_vqa", index)
        _resave(writer.path(rel(item)), fmt, "RGB")
        writer.mark_defect(rel(item), kind)

    cmyk = add("cmyk_jpeg", "coco", 5)
    _resave(writer.path(rel(cmyk)), "JPEG", "CMYK")
    writer.mark_defect(rel(cmyk), "cmyk_jpeg")

    empty = add("empty_conversations", "coco", 6)
    empty["conversations"] = []

    for index, value in ((7, 2), (8, None)):
        item = add("non_string_value", "vg", index, note=f"gpt value {value!r}")
        item["conversations"][1]["value"] = value

    accented = add("non_ascii_text", "coco", 9)
    accented["conversations"][1]["value"] = NON_ASCII_TEXT

    original = items[item_rng(builder.seed, "mix-duplicate", 0).randrange(len(items))]
    duplicate = copy.deepcopy(original)
    log.add("duplicate_item", MIX_FILE, duplicate, MIX_IMAGE_ROOT)
    extras.append(duplicate)

    _insert(builder, "mix-defect-positions", items, extras)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _resave(path: Path, fmt: str, mode: str) -> None:
    with Image.open(path) as image:
        converted = image.convert(mode)
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    converted.save(path, format=fmt, **options)


def _insert(builder: LlavaBuilder, stream: str, items: list[dict[str, Any]], extras: list[dict[str, Any]]) -> None:
    rng = item_rng(builder.seed, stream, 0)
    for extra in extras:
        items.insert(rng.randint(0, len(items)), extra)
