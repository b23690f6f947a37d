"""Fake encoders whose right answers are known, for tests and for checking the metric code by hand.

- `TableScorer`: every cosine similarity set exactly (ties included) from a table.
- `OracleScorer`: reads the generated world's scenes.jsonl, so it sees what each image really shows
  (including the swapped pillow/chair images of What'sUp A) and matches captions by their relation words.
- `FakeBundle`: a tiny deterministic torch model with the `models.ModelBundle` surface, to exercise the real
  `ModelScorer` (image loading, tokenizing, chunking, distribution) without `models`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image


def last_parts(path: str, count: int = 2) -> str:
    """`.../controlled_images/x.jpeg` -> `controlled_images/x.jpeg`: unique within one generated world."""
    return "/".join(PurePath(path).parts[-count:])


def _rows(vectors: Sequence[Sequence[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor([list(v) for v in vectors], dtype=torch.float64), dim=-1).float()


class VectorScorer:
    """Features from two functions: image path -> vector, text -> vector (normalised here)."""

    def __init__(self, image_vector: Callable[[str], Sequence[float]], text_vector: Callable[[str], Sequence[float]]):
        self.image_vector = image_vector
        self.text_vector = text_vector
        self.image_calls: list[list[str]] = []
        self.text_calls: list[list[str]] = []

    def image_features(self, paths: list[str]) -> torch.Tensor:
        self.image_calls.append(list(paths))
        return _rows([self.image_vector(p) for p in paths])

    def text_features(self, texts: list[str]) -> torch.Tensor:
        self.text_calls.append(list(texts))
        return _rows([self.text_vector(t) for t in texts])


class TableScorer(VectorScorer):
    """cos(image, text) = cosines[key(image path)][text] exactly; 0 for texts the image's row leaves out.

    Texts get orthonormal axes; an image is its row of cosines on those axes plus the remainder of a unit norm
    on a private axis, so the cosine of two images is the dot product of their rows. Equal table entries
    give bitwise equal scores (ties). Each row's squares must sum to at most 1.
    """

    def __init__(self, cosines: Mapping[str, Mapping[str, float]], key: Callable[[str], str] = last_parts):
        self.cosines = cosines
        self.key = key
        texts = list(dict.fromkeys(t for row in cosines.values() for t in row))
        self._text_axis = {t: i for i, t in enumerate(texts)}
        self._image_axis = {k: len(texts) + i for i, k in enumerate(cosines)}
        self._unknown_axis = len(texts) + len(cosines)  # texts no row mentions: orthogonal to every image
        self.dim = self._unknown_axis + 1
        super().__init__(self._image, self._text)

    def _image(self, path: str) -> list[float]:
        name = self.key(path)
        if name not in self.cosines:
            raise KeyError(f"TableScorer has no row for image {name!r} ({path})")
        vector = [0.0] * self.dim
        for text, cosine in self.cosines[name].items():
            vector[self._text_axis[text]] = cosine
        rest = 1.0 - sum(c * c for c in self.cosines[name].values())
        if rest < -1e-12:
            raise ValueError(f"TableScorer row {name!r}: squared cosines sum above 1")
        vector[self._image_axis[name]] = math.sqrt(max(rest, 0.0))
        return vector

    def _text(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        vector[self._text_axis.get(text, self._unknown_axis)] = 1.0
        return vector

    def image_vector_of(self, name: str) -> list[float]:
        """The unnormalised vector of a table row (for computing expected image-image cosines)."""
        return self._image(name)


# Relation concepts an oracle can see in a scene and read in a caption. Caption words are checked in this
# order, so "on the left" reads as left and "on the bottom" as bottom.
CAPTION_WORDS = ("left", "right", "front", "behind", "above", "below", "top", "bottom", "under", "on")
SCENE_RELATIONS = {
    "left_of": "left",
    "right_of": "right",
    "in_front_of": "front",
    "in-front_of": "front",
    "left": "left",
    "right": "right",
    "behind": "behind",
    "above": "above",
    "below": "below",
    "top": "top",
    "bottom": "bottom",
    "under": "under",
    "on": "on",
}


class OracleScorer(VectorScorer):
    """Knows each generated image's true content from `<world>/scenes.jsonl`: a perfect model.

    Spatial images map to the relation they show, MMVP images to the statement true of them; captions map
    to the relation their words name, MMVP texts ("a photo of " + statement) to their statement.
    """

    def __init__(self, world: Path | str):
        self.truth: dict[str, str] = {}
        statements: list[str] = []
        for line in (Path(world) / "scenes.jsonl").read_text().splitlines():
            scene = json.loads(line)
            if "/MMVP_VLM/" in "/" + scene["path"] or "/MMVP/" in "/" + scene["path"]:
                self.truth[last_parts(scene["path"])] = "statement:" + scene["note"]
                statements.append(scene["note"])
            elif scene.get("relation") in SCENE_RELATIONS:
                self.truth[last_parts(scene["path"])] = SCENE_RELATIONS[scene["relation"]]
        concepts = list(CAPTION_WORDS) + ["statement:" + s for s in dict.fromkeys(statements)] + ["unknown"]
        self._axis = {c: i for i, c in enumerate(concepts)}
        super().__init__(lambda p: self._one_hot(self.truth[last_parts(p)]), lambda t: self._one_hot(self.concept(t)))

    def concept(self, text: str) -> str:
        if text.startswith("a photo of ") and "statement:" + text[len("a photo of ") :] in self._axis:
            return "statement:" + text[len("a photo of ") :]
        words = set(text.lower().split())
        return next((w for w in CAPTION_WORDS if w in words), "unknown")

    def _one_hot(self, concept: str) -> list[float]:
        vector = [0.0] * len(self._axis)
        vector[self._axis[concept]] = 1.0
        return vector


class FakeModel(torch.nn.Module):
    """A tiny deterministic CLIP-shaped model: `visual` is a strided conv, text a mean of byte embeddings."""

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.visual = torch.nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.token_embedding = torch.nn.Embedding(256, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(pixels).mean(dim=(2, 3))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: dict[str, torch.Tensor], normalize: bool = False) -> torch.Tensor:
        ids, mask = text["input_ids"], text["attention_mask"].unsqueeze(-1).float()
        features = (self.token_embedding(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return F.normalize(features, dim=-1) if normalize else features


def fake_tokenizer(texts: list[str], length: int = 48) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        data = list(text.encode("utf-8"))[:length]
        ids[row, : len(data)] = torch.tensor(data, dtype=torch.long)
        mask[row, : len(data)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def fake_preprocess(image: Image.Image, size: int = 32) -> torch.Tensor:
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    return (
        torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1) / 255.0
    )


@dataclass
class FakeBundle:
    """The `models.ModelBundle` surface the scorer uses."""

    model: FakeModel = field(default_factory=FakeModel)
    preprocess_eval: Callable[[Image.Image], torch.Tensor] = fake_preprocess
    tokenizer: Callable[[list[str]], dict[str, torch.Tensor]] = fake_tokenizer
    info: dict[str, Any] = field(default_factory=lambda: {"name": "fake", "embed_dim": 16})
