"""LLaVA-1.5 conversation items -> image-caption samples, with a reason for every item that cannot be one.

Both LCS-558K and DataMix-665K are JSON lists of `{id, image?, conversations: [{from, value}, ...]}`.
A caption is a `gpt` answer with `<image>` removed and whitespace normalised; every answer is kept in
order, because the caption policy (one random answer per epoch, or all joined) is the trainer's choice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

DATASETS = ("lcs558k", "mix665k")
SKIP_REASONS = (
    "no_image",
    "missing_file",
    "bad_image_path",  # NUL byte, over-long name, symlink loop: no file can have that path
    "outside_image_root",  # `../x.jpg`, an absolute path or a symlink leading out of --image-root
    "unreadable_image",  # exists but cannot be read (permissions, I/O error, not a regular file)
    "too_many_pixels",  # over --max-pixels, decided from the header without decoding
    "too_large_file",  # over --max-image-bytes, decided from the file's size without reading it
    "undecodable_image",
    "empty_caption",
    "malformed_item",
    "duplicate_key",
)
# Appendix B.2 of the paper counts these five phrases in the training data.
KEY_PHRASES = ("on the left", "on the right", "to the left", "at the left", "at the right")
# B.2 names "to the left" but not the equally common "to the right"; counted as well (the *_plus_to_the_right
# fields), so that a user with the real data can see which definition reproduces 12957 / 12658 / 13473.
KEY_PHRASES_PLUS = (*KEY_PHRASES, "to the right")

_IMAGE_TOKEN = re.compile(r"<image>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# Shards are ustar tars (webdataset's default): a member name of `key.json` must stay under 100 bytes.
_MAX_KEY_BASE = 64


@dataclass(frozen=True)
class Sample:
    """One convertible item: what a shard worker needs, nothing of the raw JSON."""

    key: str  # unique, dot-free, file-name safe: webdataset cuts keys at the first "."
    dataset: str
    index: int  # position in its input file
    id: str
    image: str  # relative to the dataset's image root
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Skip:
    dataset: str
    index: int
    id: str | None
    reason: str
    detail: str

    def as_record(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "index": self.index,
            "id": self.id,
            "reason": self.reason,
            "detail": self.detail,
        }


class MalformedItem(ValueError):
    pass


def clean_caption(text: str) -> str:
    return _SPACE.sub(" ", _IMAGE_TOKEN.sub(" ", text)).strip()


def has_key_phrase(text: str, phrases: tuple[str, ...] = KEY_PHRASES) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in phrases)


def parse_item(item: Any) -> tuple[str, str | None, list[str]]:
    """Checks an item's structure; returns (id, image or None, raw gpt answers). Raises MalformedItem."""
    if not isinstance(item, dict):
        raise MalformedItem(f"item is {type(item).__name__}, expected an object")
    item_id = item.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise MalformedItem(f"id is {_kind(item_id)}, expected a string")
    image = item.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise MalformedItem(f"image is {_kind(image)}, expected a relative path")
    _check_text(str(item_id), "id")
    if image is not None:
        _check_text(image, "image")
    turns = item.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise MalformedItem(f"conversations is {_kind(turns)}, expected a non-empty list")
    answers = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise MalformedItem(f"conversations[{i}] is {_kind(turn)}, expected an object")
        speaker, value = turn.get("from"), turn.get("value")
        if not isinstance(speaker, str):
            raise MalformedItem(f"conversations[{i}].from is {_kind(speaker)}, expected a string")
        if not isinstance(value, str):
            raise MalformedItem(f"conversations[{i}].value is {_kind(value)}, expected a string")
        if speaker == "gpt":
            _check_text(value, f"conversations[{i}].value")
            answers.append(value)
    return str(item_id), image, answers


def _check_text(value: str, field: str) -> None:
    # JSON may hold lone surrogates ("\ud800"): valid in a Python str, but not encodable as the UTF-8 that
    # the shard's json member (and a file system path) needs; caught here rather than aborting a shard write.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MalformedItem(f"{field} is not valid Unicode: {err.reason} at position {err.start}") from None


def _kind(value: Any) -> str:
    return "missing" if value is None else f"{type(value).__name__} {value!r}"[:80]


class SampleBuilder:
    """Turns items into Samples in input order, giving each a unique key and spotting exact duplicates."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._seen: dict[tuple, int] = {}

    def add(self, dataset: str, index: int, item: Any) -> Sample | Skip:
        try:
            item_id, image, answers = parse_item(item)
        except MalformedItem as err:
            raw_id = item.get("id") if isinstance(item, dict) else None
            return Skip(dataset, index, None if raw_id is None else str(raw_id), "malformed_item", str(err))
        if image is None:
            return Skip(dataset, index, item_id, "no_image", "text-only item: no image key")
        captions = tuple(c for c in (clean_caption(a) for a in answers) if c)
        if not captions:
            detail = "no gpt answer" if not answers else "every gpt answer is empty"
            return Skip(dataset, index, item_id, "empty_caption", detail)
        # Ids repeat in DataMix-665K with different conversations (one image, several tasks): those are
        # distinct samples. Only the very same item seen twice is a duplicate.
        identity = (dataset, item_id, image, captions)
        if identity in self._seen:
            return Skip(
                dataset, index, item_id, "duplicate_key", f"same id, image and answers as item {self._seen[identity]}"
            )
        self._seen[identity] = index
        base = f"{dataset}_{_UNSAFE_KEY_CHARS.sub('-', item_id).strip('-') or 'noid'}"
        if len(base) > _MAX_KEY_BASE:  # a hostile 300-character id: keep a readable prefix and a digest
            digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=6).hexdigest()
            base = f"{base[: _MAX_KEY_BASE - 13]}-{digest}"
        key, n = base, 1
        while key in self._keys:
            key, n = f"{base}_{n}", n + 1
        self._keys.add(key)
        return Sample(key, dataset, index, item_id, image, captions)


@dataclass
class KeyPhraseStats:
    """Appendix B.2's statistics, counted on the raw items (case-insensitive substring match)."""

    instances: int = 0  # items with a key phrase in at least one gpt answer
    instances_with_image: int = 0  # ... of which have an image
    captions: int = 0  # gpt answers containing a key phrase
    instances_any_turn: int = 0  # items with a key phrase anywhere, human turns included
    # The same three counts with "to the right" added to the phrases (KEY_PHRASES_PLUS).
    instances_plus_to_the_right: int = 0
    instances_with_image_plus_to_the_right: int = 0
    captions_plus_to_the_right: int = 0

    def add(self, item: Any) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
            return
        turns = [t for t in item["conversations"] if isinstance(t, dict) and isinstance(t.get("value"), str)]
        answers = [t["value"] for t in turns if t.get("from") == "gpt"]
        answer_hits = sum(has_key_phrase(a) for a in answers)
        self.captions += answer_hits
        if answer_hits:
            self.instances += 1
            self.instances_with_image += "image" in item
        self.instances_any_turn += any(has_key_phrase(t["value"]) for t in turns)
        plus_hits = sum(has_key_phrase(a, KEY_PHRASES_PLUS) for a in answers)
        self.captions_plus_to_the_right += plus_hits
        if plus_hits:
            self.instances_plus_to_the_right += 1
            self.instances_with_image_plus_to_the_right += "image" in item
