"""Is the spatial information in the image features? Probes on frozen image-tower outputs beside zero-shot scores.

    python -m eval.probe runs/<name> [--checkpoint epoch_1] [--out DIR]
    python -m eval.probe --model tiny-clip --data-root world/bench --out probe_out
        [--benchmarks whatsup_a gqa_spatial_one] [--representations pooled cls patch_mean patch_attention]
        [--layers -1 2] [--probes linear mlp] [--folds 5] [--seed 0] [--bootstrap 1000]

Every relation benchmark row asks the same two-way question the zero-shot score answers (What'sUp per axis: the
correct caption against the opposite relation's; COCO-/GQA-spatial: the correct caption against the incorrect one).
The probe answers it from the image features alone; the captions only name what the answer is about:
- one object ("a dog on the left"): which of the two relation phrases holds (left or right);
- two objects ("a mug to the left of a table"): which of the two named objects is in the first role of the axis
  (on the left, on top, in front), read as a bag of the object's words. The image alone cannot say which object a
  caption names first, so the probe is given the names, as the zero-shot score is given the captions.
Its accuracy is then the two-way accuracy of the same rows (chance 50%), comparable with zero-shot's.

Representations (each at `--layers`, block indices, -1 = last; `pooled` is the tower's output, the embedding the
dot product uses): `pooled`, `cls` (the class token; towers without one skip it), `patch_mean`, `patch_attention`
(the probe learns one attention query over the patch tokens). Probes: `linear` (logistic regression over
standardised features) and `mlp` (one hidden layer). Splits hold out whole object identities (a What'sUp object
pair, a spatial-QA object phrase: everything but the relation words), k-fold, seeded; every row is predicted once,
by the fold that held it out. 95% intervals come from a bootstrap over those object groups (rows of one group are
not independent), for each accuracy and for probe minus zero-shot, paired on the same rows. A tie counts as wrong.

Writes probe.json (settings, model, every accuracy and interval), probe.csv, probe.md (the report table with a
"where is it lost" reading per task), probe.png, and predictions.jsonl (every row's held-out answers).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.benchmarks import SPECS, get_benchmark
from eval.common import BenchmarkResult, split_at_difference
from eval.scoring import ModelScorer, chunked_features

REPRESENTATIONS = ("pooled", "cls", "patch_mean", "patch_attention")
PROBES = ("linear", "mlp")
# The benchmarks whose rows are spatial relations (MMVP-VLM's statements are not one relation each).
RELATION_BENCHMARKS = tuple(name for name in SPECS if not name.startswith("mmvp"))
RELATION_KEYWORDS = frozenset({"left", "right", "front", "behind", "on", "under", "above", "below", "top", "bottom"})
STOP_WORDS = frozenset({"a", "an", "the", "photo", "of", "is", "image", "picture", "to", "at", "in"})
CHANCE = 50.0


@dataclass(frozen=True)
class ProbeSettings:
    folds: int = 5  # k of the grouped k-fold split (fewer when a task has fewer object groups)
    seed: int = 0  # fold assignment, probe init, bootstrap
    steps: int = 300  # full-batch AdamW steps per fit
    lr: float = 1e-2
    weight_decay: float = 1e-2
    hidden: int = 256  # the MLP probe's hidden width
    bootstrap: int = 1000  # resamples of object groups for the 95% intervals

    def problems(self) -> list[str]:
        found = []
        if self.folds < 2:
            found.append(f"folds={self.folds}: need at least 2")
        if self.steps < 1 or self.hidden < 1 or self.bootstrap < 1:
            found.append("steps, hidden and bootstrap must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            found.append("lr must be > 0 and weight_decay >= 0")
        return found


@dataclass(frozen=True)
class ProbeRow:
    """One benchmark row as a two-way question."""

    task: str  # benchmark/axis, e.g. whatsup_a/left_right, coco_spatial_one/left-right
    example: str  # the benchmark's example id
    image: str  # absolute path
    group: str  # object identity, held out whole
    candidates: tuple[tuple[str, ...], tuple[str, ...]]  # the two answers as class tokens (axis|word)
    target: int  # which candidate is true
    zero_shot_correct: bool  # the benchmark's own two-way decision on this row


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower())


def option_parts(correct: str, wrong: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(common prefix, correct's middle, wrong's middle, common suffix) of two captions, in words: the middles are
    the relation phrases, the rest names the objects."""
    return split_at_difference(words(correct), words(wrong))


def probe_row(task_prefix: str, example: str, image: str, correct: str, wrong: str, one_object: bool, zero_shot: bool):
    prefix, right_phrase, wrong_phrase, suffix = option_parts(correct, wrong)
    true, false = relation_key(right_phrase), relation_key(wrong_phrase)
    if not right_phrase or not wrong_phrase or true == false:
        raise ValueError(f"{task_prefix} example {example}: captions {correct!r} and {wrong!r} name no two relations")
    first, second = sorted((true, false))
    axis = f"{first}/{second}"
    group = " ".join(prefix) + " | " + " ".join(suffix)
    if one_object:
        candidates = ((f"{axis}|{first}",), (f"{axis}|{second}",))
    else:
        subject = tuple(f"{axis}|{w}" for w in prefix if w not in STOP_WORDS)
        reference = tuple(f"{axis}|{w}" for w in suffix if w not in STOP_WORDS)
        if not subject or not reference or subject == reference:
            raise ValueError(f"{task_prefix} example {example}: cannot tell the two objects apart in {correct!r}")
        candidates = (subject, reference)
    # One object: which phrase holds. Two: whether the subject (else the reference) holds the first phrase's role.
    target = 0 if true == first else 1
    return ProbeRow(f"{task_prefix}/{axis}", str(example), image, group, candidates, target, zero_shot)


def relation_key(phrase: Sequence[str]) -> str:
    """The relation a phrase names, by its keyword ("in front of" and GQA's "to the front of" are both front)."""
    found = [w for w in phrase if w in RELATION_KEYWORDS]
    return found[0] if len(found) == 1 else "-".join(phrase)


def relation_rows(result: BenchmarkResult, data_root: Path) -> list[ProbeRow]:
    """The two-way questions of one scored benchmark (What'sUp: each axis row; spatial QA: every row)."""
    rows = []
    one_object = result.benchmark.endswith("_one")
    for example in result.examples:
        image = str(data_root / example["image"])
        if "two_way" in example:  # What'sUp: the row's own caption against its axis' opposite
            decision = example["two_way"]
            correct, wrong = (example["options"][i] for i in decision["options"])
            rows.append(probe_row(result.benchmark, example["id"], image, correct, wrong, False, decision["correct"]))
        elif result.benchmark.startswith(("coco", "gqa")):  # spatial QA: options are [correct, incorrect]
            correct, wrong = example["options"]
            rows.append(
                probe_row(result.benchmark, example["id"], image, correct, wrong, one_object, example["correct"])
            )
    return rows


# ---- features -------------------------------------------------------------------------------------------------


@dataclass
class ImageFeatures:
    paths: list[str]
    pooled: Tensor  # (N, embed_dim), L2-normalised: what the dot product sees
    tokens: dict[int, Tensor]  # layer -> (N, prefix + patches, width)
    prefix_tokens: int  # class/register tokens before the patches

    def representation(self, name: str, layer: int) -> Tensor:
        """(N, D) for a vector representation, (N, patches, D) for patch_attention."""
        if name == "pooled":
            return self.pooled
        hidden = self.tokens[layer]
        if name == "cls":
            return hidden[:, 0]
        patches = hidden[:, self.prefix_tokens :]
        return patches.mean(1) if name == "patch_mean" else patches


def image_features(
    bundle: Any, paths: Sequence[str], layers: Sequence[int], device: torch.device, chunk_size: int = 64
) -> ImageFeatures:
    """The tower's pooled output and the requested blocks' tokens for every image, in one pass per chunk."""
    from models.image_tokens import BlockOutputs, token_layout

    tower = bundle.model.image_tower
    layout = token_layout(tower)
    shapes: dict[str, tuple[int, ...]] = {}
    scorer = ModelScorer(bundle, device=device)

    @torch.no_grad()
    def encode(chunk: list[str]) -> Tensor:
        pixels = scorer.pixels(chunk)
        with BlockOutputs(tower, layers) as hidden:
            pooled = F.normalize(tower(pixels).float(), dim=-1)
        parts = [pooled] + [hidden[layer].float() for layer in layers]
        for key, part in zip(["pooled", *map(str, layers)], parts, strict=True):
            shapes[key] = tuple(part.shape[1:])
        return torch.cat([p.reshape(len(chunk), -1) for p in parts], dim=1)

    flat = chunked_features(list(paths), encode, desc="probe features")
    pieces, start = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape)
        pieces[key] = flat[:, start : start + size].reshape(len(paths), *shape)
        start += size
    tokens = {layer: pieces[str(layer)] for layer in layers}
    return ImageFeatures(list(paths), pieces["pooled"], tokens, layout.prefix_tokens)


# ---- the probe ------------------------------------------------------------------------------------------------


class Probe(nn.Module):
    """score(candidate) = sum over its class tokens of (embedding . h(x) + bias); h = identity (linear) or a one
    hidden layer MLP, after an optional learned attention pool over tokens. Class embeddings start at zero."""

    def __init__(self, dim: int, vocabulary: int, kind: str, attention: bool, hidden: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim)) if attention else None
        self.trunk = nn.Identity() if kind == "linear" else nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        width = dim if kind == "linear" else hidden
        self.classes = nn.Embedding(vocabulary + 1, width, padding_idx=vocabulary)
        self.bias = nn.Embedding(vocabulary + 1, 1, padding_idx=vocabulary)
        nn.init.zeros_(self.classes.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, candidates: Tensor) -> Tensor:
        if self.query is not None:  # x: (N, T, D); a query at zero starts as the patch mean
            weights = torch.softmax(x @ self.query / math.sqrt(x.shape[-1]), dim=1)
            x = (weights.unsqueeze(-1) * x).sum(1)
        h = self.trunk(x)  # (N, W)
        tokens = self.classes(candidates)  # (N, 2, L, W)
        return torch.einsum("nclw,nw->nc", tokens, h) + self.bias(candidates).sum((2, 3))


def encode_candidates(rows: Sequence[ProbeRow]) -> tuple[Tensor, int]:
    """(N, 2, L) class-token ids, padded with the vocabulary size (a zero row)."""
    vocabulary = sorted({token for row in rows for candidate in row.candidates for token in candidate})
    index = {token: i for i, token in enumerate(vocabulary)}
    longest = max(len(c) for row in rows for c in row.candidates)
    ids = torch.full((len(rows), 2, longest), len(vocabulary), dtype=torch.long)
    for n, row in enumerate(rows):
        for c, candidate in enumerate(row.candidates):
            ids[n, c, : len(candidate)] = torch.tensor([index[t] for t in candidate])
    return ids, len(vocabulary)


def fold_of_groups(groups: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each object group to one of k folds: sorted, shuffled by the seed, dealt round-robin."""
    unique = sorted(set(groups))
    random.Random(seed).shuffle(unique)
    k = min(folds, len(unique))
    return {group: i % k for i, group in enumerate(unique)}


def fit_and_predict(
    x: Tensor,
    candidates: Tensor,
    targets: Tensor,
    train: Tensor,
    test: Tensor,
    vocabulary: int,
    kind: str,
    settings: ProbeSettings,
    seed: int,
) -> Tensor:
    """Held-out correctness (strict: a tie is wrong) of a probe fit on `train` rows, for the `test` rows."""
    attention = x.ndim == 3
    reduce = (0, 1) if attention else (0,)
    mean = x[train].mean(reduce, keepdim=True)
    std = x[train].std(reduce, keepdim=True).clamp_min(1e-6)
    inputs = (x - mean) / std
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):  # the caller's stream stays
        torch.manual_seed(seed)
        probe = Probe(x.shape[-1], vocabulary, kind, attention, settings.hidden).to(x.device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    for _ in range(settings.steps):
        loss = F.cross_entropy(probe(inputs[train], candidates[train]), targets[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = probe(inputs[test], candidates[test])
    return logits.gather(1, targets[test, None]).squeeze(1) > logits.gather(1, 1 - targets[test, None]).squeeze(1)


def cross_validated(
    rows: Sequence[ProbeRow], x: Tensor, kind: str, settings: ProbeSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(held-out correctness per row, fold per row)."""
    candidates, vocabulary = encode_candidates(rows)
    candidates = candidates.to(x.device)  # the probe trains where the features are (a GPU when there is one)
    targets = torch.tensor([row.target for row in rows], device=x.device)
    fold_of = fold_of_groups([row.group for row in rows], settings.folds, settings.seed)
    folds = torch.tensor([fold_of[row.group] for row in rows], device=x.device)
    correct = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
    for fold in range(int(folds.max()) + 1):
        test = torch.nonzero(folds == fold).squeeze(1)
        train = torch.nonzero(folds != fold).squeeze(1)
        seed = settings.seed * 1000 + fold
        correct[test] = fit_and_predict(x, candidates, targets, train, test, vocabulary, kind, settings, seed)
    return correct.cpu().numpy(), folds.cpu().numpy()


def bootstrap_interval(
    groups: Sequence[str], correct: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> list[float]:
    """Percentile interval (percent) of the accuracy over object groups drawn with replacement; `correct` may be a
    difference of two correctness vectors (a paired interval)."""
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    member = np.array([index[g] for g in groups])
    counts = np.bincount(member, minlength=len(names)).astype(float)
    sums = np.bincount(member, weights=correct.astype(float), minlength=len(names))
    draws = np.random.default_rng(seed).integers(len(names), size=(resamples, len(names)))
    values = 100.0 * sums[draws].sum(1) / counts[draws].sum(1)
    tail = 50.0 * (1 - level)
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


# ---- the whole run --------------------------------------------------------------------------------------------


def representation_label(name: str, layer: int, depth: int) -> str:
    if name == "pooled":
        return "pooled"
    return f"{name}@{'last' if layer in (-1, depth - 1) else layer}"


def run_probes(
    bundle: Any,
    data_root: Path,
    *,
    benchmarks: Sequence[str] = RELATION_BENCHMARKS,
    representations: Sequence[str] = REPRESENTATIONS,
    layers: Sequence[int] = (-1,),
    probes: Sequence[str] = PROBES,
    settings: ProbeSettings = ProbeSettings(),
    device: torch.device | str = "cpu",
    label_fixes: str = "paper",
) -> dict[str, Any]:
    """Zero-shot two-way scores and held-out probe accuracies for every relation task of `benchmarks`."""
    from models.image_tokens import token_layout

    check_choices(benchmarks, representations, probes, settings)
    device = torch.device(device)
    bundle.model.to(device).eval()
    layout = token_layout(bundle.model.image_tower)
    depth = len(layout.blocks)
    kept = [r for r in representations if r != "cls" or layout.has_cls]
    notes = [] if kept == list(representations) else ["cls: the image tower has no class token; skipped"]
    scorer = ModelScorer(bundle, device=device)
    rows: list[ProbeRow] = []
    for name in benchmarks:
        result = get_benchmark(name)(scorer, data_root, label_fixes=label_fixes)
        rows += relation_rows(result, data_root)
    paths = sorted({row.image for row in rows})
    token_layers = sorted(set(layers)) if any(r != "pooled" for r in kept) else []
    features = image_features(bundle, paths, token_layers, device)
    at = {p: i for i, p in enumerate(paths)}
    configs = [(r, layer) for r in kept for layer in (token_layers if r != "pooled" else [-1])]
    family = len(configs) * len(probes)  # the probes each task's reading picks the best of
    tasks, predictions = [], []
    for task in sorted({row.task for row in rows}):
        task_rows = [row for row in rows if row.task == task]
        groups = [row.group for row in task_rows]
        zero = np.array([row.zero_shot_correct for row in task_rows])
        select = torch.tensor([at[row.image] for row in task_rows])
        entry = {
            "task": task,
            "rows": len(task_rows),
            "groups": len(set(groups)),
            "chance": CHANCE,
            "zero_shot": _accuracy(groups, zero, settings),
            "probes": [],
        }
        answers: dict[str, np.ndarray] = {}
        for representation, layer in configs:
            x = features.representation(representation, layer)[select].to(device)
            for kind in probes:
                correct, folds = cross_validated(task_rows, x, kind, settings)
                label = f"{representation_label(representation, layer, depth)} {kind}"
                answers[label] = correct
                entry["probes"].append(
                    {
                        "representation": representation,
                        "layer": None if representation == "pooled" else resolve(layer, depth),
                        "probe": kind,
                        "label": label,
                        **_accuracy(groups, correct, settings, family),
                        "minus_zero_shot": _difference(groups, correct, zero, settings, family),
                    }
                )
        entry["reading"] = reading(entry)
        tasks.append(entry)
        for n, row in enumerate(task_rows):
            predictions.append(
                {
                    "task": task,
                    "example": row.example,
                    "group": row.group,
                    "fold": int(folds[n]) if configs else None,
                    "zero_shot_correct": bool(zero[n]),
                    "probe_correct": {label: bool(values[n]) for label, values in answers.items()},
                }
            )
    return {"tasks": tasks, "predictions": predictions, "notes": notes, "settings": asdict(settings)}


def resolve(layer: int, depth: int) -> int:
    return layer + depth if layer < 0 else layer


def _accuracy(groups: Sequence[str], correct: np.ndarray, settings: ProbeSettings, family: int = 1) -> dict:
    """Accuracy, its 95% interval and, for one of `family` probes read together, its Bonferroni interval at
    1 - 0.05/family (what `reading` uses, since it picks the best of them)."""
    n = len(correct)
    record = {
        "accuracy": 100.0 * float(correct.mean()) if n else float("nan"),
        "ci95": bootstrap_interval(groups, correct, settings.bootstrap, settings.seed),
        "binomial_se": 100.0 * math.sqrt(0.25 / n) if n else float("nan"),  # of an accuracy at chance over n rows
    }
    if family > 1:
        record["ci_family"] = bootstrap_interval(groups, correct, settings.bootstrap, settings.seed, 1 - 0.05 / family)
    return record


def _difference(groups: Sequence[str], probe: np.ndarray, zero: np.ndarray, settings: ProbeSettings, family: int):
    paired = probe.astype(float) - zero.astype(float)
    record = _accuracy(groups, paired, settings, family)
    return {"value": record.pop("accuracy"), **{k: v for k, v in record.items() if k != "binomial_se"}}


def best_probe(entry: dict[str, Any]) -> dict[str, Any] | None:
    return max(entry["probes"], key=lambda p: p["accuracy"], default=None)


def reading(entry: dict[str, Any]) -> str:
    """Where the information is lost on this task, from the best probe's Bonferroni intervals (the best of several
    probes is picked, so a 95% interval alone would find signal by chance): above chance, and above zero-shot."""
    best = best_probe(entry)
    if best is None:
        return "no probe ran"
    probe_low = best.get("ci_family", best["ci95"])[0]
    gap_low = best["minus_zero_shot"].get("ci_family", best["minus_zero_shot"]["ci95"])[0]
    if probe_low <= CHANCE:
        return f"not found in the image features by any probe (best {best['label']}: interval reaches chance)"
    if gap_low > 0:
        return f"in the image features ({best['label']}), lost in the alignment: the probe beats zero-shot"
    return f"in the image features ({best['label']}) and used: zero-shot is not reliably below the probe"


def check_choices(
    benchmarks: Sequence[str], representations: Sequence[str], probes: Sequence[str], settings: ProbeSettings
) -> None:
    problems = [f"benchmark {b!r}: probes read relation benchmarks only ({', '.join(RELATION_BENCHMARKS)})"
                for b in benchmarks if b not in RELATION_BENCHMARKS]  # fmt: skip
    problems += [f"representation {r!r}: one of {', '.join(REPRESENTATIONS)}" for r in representations
                 if r not in REPRESENTATIONS]  # fmt: skip
    problems += [f"probe {p!r}: one of {', '.join(PROBES)}" for p in probes if p not in PROBES]
    problems += settings.problems()
    if problems:
        raise ValueError("eval.probe: " + "; ".join(problems))


# ---- files ----------------------------------------------------------------------------------------------------


def _interval(values: Sequence[float]) -> str:
    return f"[{values[0]:.1f}, {values[1]:.1f}]"


def markdown(results: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "Two-way accuracy (percent, chance 50) of the same rows: zero-shot caption matching "
             "against probes on the frozen image features, held out by object group; 95% bootstrap intervals over "
             "object groups.", ""]  # fmt: skip
    lines += ["## Where is it lost", "", *where_lost_table(results["tasks"])]
    for entry in results["tasks"]:
        lines += ["", f"## {entry['task']}", "", f"{entry['rows']} rows, {entry['groups']} object groups.", ""]
        lines += ["| features | accuracy | 95% interval | minus zero-shot | 95% interval |", "|---" * 5 + "|"]
        zero = entry["zero_shot"]
        lines.append(f"| zero-shot (dot product) | {zero['accuracy']:.1f} | {_interval(zero['ci95'])} | | |")
        for probe in entry["probes"]:
            gap = probe["minus_zero_shot"]
            lines.append(
                f"| {probe['label']} | {probe['accuracy']:.1f} | {_interval(probe['ci95'])} | {gap['value']:+.1f} | "
                f"{_interval(gap['ci95'])} |"
            )
    for note in results.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def where_lost_table(tasks: Sequence[dict[str, Any]]) -> list[str]:
    """Per task: zero-shot, the best probe (95% intervals) and the reading (also launch.report's section)."""
    lines = ["| task | rows | zero-shot | best probe | probe | reading |", "|---" * 6 + "|"]
    for entry in tasks:
        best = best_probe(entry)
        zero = entry["zero_shot"]
        shown = f"{best['accuracy']:.1f} {_interval(best['ci95'])}" if best else "–"
        lines.append(
            f"| {entry['task']} | {entry['rows']} | {zero['accuracy']:.1f} {_interval(zero['ci95'])} | {shown} | "
            f"{best['label'] if best else '–'} | {entry['reading']} |"
        )
    return lines


def csv_text(results: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "rows", "groups", "features", "layer", "probe", "accuracy", "ci_low", "ci_high",
                     "minus_zero_shot", "minus_ci_low", "minus_ci_high"])  # fmt: skip
    for entry in results["tasks"]:
        zero = entry["zero_shot"]
        writer.writerow([entry["task"], entry["rows"], entry["groups"], "zero-shot", "", "", f"{zero['accuracy']:.4f}",
                         f"{zero['ci95'][0]:.4f}", f"{zero['ci95'][1]:.4f}", "", "", ""])  # fmt: skip
        for p in entry["probes"]:
            gap = p["minus_zero_shot"]
            writer.writerow([entry["task"], entry["rows"], entry["groups"], p["representation"],
                             "" if p["layer"] is None else p["layer"], p["probe"], f"{p['accuracy']:.4f}",
                             f"{p['ci95'][0]:.4f}", f"{p['ci95'][1]:.4f}", f"{gap['value']:.4f}",
                             f"{gap['ci95'][0]:.4f}", f"{gap['ci95'][1]:.4f}"])  # fmt: skip
    return out.getvalue()


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """One panel per task: zero-shot and every probe, accuracy with its interval, chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    bars = 1 + max((len(t["probes"]) for t in tasks), default=0)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7, 0.35 * bars * len(tasks) + 1.2), squeeze=False)
    for ax, entry in zip(axes[:, 0], tasks, strict=True):
        items = [("zero-shot", entry["zero_shot"])] + [(p["label"], p) for p in entry["probes"]]
        values = [item["accuracy"] for _, item in items]
        low = [v - item["ci95"][0] for v, (_, item) in zip(values, items, strict=True)]
        high = [item["ci95"][1] - v for v, (_, item) in zip(values, items, strict=True)]
        colours = ["#888888"] + ["#3b6fb6"] * (len(items) - 1)
        ax.barh(range(len(items)), values, xerr=[low, high], color=colours, capsize=2)
        ax.set_yticks(range(len(items)), [label for label, _ in items], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(CHANCE, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_xlim(0, 100)
        ax.set_title(f"{entry['task']} ({entry['rows']} rows)", fontsize=8)
    axes[-1, 0].set_xlabel("two-way accuracy (%), 95% interval; dashed: chance")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(results: dict[str, Any], out: Path, title: str, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {**meta, "settings": results["settings"], "notes": results["notes"], "tasks": results["tasks"]}
    (out / "probe.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "probe.csv").write_text(csv_text(results))
    (out / "probe.md").write_text(markdown(results, title))
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in results["predictions"]))
    if results["tasks"]:
        plot(results, out / "probe.png", title)


# ---- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run folder (its config, its checkpoints)")
    parser.add_argument("--checkpoint", default="", help="which of the run's checkpoints (default: the last)")
    parser.add_argument("--model", default="", help="a model preset or open_clip name, instead of a run")
    parser.add_argument("--pretrained", default="", help="with --model: a tag, a weights file or folder, or random")
    parser.add_argument("--data-root", type=Path, help="the benchmarks' root (default: the run's eval.data_root)")
    parser.add_argument("--out", type=Path, help="default: <run>/probe/<checkpoint>")
    parser.add_argument("--benchmarks", nargs="+", default=list(RELATION_BENCHMARKS))
    parser.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS))
    parser.add_argument("--layers", nargs="+", type=int, default=[-1], help="block indices; -1 = the last")
    parser.add_argument("--probes", nargs="+", default=list(PROBES))
    parser.add_argument("--label-fixes", default="paper")
    defaults = ProbeSettings()
    for field_name in ("folds", "seed", "steps", "hidden", "bootstrap"):
        parser.add_argument(f"--{field_name}", type=int, default=getattr(defaults, field_name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    args = parser.parse_args(argv)
    if bool(args.run) == bool(args.model):
        parser.error("give a run folder or --model, not both")
    if args.model and (args.data_root is None or args.out is None):
        parser.error("--model needs --data-root and --out")
    return args


def load_subject(args: argparse.Namespace) -> tuple[Any, Path, Path, str, dict[str, Any]]:
    """(model bundle with the chosen weights, data root, output folder, title, what was loaded)."""
    from eval.run import _build_model, run_checkpoints
    from models.config import ModelConfig

    if args.model:
        bundle = _build_model(ModelConfig(name=args.model, pretrained=args.pretrained))
        what = {"model": args.model, "pretrained": args.pretrained}
        return bundle, args.data_root, args.out, f"{args.model}: where is the spatial information lost?", what
    from train.checkpoints import load_weights
    from train.config import load_recipe

    cfg = load_recipe(args.run / "config.yaml")
    checkpoints = run_checkpoints(args.run)
    chosen = next((c for c in checkpoints if c.name == args.checkpoint), None) if args.checkpoint else checkpoints[-1]
    if chosen is None:
        names = ", ".join(c.name for c in checkpoints)
        raise ValueError(f"{args.run}: no checkpoint {args.checkpoint!r}; it has {names}")
    bundle = _build_model(cfg.model)
    if chosen.path is not None:
        load_weights(chosen.path, bundle.model)
    root = args.data_root or (Path(cfg.eval.data_root) if cfg.eval.data_root else None)
    if root is None:
        raise ValueError(f"{args.run}: no benchmark data: pass --data-root or set eval.data_root in the run's config")
    out = args.out or args.run / "probe" / chosen.name
    what = {"run": str(args.run), "checkpoint": chosen.name, "step": chosen.step}
    return bundle, root, out, f"{args.run.name} ({chosen.name}): where is the spatial information lost?", what


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = ProbeSettings(args.folds, args.seed, args.steps, args.lr, args.weight_decay, args.hidden, args.bootstrap)
    try:
        check_choices(args.benchmarks, args.representations, args.probes, settings)
        bundle, data_root, out, title, what = load_subject(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"eval.probe: {err}", file=sys.stderr)
        return 2
    started = time.time()
    results = run_probes(
        bundle,
        data_root,
        benchmarks=args.benchmarks,
        representations=args.representations,
        layers=args.layers,
        probes=args.probes,
        settings=settings,
        device="cuda" if torch.cuda.is_available() else "cpu",
        label_fixes=args.label_fixes,
    )
    meta = {**what, "data_root": str(data_root), "model_info": getattr(bundle, "info", {}),
            "seconds": round(time.time() - started, 1)}  # fmt: skip
    write_results(results, out, title, meta)
    for entry in results["tasks"]:
        print(f"{entry['task']}: zero-shot {entry['zero_shot']['accuracy']:.1f}; {entry['reading']}", file=sys.stderr)
    print(f"eval.probe: wrote {out}/probe.md, probe.csv, probe.json, probe.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
