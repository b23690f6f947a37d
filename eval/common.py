"""What every benchmark shares: the scorer protocol, the score table, the official tie rule and the result record.

Benchmarks never see a model: they get a `Scorer` (L2-normalised image and text features) and turn its cosine
similarities into per-example records and metrics. Every metric is computed from the Python floats that are
written to `<benchmark>.scores.jsonl`, so anyone can recompute it from that file alone and get the same number.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

LABEL_FIX_MODES = ("paper", "none")

# Part of every result's provenance: bump it when a metric definition changes, so that results computed by the
# older definition are recomputed instead of reused.
SCORING_VERSION = 2

ARGMAX_TIE_RULE = (
    "numpy argmax (the first highest score wins, as in the official What'sUp code); the correct option is "
    "index 0, so a tie counts as correct"
)
STRICT_TIE_RULE = (
    "strict '>' as the authors' eval_clip.py (scoring=released): the correct option (index 0) must score strictly "
    "higher than every other, so a tie is wrong; scores are 100 x cosine rounded to fp16 as their fp16-autocast "
    "matmul gives them, divided by 100"
)
# eval.scoring: official = the benchmarks' own rules in fp32; released = the authors' eval_clip.py (strict '>', fp16);
# strict = a strict '>' on the scores as given, fp32 (how the release decides on MLLM VQAScores, eval.llava vqascore)
SCORING_MODES = ("official", "released", "strict")
STRICT_FP32_TIE_RULE = (
    "strict '>' (scoring=strict): the correct option (index 0) must score strictly higher than every other, so a tie "
    "is wrong; scores as given (fp32)"
)


def check_scoring(mode: str) -> None:
    if mode not in SCORING_MODES:
        raise ValueError(f"scoring={mode!r}: expected one of {', '.join(SCORING_MODES)}")


def pick(scores: Sequence[float], scoring: str) -> int:
    """The option an image picks: official = numpy argmax (a tie goes to the first, the correct one); released and
    strict = option 0 only when strictly above every other, else the first of the best others (a tie is wrong)."""
    if scoring == "official":
        return first_argmax(scores)
    check_scoring(scoring)
    rest = first_argmax(scores[1:]) + 1 if len(scores) > 1 else 0
    return 0 if len(scores) == 1 or scores[0] > scores[rest] else rest


class Scorer(Protocol):
    """Features for a benchmark: L2-normalised float32 rows on the CPU, one per input, in input order."""

    def image_features(self, paths: list[str]) -> torch.Tensor: ...

    def text_features(self, texts: list[str]) -> torch.Tensor: ...


def require_file(path: Path, what: str) -> Path:
    """`path` if it is a file, else FileNotFoundError naming what the file is and where it was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: expected {path}")
    return path


def read_csv_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """A benchmark's CSV as rows of column -> value (header names stripped, values as written, a BOM tolerated);
    ValueError naming the file when a required column is missing."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if not set(columns) <= set(header):
            raise ValueError(f"{path}: expected columns {', '.join(columns)}, found {header}")
        rows = []
        for row in reader:
            if None in row:  # DictReader's key for fields beyond the header: an unquoted comma, most likely
                raise ValueError(
                    f"{path} line {reader.line_num}: {len(header) + len(row[None])} fields, the header has "
                    f"{len(header)} (an unquoted comma in a value?)"
                )
            rows.append({k.strip(): v or "" for k, v in row.items()})
        return rows


def require_images(paths: Sequence[Path], what: str) -> None:
    """Fails before any model work if images are missing, listing the first few."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} {what} not found: {shown}")


def check_label_fixes(mode: str) -> None:
    if mode not in LABEL_FIX_MODES:
        raise ValueError(f"label_fixes={mode!r}: expected one of {', '.join(LABEL_FIX_MODES)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path, data_root: Path) -> dict[str, Any]:
    """Provenance of one data file the benchmark read: its path under the data root, size and sha256."""
    return {"path": path.relative_to(data_root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


@dataclass(frozen=True)
class Inputs:
    """What a benchmark reads from a data root: data files (hashed whole) and images (listed by size and mtime)."""

    files: tuple[Path, ...]
    images: tuple[Path, ...]
    image_folder: Path  # the folder holding the images (MMVP-VLM: whichever of its layouts was found)


def image_listing(images: Sequence[Path], data_root: Path) -> dict[str, Any]:
    """Identity of an image set without reading the images (a real benchmark has thousands): sha256 over every
    image's path under the data root, size and modification time."""
    digest = hashlib.sha256()
    for path in sorted(set(images)):
        info = path.stat()
        digest.update(f"{path.relative_to(data_root).as_posix()}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return {"count": len(set(images)), "sha256": digest.hexdigest()}


def split_at_difference(a: Sequence[str], b: Sequence[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Two word sequences as (common prefix, a's middle, b's middle, common suffix): for two captions that differ in
    their relation phrase, the middles are the phrases and the rest names the objects."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return list(a[:start]), list(a[start : len(a) - end]), list(b[start : len(b) - end]), list(a[len(a) - end :])


def first_argmax(scores: Sequence[float]) -> int:
    """numpy.argmax: the first index of the maximum, so ties go to the lower index."""
    best = 0
    for i, score in enumerate(scores):
        if score > scores[best]:
            best = i
    return best


def percent(count: float, denominator: float) -> float:
    return 100.0 * count / denominator if denominator else float("nan")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def make_table(scorer: Scorer, images: Sequence[str], texts: Sequence[str], *, fp16_logits: bool = False):
    """The score of every (image, text) pair a benchmark reads: a ScoreTable of the scorer's features, or the
    scorer's own table when it scores pairs itself (`score_table(images, texts)`, e.g. an MLLM's VQAScore)."""
    own = getattr(scorer, "score_table", None)
    return own(images, texts) if own is not None else ScoreTable(scorer, images, texts, fp16_logits=fp16_logits)


class ScoreTable:
    """Cosine similarity of every (image, text) pair a benchmark needs, each feature computed once.

    Scores are returned as Python floats (exact float32 values), the numbers written to scores.jsonl.
    """

    def __init__(self, scorer: Scorer, images: Sequence[str], texts: Sequence[str], *, fp16_logits: bool = False):
        self.images = list(dict.fromkeys(images))
        self.texts = list(dict.fromkeys(texts))
        self._image_row = {p: i for i, p in enumerate(self.images)}
        self._text_row = {t: i for i, t in enumerate(self.texts)}
        image_features = _checked(scorer.image_features(self.images), len(self.images), "image_features")
        text_features = _checked(scorer.text_features(self.texts), len(self.texts), "text_features")
        # Normalised again here so the score is a cosine whatever the scorer returned (a no-op up to rounding).
        self.image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        if fp16_logits:  # as `100.0 * image_features @ text_features.T` under fp16 autocast (fp32 accumulation)
            logits = (100.0 * self.image_features.half()).float() @ text_features.half().float().T
            self._cosine = (logits.half().double() / 100.0).numpy()
        else:
            self._cosine = (self.image_features @ text_features.T).numpy()

    def __call__(self, image: str, text: str) -> float:
        return float(self._cosine[self._image_row[image], self._text_row[text]])

    def image_cosine(self, first: str, second: str) -> float:
        """Cosine similarity of two images' embeddings (the paper's 'erroneous agreement' statistic)."""
        a, b = self.image_features[self._image_row[first]], self.image_features[self._image_row[second]]
        return float(a @ b)


def _checked(features: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != rows:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"scorer.{name} returned {shape}, expected ({rows}, D)")
    return features.detach().to("cpu", torch.float32)


@dataclass
class BenchmarkResult:
    """One benchmark scored once: metrics with their chance values, per-example records, and provenance."""

    benchmark: str
    metrics: dict[str, float]
    chance: dict[str, float | None]  # same keys as metrics; None where chance is undefined (cosine means)
    examples: list[dict[str, Any]]  # one per example, written to <benchmark>.scores.jsonl
    details: dict[str, Any] = field(default_factory=dict)  # tie rule, label fixes, files, counts, denominators

    def record(self) -> dict[str, Any]:
        """The JSON summary (everything but the per-example records)."""
        return {"benchmark": self.benchmark, "metrics": self.metrics, "chance": self.chance, **self.details}
