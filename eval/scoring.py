"""The real scorer: a model bundle from `models` turned into L2-normalised features, chunked and distributed.

Features are computed in fixed chunks (CHUNK_SIZE items) whatever the number of processes; under
torch.distributed chunk k goes to rank k % world_size and every rank gathers all chunks back in order, so
a multi-process result equals the one-process result bit for bit (same chunks, same arithmetic, exact copies).

Image features are cached per (image tower weights, eval transform, model identity, exact path list): when a
run's image tower is locked, every checkpoint of one `eval.run` invocation reuses the first computation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from eval.distributed import rank_and_world

CHUNK_SIZE = 64


def chunked_features(
    items: Sequence[Any],
    encode: Callable[[list[Any]], torch.Tensor],
    *,
    chunk_size: int = CHUNK_SIZE,
    desc: str = "",
) -> torch.Tensor:
    """`encode` over fixed chunks of `items`, round-robin over ranks, gathered back in item order (float32, CPU)."""
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    rank, world = rank_and_world()
    mine = range(rank, len(chunks), world)
    done: dict[int, torch.Tensor] = {}
    for k in tqdm(mine, desc=desc, disable=rank != 0 or not desc, leave=False):
        done[k] = encode(chunks[k]).detach().to("cpu", torch.float32).contiguous()
    if world > 1:
        # Pickled tensors travel exactly; sizes are small (N x D floats per benchmark).
        gathered: list[dict[int, torch.Tensor] | None] = [None] * world
        dist.all_gather_object(gathered, done)
        for part in gathered:
            done.update(part or {})
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat([done[k] for k in range(len(chunks))])


def all_ranks(flag: bool) -> bool:
    """True iff `flag` is true on every rank: ranks must agree before skipping a collective."""
    if rank_and_world()[1] == 1:
        return flag
    flags: list[bool | None] = [None] * rank_and_world()[1]
    dist.all_gather_object(flags, flag)
    return all(flags)


def tower_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ImageFeatureCache:
    """In-memory features by (image tower key, path list); keeps only the newest tower's entries."""

    def __init__(self) -> None:
        self._tower: str | None = None
        self._features: dict[tuple[str, ...], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def get(self, tower: str, paths: Sequence[str]) -> torch.Tensor | None:
        found = self._features.get(tuple(paths)) if tower == self._tower else None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, tower: str, paths: Sequence[str], features: torch.Tensor) -> None:
        if tower != self._tower:  # an unlocked tower changes every checkpoint: old entries are dead weight
            self._tower, self._features = tower, {}
        self._features[tuple(paths)] = features


class ModelScorer:
    """Scorer over a `models.ModelBundle`-like object (model with encode_image/encode_text, preprocess_eval,
    tokenizer). The model must already be on `device` and in eval mode."""

    def __init__(
        self,
        bundle: Any,
        *,
        device: torch.device | str = "cpu",
        chunk_size: int = CHUNK_SIZE,
        image_cache: ImageFeatureCache | None = None,
        identity: str = "",
        precision: str = "fp32",
    ):
        self.model = bundle.model
        self.preprocess = bundle.preprocess_eval
        self.tokenizer = bundle.tokenizer
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.image_cache = image_cache
        self.identity = identity
        # fp16: the towers run under fp16 autocast, as the authors' eval_clip.py (eval.scoring=released)
        self.precision = precision
        self._tower_key: str | None = None
        if getattr(self.model, "head", None) is not None:  # an alignment head scores pairs (eval.common.make_table)
            self.score_table = self._pair_table

    def tower_key(self) -> str | None:
        """Model identity + eval transform + image tower weights; None when the tower cannot be told apart."""
        visual = getattr(self.model, "image_tower", None) or getattr(self.model, "visual", None)
        if not isinstance(visual, torch.nn.Module):
            return None
        if self._tower_key is None:
            parts = [self.identity, repr(self.preprocess), str(self.device.type), self.precision]
            parts.append(tower_fingerprint(visual))
            if getattr(self.model, "head", None) is not None:  # image features are the head's projections
                parts.append(tower_fingerprint(self.model.head))
            self._tower_key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return self._tower_key

    def image_features(self, paths: list[str]) -> torch.Tensor:
        key = self.tower_key() if self.image_cache is not None else None
        cached = self.image_cache.get(key, paths) if key is not None else None
        if all_ranks(cached is not None):
            return cached
        features = chunked_features(paths, self._encode_images, chunk_size=self.chunk_size, desc="images")
        if key is not None:
            self.image_cache.put(key, paths, features)
        return features

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return chunked_features(texts, self._encode_texts, chunk_size=self.chunk_size, desc="texts")

    def _pair_table(self, images: Sequence[str], texts: Sequence[str]) -> PairScoreTable:
        return PairScoreTable(self, images, texts)

    def _autocast(self):
        enabled = self.precision == "fp16"
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=enabled)

    def pixels(self, paths: Sequence[str]) -> torch.Tensor:
        """The eval transform of each image, stacked on the device: what the image tower sees."""
        pixels = []
        for path in paths:
            with Image.open(path) as image:
                pixels.append(self.preprocess(image.convert("RGB")))
        return torch.stack(pixels).to(self.device)

    @torch.no_grad()
    def _encode_images(self, paths: list[str]) -> torch.Tensor:
        with self._autocast():
            features = self.model.encode_image(self.pixels(paths), normalize=True)
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts))
        if isinstance(tokens, dict):
            tokens = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in tokens.items()}
        else:  # a bare token tensor (open_clip's own tokenizers)
            tokens = tokens.to(self.device)
        with self._autocast():
            features = self.model.encode_text(tokens, normalize=True)
        return F.normalize(features.float(), dim=-1)


class PairScoreTable:
    """As eval.common.ScoreTable, for a model whose score depends on the pair (an alignment head): the features of
    every image (patches x D) and text are computed once, each asked-for pair's score when asked."""

    def __init__(self, scorer: ModelScorer, images: Sequence[str], texts: Sequence[str]):
        self.images = list(dict.fromkeys(images))
        self.texts = list(dict.fromkeys(texts))
        self._image_row = {p: i for i, p in enumerate(self.images)}
        self._text_row = {t: i for i, t in enumerate(self.texts)}
        self.image_features = scorer.image_features(self.images)
        self.text_features = scorer.text_features(self.texts)
        self._similarity = scorer.model.similarity
        self._scores: dict[tuple[int, int], float] = {}

    @torch.no_grad()
    def __call__(self, image: str, text: str) -> float:
        i, j = self._image_row[image], self._text_row[text]
        if (i, j) not in self._scores:
            score = self._similarity(self.image_features[i : i + 1], self.text_features[j : j + 1])
            self._scores[(i, j)] = float(score[0, 0])
        return self._scores[(i, j)]

    def image_cosine(self, first: str, second: str) -> float:
        """Cosine similarity of the two images' mean projected patch embeddings."""
        a, b = (F.normalize(self.image_features[self._image_row[p]].mean(0), dim=-1) for p in (first, second))
        return float(a @ b)
