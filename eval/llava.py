"""Scores LLaVA-style MLLMs (transformers' Llava classes, a llava-hf folder) on the project's benchmarks.

    python -m eval.llava --model DIR --data-root DIR --out DIR [--benchmarks ...]
        [--protocol generative|choice|relaxed|m3id|vqascore] [--limit N] [--batch-size B]

Result files are those of CLIP eval (eval/report.py): `<benchmark>.scores.jsonl` (one record per question: prompt,
raw output or option perplexities, parsed answer, correctness) and `<benchmark>.json` (metrics with their chance
values, the same metric names as CLIP eval), plus summary.csv/.md. Scoring is resumable per benchmark: records are
appended to `<benchmark>.scores.jsonl` batch by batch, and a rerun with the same settings scores only the
questions that file lacks. Protocol rules: eval/llava_protocols.py (PROTOCOL_RULES, recorded in each result).

Several processes: `accelerate launch [--config_file launch/accelerate/cpu_2proc.yaml] -m eval.llava ...` (or
torchrun). Rank r scores the questions with index % world == r, appending to `<benchmark>.scores.rank{r}.jsonl`;
rank 0 merges them in the planned order and writes the same files as one process (a resume reads the scores file
and every rank file, so the number of processes may change between runs). Greedy decoding and option perplexities
are per question, but a question's left-padded batch differs with the number of processes, which moves fp32
logits by ~1e-6: parsed answers and metrics agree, perplexities to ~1e-6 (ties and near-ties aside).

The model runs as transformers' LlavaForConditionalGeneration computes it (vision tower hidden state at
`vision_feature_layer`, CLS dropped for the "default" strategy, the 2-layer projector, the image features in place
of the `<image>` token, the Llama language model), with the embedding sequence built here so that generation,
M3ID's image-free branch and option perplexities share one left-padded path (tests compare it with
`LlavaForConditionalGeneration.generate` and its forward logits).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval import mmvp_vlm, spatial_qa, whatsup
from eval.benchmarks import BENCHMARKS as CLIP_BENCHMARKS
from eval.common import (
    SCORING_VERSION,
    BenchmarkResult,
    file_record,
    mean,
    percent,
    require_images,
    sha256_file,
    split_at_difference,
)
from eval.distributed import decided_on_rank0, exit_process, init_distributed, rank_and_world
from eval.llava_protocols import (
    M3ID_ALPHA,
    M3ID_FIRST_STEP,
    M3ID_LAMBDA,
    PROMPT_TEMPLATE,
    PROTOCOL_RULES,
    PROTOCOLS,
    VQASCORE_ANSWER,
    VQASCORE_QUESTION,
    VQASCORE_SYSTEM,
    Item,
    m3id_logits,
    normalised_perplexity,
    option_probabilities,
    parse_answer,
    relaxed_pair_correct,
    swap_bit,
    unique_best,
)
from eval.report import SummaryRow, read_result, scores_path, write_result, write_summary
from models.tiny_llava import TINY_LLAVA, tiny_llava_folder

# The benchmarks CLIP eval scores, in its order, then MMVP for MLLMs (Tables 3, 6, 7), which CLIP cannot answer.
# mmvp_clip is CLIP's way into MMVP's images (one statement per image); an MLLM answers MMVP's own questions.
BENCHMARKS = (*(name for name in CLIP_BENCHMARKS if name != "mmvp_clip"), "mmvp")
LLAVA_SCORING_VERSION = 2  # 2: MMVP published answer fixes under label_fixes=paper
# How an image reaches the vision tower: pad = LLaVA-1.5's `image_aspect_ratio: pad` (a square in the processor's
# mean colour, as the official code and the authors' release score LLaVA); crop = the llava-hf processor alone.
IMAGE_ASPECT_RATIOS = ("pad", "crop")

# ---------------------------------------------------------------- questions (paper, Table 8)

# What'sUp relation -> (phrase in a question, short answer shown as an option, keywords for matching)
WHATSUP_WORDS = {
    "left_of": ("to the left of", "left", ("left",)),
    "right_of": ("to the right of", "right", ("right",)),
    "on": ("on", "on", ("on",)),
    "under": ("under", "under", ("under",)),
    "in-front_of": ("in front of", "in front", ("front",)),
    "behind": ("behind", "behind", ("behind",)),
}
# Table 8's question and command per two-way subset; {o1}, {o2}: the objects of the file name.
WHATSUP_TWO_WAY = {
    "left_right": ("Is the {o1} to the left of or to the right of the {o2}?", "Answer left or right."),
    "on_under": ("Is the {o1} on or under the {o2}?", "Choose from the two options."),
    # Our copy of Table 8 is garbled for this row; reconstructed as the Left/Right row's form.
    "front_behind": ("Is the {o1} in front of or behind the {o2}?", "Answer in front or behind."),
}
SHORT_ANSWER = "Give a short answer."
STOP_WORDS = {"a", "an", "the", "to", "of", "in", "on", "at", "is"}
_TWO_OBJECT_RELATIONS = (
    "to the left of", "to the right of", "to the front of", "in front of", "on top of", "to the behind of",
    "above", "below", "behind", "under", "on",
)  # fmt: skip
_ONE_OBJECT = re.compile(r"^a photo of (?:an? )?(?P<o1>.+?) (?P<rel>on the \w+)$", re.IGNORECASE)
_TWO_OBJECT = re.compile(
    r"^a photo of (?:an? )?(?P<o1>.+?) (?P<rel>" + "|".join(_TWO_OBJECT_RELATIONS) + r") (?:an? )?(?P<o2>.+)$",
    re.IGNORECASE,
)


def _object_name(slug: str) -> str:
    return slug.replace("-", " ")


def whatsup_items(data_root: Path, subset: str, *, label_fixes: str, limit: int) -> tuple[list[Item], dict]:
    """Per image two questions: its two-way axis (Table 8) and the four-way one (the relations in the subset's fixed
    order, the same for every image: Appendix A.1 keeps What'sUp's order fixed)."""
    spec = whatsup.SUBSETS[subset]
    rows, captions_path = whatsup.load_rows(data_root, spec)
    rows = whatsup.first_rows(rows, limit)
    whatsup.group_rows(rows, spec)
    rows, fixes = whatsup.apply_label_fixes(rows, subset, label_fixes)
    require_images([r.image for r in rows], f"{spec.what} images")
    items = []
    for row in rows:
        o1, o2 = (_object_name(o) for o in row.objects)
        meta = {"row": row.label, "objects": list(row.objects), "relation": row.relation}
        axis, first, second = next(a for a in spec.axes if row.relation in a[1:])
        stem, command = WHATSUP_TWO_WAY[axis]
        relations = (first, second)
        items.append(
            Item(
                id=f"{row.label}/two_way",
                image=row.image,
                stem=stem.format(o1=o1, o2=o2),
                command=command,
                options=tuple(WHATSUP_WORDS[r][1] for r in relations),
                keywords=tuple(WHATSUP_WORDS[r][2] for r in relations),
                answer=relations.index(row.relation),
                meta={**meta, "kind": "two_way", "axis": axis, "option_relations": list(relations)},
            )
        )
        relations = spec.relations
        phrases = [WHATSUP_WORDS[r][0] for r in relations]
        shorts = [WHATSUP_WORDS[r][1] for r in relations]
        items.append(
            Item(
                id=f"{row.label}/four_way",
                image=row.image,
                stem=f"Is the {o1} {', '.join(phrases[:-1])} or {phrases[-1]} the {o2}?",
                command=f"Answer {', '.join(shorts[:-1])} or {shorts[-1]}.",
                options=tuple(shorts),
                keywords=tuple(WHATSUP_WORDS[r][2] for r in relations),
                answer=relations.index(row.relation),
                meta={**meta, "kind": "four_way", "option_relations": list(relations)},
            )
        )
    details = {
        "label_fixes": {"mode": label_fixes, "applied": fixes},
        "files": [file_record(captions_path, data_root)],
        "counts": {"rows": len(rows), "questions": len(items)},
    }
    return items, details


def _diff_keywords(first: str, second: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The content words that differ between two captions that differ only by their preposition."""
    _, first_middle, second_middle, _ = split_at_difference(first.lower().split(), second.lower().split())
    words = []
    for middle in (first_middle, second_middle):
        content = tuple(w for w in middle if w not in STOP_WORDS) or tuple(middle)
        words.append(content)
    if set(words[0]) & set(words[1]) or not words[0] or not words[1]:
        raise ValueError(f"captions {first!r} and {second!r}: no distinct words tell them apart")
    return words[0], words[1]


def spatial_question(captions: tuple[str, str]) -> tuple[str, tuple[str, str]]:
    """Table 8's COCO/GQA question stem and the two answer texts, in the captions' order."""
    one = [_ONE_OBJECT.match(c.strip()) for c in captions]
    if all(one) and one[0]["o1"] == one[1]["o1"]:
        o1 = one[0]["o1"]
        rels = (one[0]["rel"].lower(), one[1]["rel"].lower())
        return f"Is the {o1} {rels[0]} or {rels[1]}?", rels
    two = [_TWO_OBJECT.match(c.strip()) for c in captions]
    if all(two) and two[0]["o1"] == two[1]["o1"] and two[0]["o2"] == two[1]["o2"]:
        o1, o2 = two[0]["o1"], two[0]["o2"]
        rels = (f"{two[0]['rel'].lower()} a {o2}", f"{two[1]['rel'].lower()} a {o2}")
        return f"Is the {o1} {rels[0]} or {rels[1]}?", rels
    # Irregular wording: ask with the captions themselves.
    texts = tuple(c.strip().rstrip(".") for c in captions)
    return f"Which is true of the image: {texts[0]}, or {texts[1]}?", texts  # type: ignore[return-value]


def spatial_items(
    data_root: Path, source: str, objects: str, *, limit: int, seed: int, benchmark: str, label_fixes: str = "paper"
) -> tuple[list[Item], dict]:
    rows, images, qa_path = spatial_qa.load_rows(data_root, source, objects)
    rows, images = spatial_qa.first_rows(rows, images, limit)
    require_images(images, f"{spatial_qa.SOURCES[source].what} images")
    items = []
    for n, (row, image) in enumerate(zip(rows, images, strict=True)):
        captions = (row[1], row[2])
        stem, answers = spatial_question(captions)
        keywords = _diff_keywords(*captions)
        swapped = swap_bit(seed, benchmark, str(n))
        order = (1, 0) if swapped else (0, 1)
        items.append(
            Item(
                id=str(n),
                image=image,
                stem=stem if not swapped else _swap_stem(stem, answers),
                command=SHORT_ANSWER,
                options=tuple(answers[k] for k in order),
                keywords=tuple(keywords[k] for k in order),
                answer=order.index(0),
                meta={"image_id": row[0], "captions": list(captions), "swapped": swapped},
            )
        )
    details = {
        "label_fixes": {"mode": label_fixes, "applied": []},  # no published fixes for this file
        "files": [file_record(qa_path, data_root)],
        "counts": {"rows": len(rows), "swapped": sum(i.meta["swapped"] for i in items)},
    }
    return items, details


def _swap_stem(stem: str, answers: tuple[str, str]) -> str:
    """The stem with the two answer texts exchanged (Appendix A.1's position-bias swap)."""
    first, second = answers
    swapped = stem.replace(first, "\0").replace(second, first).replace("\0", second)
    if swapped == stem:
        raise ValueError(f"cannot swap the options of {stem!r}")
    return swapped


# The authors' conversion of MMVP-VLM for MLLMs (lst627/CLIP-Embeds additional_questions/Questions-llava.csv), which
# users place beside Questions.csv: one question per image; its header spells the first column "lndex".
MMVP_VLM_LLAVA_FILE = "Questions-llava.csv"
MMVP_VLM_LLAVA_COLUMNS = ("lndex", "Question", "Options", "Correct Answer")


def mmvp_vlm_items(data_root: Path, *, limit: int, label_fixes: str = "paper") -> tuple[list[Item], dict]:
    """MMVP-VLM for an MLLM: the authors' questions (`MMVP_VLM/Questions-llava.csv`) when the file is there; else
    our conversion, each image of a pair asked which of the pair's two statements is true of it, options in the
    pair's order for both images."""
    rows, questions = mmvp_vlm.load_rows(data_root)
    rows = mmvp_vlm.first_pairs(rows, limit)
    images, folder = mmvp_vlm.image_paths(data_root, rows)
    require_images(images, "MMVP-VLM images")
    details = {
        "label_fixes": {"mode": label_fixes, "applied": []},  # no published fixes for this file
        "files": [file_record(questions, data_root)],
        "images_folder": folder.relative_to(data_root).as_posix(),
        "counts": {"rows": len(rows), "pairs": len(rows) // 2},
    }
    converted = data_root / "MMVP_VLM" / MMVP_VLM_LLAVA_FILE
    if converted.is_file():
        items = _authors_mmvp_vlm_items(converted, rows, images)
        details["files"].append(file_record(converted, data_root))
        details["questions"] = f"the authors' {MMVP_VLM_LLAVA_FILE}"
        return items, details
    details["questions"] = "ours: which of the pair's two statements is true of the image"
    items = []
    for k in range(0, len(rows), 2):
        pair = f"{rows[k]['Question ID'].strip()}-{rows[k + 1]['Question ID'].strip()}"
        statements = (rows[k]["Statement"].strip().rstrip("."), rows[k + 1]["Statement"].strip().rstrip("."))
        for j in (0, 1):
            items.append(
                Item(
                    id=f"{pair}/{j + 1}",
                    image=images[k + j],
                    stem="Which statement is true of the image?",
                    command="",
                    options=statements,
                    keywords=((statements[0],), (statements[1],)),
                    answer=j,
                    parse="letter",
                    meta={"pair": pair, "type": rows[k]["Type"], "image_in_pair": j + 1},
                )
            )
    return items, details


def _authors_mmvp_vlm_items(path: Path, rows: list[dict], images: list[Path]) -> list[Item]:
    """One item per MMVP-VLM image from the authors' Questions-llava.csv, matched to Questions.csv by id."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        index = "lndex" if "lndex" in header else "Index"
        if not {index, "Question", "Options", "Correct Answer"} <= set(header):
            raise ValueError(f"{path}: expected columns {', '.join(MMVP_VLM_LLAVA_COLUMNS)} (or Index), found {header}")
        by_id = {}
        for line, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row[index].isdigit():
                raise ValueError(f"{path} line {line}: {index} {row[index]!r} is not a whole number")
            by_id[int(row[index])] = (line, row)
    items = []
    for k, (row, image) in enumerate(zip(rows, images, strict=True)):
        qid = int(row["Question ID"])
        if qid not in by_id:
            raise ValueError(f"{path}: no question for MMVP-VLM Question ID {qid} (Questions.csv row {k + 1})")
        line, question = by_id[qid]
        first = rows[k - k % 2]["Question ID"].strip()
        pair = f"{first}-{rows[k - k % 2 + 1]['Question ID'].strip()}"
        meta = {"pair": pair, "type": rows[k - k % 2]["Type"], "image_in_pair": k % 2 + 1}
        items.append(lettered_item(f"{pair}/{k % 2 + 1}", image, question, f"{path} line {line}", meta))
    return items


def lettered_item(item_id: str, image: Path, row: dict[str, str], where: str, meta: dict) -> Item:
    """A question with lettered options from a row of MMVP's columns (Question, Options, Correct Answer)."""
    texts, answer = _lettered_options(row["Options"], row["Correct Answer"], where)
    return Item(
        id=item_id,
        image=image,
        stem=row["Question"],
        command="",
        options=texts,
        keywords=tuple((t,) for t in texts),
        answer=answer,
        parse="letter",
        meta=meta,
    )


def _lettered_options(options: str, correct: str, where: str) -> tuple[tuple[str, ...], int]:
    """'(a) Left (b) Right' and '(a)' -> (('Left', 'Right'), 0); ValueError naming `where` otherwise."""
    found = [(m[1].lower(), m[2].strip()) for m in _MMVP_OPTION.finditer(options)]
    letters = [letter for letter, _ in found]
    if len(found) < 2 or letters != list("abcd"[: len(found)]):
        raise ValueError(f"{where}: options {options!r} are not (a) .. (b) ..")
    match = re.search(r"\(?([a-d])\)?", correct, re.IGNORECASE)
    if not match or match[1].lower() not in letters:
        raise ValueError(f"{where}: correct answer {correct!r}")
    return tuple(text for _, text in found), letters.index(match[1].lower())


MMVP_COLUMNS = ("Index", "Question", "Options", "Correct Answer")
# Published corrections of MMVP's Questions.csv (from its issue tracker; the file itself is unchanged upstream): with
# label_fixes=paper each listed row reads the corrected answer, and only where the row still holds the published
# question and answer. tsb0601/MMVP#14 (and #30; lmms-eval#1018 confirms Index 280 from the images): the elderly
# person sits in 279 and stands in 280. #30 also reports Index 99/100 (elephant tusks), but lmms-eval's check of the
# images disagrees on which row is wrong, so that pair is left as published.
MMVP_ANSWER_FIXES = {
    "279": ("Is the elderly person standing or sitting in the picture?", "(a)", "(b)", "tsb0601/MMVP#14"),
    "280": ("Is the elderly person standing or sitting in the picture?", "(b)", "(a)", "tsb0601/MMVP#14"),
}
_MMVP_OPTION = re.compile(r"\(([a-d])\)\s*(.*?)\s*(?=\([a-d]\)|$)", re.IGNORECASE | re.DOTALL)


def mmvp_items(data_root: Path, *, limit: int, label_fixes: str = "paper") -> tuple[list[Item], dict]:
    """MMVP (Tong et al., 2024) for MLLMs: `MMVP/Questions.csv` (Index, Question, Options, Correct Answer) and
    `MMVP/MMVP Images/<Index>.jpg`; pairs are consecutive rows (1, 2), (3, 4), ...; the prompt is Figure 4's:
    question, options "(a) X (b) Y", then the letter instruction. The paper judged free answers by hand; here a
    generative answer is parsed as an option letter or one option's text, else unparseable."""
    from eval.common import read_csv_rows, require_file

    questions = require_file(data_root / "MMVP" / "Questions.csv", "MMVP questions (MMVP/Questions.csv)")
    rows = [{k: v.strip() for k, v in row.items()} for row in read_csv_rows(questions, MMVP_COLUMNS)]
    if len(rows) % 2:
        raise ValueError(f"{questions}: {len(rows)} rows, but pairs are consecutive rows")
    for line, row in enumerate(rows, 2):
        if not row["Index"].isdigit():
            raise ValueError(f"{questions} line {line}: Index {row['Index']!r} is not a whole number")
    if limit < 0:
        raise ValueError(f"limit {limit}: must be >= 0 (0 = every pair)")
    rows = rows[: 2 * limit] if limit else rows
    applied = []
    if label_fixes == "paper":
        for row in rows:
            question, published, corrected, source = MMVP_ANSWER_FIXES.get(row["Index"], ("", "", "", ""))
            if question and row["Question"] == question and row["Correct Answer"] == published:
                row["Correct Answer"] = corrected
                applied.append({"row": row["Index"], "answer": f"{published} -> {corrected}", "source": source})
    images = [data_root / "MMVP" / "MMVP Images" / f"{int(row['Index'])}.jpg" for row in rows]
    require_images(images, "MMVP images")
    items = []
    for n, (row, image) in enumerate(zip(rows, images, strict=True)):
        where = f"{questions} Index {row['Index']}"
        first = rows[n - n % 2]["Index"]
        meta = {"pair": f"{first}-{rows[n - n % 2 + 1]['Index']}", "image_in_pair": n % 2 + 1, "type": "all"}
        items.append(lettered_item(row["Index"], image, row, where, meta))
    details = {
        "label_fixes": {"mode": label_fixes, "applied": applied},
        "files": [file_record(questions, data_root)],
        "counts": {"rows": len(rows), "pairs": len(rows) // 2},
    }
    return items, details


class _PairRecorder:
    """A scorer that only notes which (image, text) pairs a CLIP benchmark compares (every score 0)."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], None] = {}

    def score_table(self, images, texts):
        return self

    def __call__(self, image: str, text: str) -> float:
        self.pairs[(image, text)] = None
        return 0.0

    def image_cosine(self, first: str, second: str) -> float:
        return 0.0


class PairScores:
    """A scorer whose table holds an MLLM's score of each (image, text) pair (VQAScore), for the CLIP benchmarks."""

    def __init__(self, scores: dict[tuple[str, str], float]):
        self.scores = scores

    def score_table(self, images, texts):
        return self

    def __call__(self, image: str, text: str) -> float:
        return self.scores[(image, text)]

    def image_cosine(self, first: str, second: str) -> float:
        return 0.0  # no image embedding: the cosine metrics are dropped from the result


def vqascore_items(name: str, data_root: Path, *, limit: int, label_fixes: str) -> tuple[list[Item], dict]:
    """One item per (image, caption) pair the CLIP benchmark `name` compares, in its order (found by running the
    benchmark's own code on a recording scorer), so an MLLM and CLIP are scored on the same captions."""
    from eval.benchmarks import get_spec

    spec = get_spec(name)
    recorder = _PairRecorder()
    spec.run(recorder, data_root, label_fixes=label_fixes, limit=limit, scoring="strict")
    items = []
    for image, caption in recorder.pairs:
        path = Path(image)
        shown = path.relative_to(data_root).as_posix() if path.is_relative_to(data_root) else image
        items.append(
            Item(
                id=f"{shown}\t{caption}",
                image=path,
                stem=caption,
                command="",
                options=(VQASCORE_ANSWER,),
                keywords=(),
                answer=0,
                parse="vqascore",
                meta={"caption": caption},
            )
        )
    inputs = spec.inputs(data_root, limit=limit)
    details = {"files": [file_record(f, data_root) for f in inputs.files], "counts": {"pairs": len(items)}}
    return items, details


def benchmark_items(
    name: str,
    data_root: Path,
    *,
    limit: int = 0,
    seed: int = 0,
    label_fixes: str = "paper",
    protocol: str = "generative",
) -> tuple[list[Item], dict]:
    if protocol == "vqascore":
        if name not in CLIP_BENCHMARKS:
            raise ValueError(
                f"{name}: vqascore scores the captions of CLIP-format benchmarks ({', '.join(CLIP_BENCHMARKS)}); "
                "MMVP's own questions for MLLMs are answered by the other protocols"
            )
        return vqascore_items(name, data_root, limit=limit, label_fixes=label_fixes)
    if name in ("whatsup_a", "whatsup_b"):
        return whatsup_items(data_root, name[-1].upper(), label_fixes=label_fixes, limit=limit)
    if name == "mmvp":
        return mmvp_items(data_root, limit=limit, label_fixes=label_fixes)
    if name == "mmvp_vlm":
        return mmvp_vlm_items(data_root, limit=limit, label_fixes=label_fixes)
    m = re.fullmatch(r"(coco|gqa)_spatial_(one|two)", name)
    if m:
        return spatial_items(data_root, m[1], m[2], limit=limit, seed=seed, benchmark=name, label_fixes=label_fixes)
    raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


# ---------------------------------------------------------------- the model


class LlavaRunner:
    """A llava-hf folder loaded with transformers' Llava classes; batched, left-padded scoring and generation."""

    def __init__(
        self,
        model_dir: Path | str | None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        image_aspect_ratio: str = "pad",
        parts: tuple[Any, Any, Any] | None = None,
    ):
        """`model_dir`: a llava-hf folder; or None with `parts` = (model, tokenizer, image processor) already built
        (make gpu-check's LLaVA-1.5-7B-sized random model, which is never written to disk)."""
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio {image_aspect_ratio!r}: expected one of {', '.join(IMAGE_ASPECT_RATIOS)}"
            )
        self.image_aspect_ratio = image_aspect_ratio

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype in (None, "auto"):
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype_name = dtype
        self.dtype = getattr(torch, dtype)
        if parts is not None:
            self.model, self.tokenizer, self.image_processor = parts
            self.model.to(self.device, self.dtype)
        else:
            processor = AutoProcessor.from_pretrained(model_dir)
            self.tokenizer = processor.tokenizer
            self.image_processor = processor.image_processor
            try:
                self.model = LlavaForConditionalGeneration.from_pretrained(model_dir, torch_dtype=self.dtype)
            except ValueError as err:  # a language model transformers runs without SDPA (Phi-3 at transformers 4.44)
                if "scaled_dot_product_attention" not in str(err):
                    raise
                self.model = LlavaForConditionalGeneration.from_pretrained(
                    model_dir, torch_dtype=self.dtype, attn_implementation="eager"
                )
        self.model.to(self.device).eval()
        config = self.model.config
        self.image_token_id = config.image_token_index
        self.eos_id = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (config.pad_token_id if config.pad_token_id is not None else 0)
        self.embed = self.model.get_input_embeddings()
        # A folder written by models.convert_llava: tokens added in conversion are never produced, and the authors'
        # CLS-only token ablation (select_feature cls).
        converted = getattr(config, "clipablate", None) or {}
        self.suppressed = list(converted.get("suppressed_tokens", []))
        self.select_feature = converted.get("select_feature", "")
        self.template = "checkpoint chat template" if self.tokenizer.chat_template else PROMPT_TEMPLATE

    def chat(self, question: str, system: str | None = None) -> str:
        """The prompt of one user turn holding the image and `question`: the model's own chat template (with
        `system` as its system message, when given), else LLaVA-1.5's `USER: <image>\\n{question} ASSISTANT:`."""
        if not self.tokenizer.chat_template:
            return (f"{system} " if system else "") + PROMPT_TEMPLATE.format(question=question)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": f"<image>\n{question}"}
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = self.tokenizer.bos_token
        return text[len(bos) :] if bos and text.startswith(bos) else text  # the tokenizer adds its BOS itself

    def prompt_for(self, item: Item, protocol: str) -> str:
        if protocol == "vqascore":
            return self.chat(VQASCORE_QUESTION.format(caption=item.stem), system=VQASCORE_SYSTEM)
        return self.chat(item.question(protocol))

    # -- inputs

    def prompt_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if ids.count(self.image_token_id) != 1:
            raise ValueError(f"prompt {text!r}: expected one <image> token, found {ids.count(self.image_token_id)}")
        return ids

    def continuation_ids(self, prompt: str, continuation: str, *, eos: bool = True) -> tuple[list[int], int]:
        """Ids of prompt + ' ' + continuation (+ EOS), and how many trailing ids are the continuation's."""
        prompt_ids = self.prompt_ids(prompt)
        full = self.prompt_ids(f"{prompt} {continuation}")
        shared = 0
        while shared < min(len(prompt_ids), len(full)) and prompt_ids[shared] == full[shared]:
            shared += 1
        if shared == len(full):
            raise ValueError(f"continuation {continuation!r} adds no token to the prompt")
        if not eos:
            return full, len(full) - shared
        return full + [self.eos_id], len(full) - shared + 1

    def pixel_values(self, images: Sequence[Path]):
        """The vision tower's input: `pad` (LLaVA-1.5's image_aspect_ratio: pad) squares each image in the
        processor's mean colour first, so the processor's resize and centre crop keep the whole image; `crop` hands
        the image to the processor as it is (resize the short side, crop the centre: a 4:3 image loses its left and
        right eighths)."""
        from PIL import Image

        pictures = []
        for path in images:
            with Image.open(path) as im:
                picture = im.convert("RGB")
            if self.image_aspect_ratio == "pad":
                picture = expand_to_square(picture, mean_colour(self.image_processor))
            pictures.append(picture)
        return self.image_processor(pictures, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)

    def image_features(self, images: Sequence[Path]):
        torch = self.torch
        config = self.model.config
        pixels = self.pixel_values(images)
        with torch.no_grad():
            hidden = self.model.vision_tower(pixels, output_hidden_states=True).hidden_states[
                config.vision_feature_layer
            ]
            if self.select_feature == "cls":  # the authors' ablation: the CLS token alone
                hidden = hidden[:, :1]
            elif config.vision_feature_select_strategy == "default":
                hidden = hidden[:, 1:]
            elif config.vision_feature_select_strategy != "full":
                raise ValueError(f"vision_feature_select_strategy {config.vision_feature_select_strategy!r}")
            return self.model.multi_modal_projector(hidden)

    def _batch(self, sequences: Sequence[list[int]], features: Sequence[Any]):
        """Left-padded embeddings: each sequence's `<image>` token replaced by its image's features (None: the token
        is dropped, the image-free prompt of M3ID). Returns inputs_embeds, attention_mask, position_ids."""
        torch = self.torch
        rows = []
        for ids, feature in zip(sequences, features, strict=True):
            at = ids.index(self.image_token_id)
            before = torch.tensor(ids[:at], device=self.device)
            after = torch.tensor(ids[at + 1 :], device=self.device)
            with torch.no_grad():
                parts = [self.embed(before)] + ([feature.to(self.dtype)] if feature is not None else [])
                parts.append(self.embed(after))
            rows.append(torch.cat(parts))
        width = max(r.shape[0] for r in rows)
        dim = rows[0].shape[1]
        embeds = torch.zeros(len(rows), width, dim, dtype=self.dtype, device=self.device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for k, r in enumerate(rows):
            embeds[k, width - r.shape[0] :] = r
            mask[k, width - r.shape[0] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, positions

    def _forward(self, embeds, mask, positions, cache=None):
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache()
        with self.torch.no_grad():
            out = self.model.language_model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
            if self.suppressed:  # tokens added in conversion: never produced, out of every normalisation
                out.logits[..., self.suppressed] = float("-inf")
            return out

    # -- protocols

    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Path],
        *,
        max_new_tokens: int,
        m3id: dict[str, float] | None = None,
    ) -> list[str]:
        """Greedy decoding (M3ID when `m3id` = {alpha, lam}); stops at EOS or after max_new_tokens."""
        torch = self.torch
        ids = [self.prompt_ids(p) for p in prompts]
        features = list(self.image_features(images))
        branches = [(ids, features)] + ([(ids, [None] * len(ids))] if m3id else [])
        states = []
        for seqs, feats in branches:
            embeds, mask, positions = self._batch(seqs, feats)
            out = self._forward(embeds, mask, positions)
            states.append([out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1:]])
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        generated = []
        for step in range(max_new_tokens):
            l_c = torch.log_softmax(states[0][0], dim=-1)
            if m3id:
                l_u = torch.log_softmax(states[1][0], dim=-1)
                first = int(m3id.get("first_step", M3ID_FIRST_STEP))
                scores = m3id_logits(l_c, l_u, first + step, alpha=m3id["alpha"], lam=m3id["lam"])
            else:
                scores = l_c
            token = scores.argmax(-1)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            generated.append(token)
            finished |= token == self.eos_id
            if finished.all() or step == max_new_tokens - 1:
                break
            with torch.no_grad():
                embeds = self.embed(token[:, None])
            for state in states:
                logits, cache, mask, position = state
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                position = position + 1
                out = self._forward(embeds, mask, position, cache)
                state[:] = [out.logits[:, -1].float(), out.past_key_values, mask, position]
        tokens = torch.stack(generated, dim=1).tolist()
        texts = []
        for row in tokens:
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def option_logprobs(self, sequences: Sequence[tuple[list[int], int]], images: Sequence[Path]) -> list[list[float]]:
        """Per (ids, n) the log-probabilities of its last n tokens given everything before them and the image."""
        torch = self.torch
        unique = list(dict.fromkeys(images))
        features = self.image_features(unique)
        by_image = {p: features[k] for k, p in enumerate(unique)}
        embeds, mask, positions = self._batch([s for s, _ in sequences], [by_image[p] for p in images])
        logits = self._forward(embeds, mask, positions).logits
        width = logits.shape[1]
        result = []
        for k, (ids, n) in enumerate(sequences):
            targets = torch.tensor(ids[-n:], device=self.device)
            logprobs = torch.log_softmax(logits[k, width - n - 1 : width - 1].float(), dim=-1)
            result.append(logprobs.gather(-1, targets[:, None])[:, 0].tolist())
        return result


def mean_colour(image_processor) -> tuple[int, int, int]:
    """The processor's normalisation mean as an RGB colour (LLaVA: tuple(int(x * 255) for x in image_mean))."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def expand_to_square(image, colour: tuple[int, int, int]):
    """LLaVA-1.5's expand2square: the image centred on a square canvas of `colour`, its longer side long."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


# ---------------------------------------------------------------- scoring one batch of questions


def score_items(
    runner: LlavaRunner, items: Sequence[Item], protocol: str, settings: dict, data_root: Path
) -> list[dict]:
    records = []
    base = [
        {
            "id": item.id,
            "image": item.image.relative_to(data_root).as_posix()
            if item.image.is_relative_to(data_root)
            else str(item.image),
            "protocol": protocol,
            "prompt": runner.prompt_for(item, protocol),
            "options": list(item.options),
            "answer": item.answer,
            **item.meta,
        }
        for item in items
    ]
    if protocol == "vqascore":
        sequences = [runner.continuation_ids(r["prompt"], VQASCORE_ANSWER, eos=False) for r in base]
        logprobs = runner.option_logprobs(sequences, [item.image for item in items])
        for record, lp in zip(base, logprobs, strict=True):
            record.update(token_logprobs=lp, p_yes=math.exp(sum(lp) / len(lp)))
            records.append(record)
        return records
    if protocol in ("generative", "m3id"):
        m3id = (
            {"alpha": settings["m3id_alpha"], "lam": settings["m3id_lambda"], "first_step": settings["m3id_first_step"]}
            if protocol == "m3id"
            else None
        )
        outputs = runner.generate(
            [r["prompt"] for r in base],
            [i.image for i in items],
            max_new_tokens=settings["max_new_tokens"],
            m3id=m3id,
        )
        for item, record, output in zip(items, base, outputs, strict=True):
            parsed = parse_answer(item, output)
            keywords = [list(k) for k in item.keywords] if item.parse == "keyword" else "option letter or option text"
            record.update(
                output=output,
                parse=item.parse,
                keywords=keywords,
                prediction=parsed,
                unparseable=parsed is None,
                correct=parsed == item.answer,
            )
            records.append(record)
        return records
    sequences, images, owners = [], [], []
    for k, item in enumerate(items):
        for text in item.continuations(protocol):
            sequences.append(runner.continuation_ids(base[k]["prompt"], text))
            images.append(item.image)
            owners.append(k)
    logprobs = runner.option_logprobs(sequences, images)
    for k, (item, record) in enumerate(zip(items, base, strict=True)):
        mine = [lp for lp, owner in zip(logprobs, owners, strict=True) if owner == k]
        perplexities = [normalised_perplexity(lp) for lp in mine]
        prediction = unique_best(perplexities, lowest=True)
        record.update(
            continuations=[f"{t}</s>" for t in item.continuations(protocol)],
            token_logprobs=mine,
            token_counts=[len(lp) for lp in mine],
            perplexity=perplexities,
            prediction=prediction,
            correct=prediction == item.answer,
        )
        if protocol == "relaxed":
            record["probabilities"] = option_probabilities(perplexities)
        records.append(record)
    return records


# ---------------------------------------------------------------- metrics (the names and chance values of CLIP eval)


def whatsup_metrics(records: list[dict], subset: str, protocol: str) -> tuple[dict, dict, dict]:
    spec = whatsup.SUBSETS[subset]
    four = {r["row"]: r for r in records if r["kind"] == "four_way"}
    two = {r["row"]: r for r in records if r["kind"] == "two_way"}
    groups: dict[tuple[str, ...], dict[str, str]] = {}
    for r in four.values():
        groups.setdefault(tuple(r["objects"]), {})[r["relation"]] = r["row"]
    n = len(four)
    ok = {row: r["correct"] for row, r in four.items()}
    pairs = sum(ok[g[a]] and ok[g[b]] for g in groups.values() for _, a, b in spec.axes)
    sets = sum(all(ok[row] for row in g.values()) for g in groups.values())
    metrics = {"indiv": percent(sum(ok.values()), n), "pairs": percent(pairs, n / 2), "set_of_4": percent(sets, n / 4)}
    chance: dict[str, float | None] = dict(whatsup.CHANCE_FOUR_WAY)
    denominators = {"indiv": n, "pairs": n // 2, "set_of_4": n // 4}
    for axis, first, second in spec.axes:
        indiv, pair, relaxed = [], [], []
        for g in groups.values():
            one, other = two[g[first]], two[g[second]]
            indiv += [one["correct"], other["correct"]]
            pair.append(one["correct"] and other["correct"])
            if protocol == "relaxed":
                relaxed.append(relaxed_pair_correct(one["probabilities"], other["probabilities"], 0))
        metrics[f"{axis}/indiv"] = percent(sum(indiv), len(indiv))
        metrics[f"{axis}/pairs"] = percent(sum(pair), len(pair))
        chance[f"{axis}/indiv"], chance[f"{axis}/pairs"] = 50.0, 25.0
        denominators.update({f"{axis}/indiv": len(indiv), f"{axis}/pairs": len(pair)})
        if protocol == "relaxed":
            metrics[f"{axis}/relaxed_pairs"] = percent(sum(relaxed), len(relaxed))
            chance[f"{axis}/relaxed_pairs"] = 50.0
            denominators[f"{axis}/relaxed_pairs"] = len(relaxed)
    return metrics, chance, denominators


def mmvp_metrics(records: list[dict], protocol: str) -> tuple[dict, dict, dict]:
    pairs: dict[str, dict[int, dict]] = {}
    for r in records:
        pairs.setdefault(r["pair"], {})[r["image_in_pair"]] = r
    patterns = list(dict.fromkeys(r["type"] for r in records))
    fields = [("pairs", 25.0)] + ([("relaxed_pairs", 50.0)] if protocol == "relaxed" else [])
    metrics: dict[str, float] = {"indiv": percent(sum(r["correct"] for r in records), len(records))}
    chance: dict[str, float | None] = {"indiv": 50.0}
    denominators: dict[str, int] = {"indiv": len(records)}
    for name, chance_value in fields:
        per_pattern = {}
        for pattern in patterns:
            outcomes = []
            for p in pairs.values():
                if p[1]["type"] != pattern:
                    continue
                if name == "pairs":
                    outcomes.append(p[1]["correct"] and p[2]["correct"])
                elif p[1]["answer"] != p[2]["answer"]:  # caption 1: image 1's correct option; else undefined
                    first = p[1]["answer"]
                    outcomes.append(relaxed_pair_correct(p[1]["probabilities"], p[2]["probabilities"], first))
            per_pattern[pattern] = percent(sum(outcomes), len(outcomes))
            key = f"{name}/{mmvp_vlm.metric_key(pattern)}"
            metrics[key], chance[key], denominators[key] = per_pattern[pattern], chance_value, len(outcomes)
        metrics[f"{name}/mean"] = mean(list(per_pattern.values()))
        chance[f"{name}/mean"] = chance_value
    return metrics, chance, denominators


def benchmark_metrics(name: str, records: list[dict], protocol: str) -> tuple[dict, dict, dict]:
    if name.startswith("whatsup_"):
        metrics, chance, denominators = whatsup_metrics(records, name[-1].upper(), protocol)
    elif name in ("mmvp_vlm", "mmvp"):
        metrics, chance, denominators = mmvp_metrics(records, protocol)
    else:
        metrics = {"indiv": percent(sum(r["correct"] for r in records), len(records))}
        chance, denominators = {"indiv": 50.0}, {"indiv": len(records)}
    if protocol in ("generative", "m3id"):
        metrics["unparseable"] = percent(sum(r["unparseable"] for r in records), len(records))
        chance["unparseable"] = None
        denominators["unparseable"] = len(records)
    return metrics, chance, denominators


class Stopped(RuntimeError):
    """Raised after `stop_after` batches (tests; a simulated interruption)."""


# ---------------------------------------------------------------- processes (accelerate launch, torchrun)


def _raise_if_any_failed(error: Exception | None, what: str) -> None:
    """Every rank learns whether any rank failed (a collective, so no rank is left waiting at the next one)."""
    rank, world = rank_and_world()
    if world > 1:
        import torch.distributed as dist

        errors: list[Any] = [None] * world
        dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
        if error is None:
            failed = [(r, e) for r, e in enumerate(errors) if e is not None]
            if failed:
                r, message = failed[0]
                raise RuntimeError(f"{what}: rank {r} failed: {message}")
    if error is not None:
        raise error


# ---------------------------------------------------------------- one benchmark, resumable


def settings_path(out: Path, benchmark: str) -> Path:
    return out / f".{benchmark}.llava-settings.json"


def rank_scores_path(out: Path, benchmark: str, rank: int) -> Path:
    """Where rank `rank` of a multi-process run appends its records (merged into the scores file at the end)."""
    return out / f"{benchmark}.scores.rank{rank}.jsonl"


def _rank_files(out: Path, benchmark: str) -> list[Path]:
    import glob

    return sorted(out.glob(f"{glob.escape(benchmark)}.scores.rank*.jsonl"))


def _read_records(path: Path) -> list[dict]:
    records = []
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut short by an interruption, and anything after it
    return records


def _stored_records(out: Path, benchmark: str) -> dict[str, dict]:
    """The complete records of the scores file and of every rank file (any number of processes wrote them)."""
    done: dict[str, dict] = {}
    for path in [scores_path(out, benchmark), *_rank_files(out, benchmark)]:
        done.update((r["id"], r) for r in _read_records(path))
    return done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_benchmark(
    runner: LlavaRunner | None,
    name: str,
    data_root: Path,
    out: Path,
    *,
    protocol: str,
    settings: dict,
    limit: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    stop_after: int | None = None,
    get_runner: Callable[[], LlavaRunner] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Scores `name` (or reuses its finished result), appending records batch by batch; returns the JSON record.

    Under several processes (a torch.distributed group) rank r scores the questions with index % world == r and
    appends to `<name>.scores.rank{r}.jsonl`; rank 0 alone decides what is already scored (from the scores file
    and every rank file, whatever number of processes wrote them) and, after all ranks finish, merges the records
    in the planned order and writes the result files as one process would."""
    data_root, out = Path(data_root), Path(out)
    rank, world = rank_and_world()
    items: list[Item] = []
    details: dict = {}
    error: Exception | None = None
    try:
        items, details = benchmark_items(
            name,
            data_root,
            limit=limit,
            seed=settings["seed"],
            label_fixes=settings["label_fixes"],
            protocol=protocol,
        )
    except Exception as err:  # every rank learns of it below
        error = err
    _raise_if_any_failed(error, name)
    key = {**settings, "benchmark": name, "files": details["files"]}
    scores = scores_path(out, name)

    def plan() -> tuple[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        existing = read_result(out, name)
        if existing and existing.get("llava_settings") == key and existing.get("limit") == limit:
            log(f"{name}: reused {out / (name + '.json')}")
            return "reuse", existing
        done: dict[str, dict] = {}
        stored = settings_path(out, name)
        if stored.is_file() and json.loads(stored.read_text()) == key:
            done = _stored_records(out, name)
        else:
            if scores.exists() or _rank_files(out, name):
                log(f"{name}: settings changed, rescoring from the start")
            stored.write_text(json.dumps(key, indent=1) + "\n")
        planned = {item.id: k for k, item in enumerate(items)}
        # One scores file with only the complete records (drops a cut-off last line), the ranks' files folded in.
        kept = sorted(done.values(), key=lambda r: planned.get(r["id"], len(planned)))
        _write_atomic(scores, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        for path in _rank_files(out, name):
            path.unlink()
        ids = [i for i in done if i in planned]
        if done:
            log(f"{name}: {len(ids)} of {len(items)} questions already scored, resuming")
        return "score", ids

    kind, value = decided_on_rank0(plan)
    if kind == "reuse":
        return value
    done_ids = set(value)
    mine = [item for k, item in enumerate(items) if k % world == rank]
    todo = [item for item in mine if item.id not in done_ids]
    bar = None
    if progress and todo and rank == 0:
        from tqdm import tqdm

        share = f", rank 0 of {world}" if world > 1 else ""
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{name} [{protocol}{share}]", file=sys.stderr)
    target = scores if world == 1 else rank_scores_path(out, name, rank)
    try:
        batches = 0
        with open(target, "a") as f:
            for start in range(0, len(mine), batch_size):
                chunk = [item for item in mine[start : start + batch_size] if item.id not in done_ids]
                if not chunk:
                    continue
                if stop_after is not None and batches >= stop_after:
                    raise Stopped(f"{name}: stopped after {batches} batches")
                if runner is None:
                    runner = get_runner() if get_runner else None
                    if runner is None:
                        raise ValueError("no model to score with")
                records = score_items(runner, chunk, protocol, settings, data_root)
                f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
                f.flush()
                os.fsync(f.fileno())
                batches += 1
                if bar:
                    bar.update(len(records))
    except Exception as err:  # every rank learns of it below
        error = err
    finally:
        if bar:
            bar.close()
    _raise_if_any_failed(error, name)

    def finish() -> dict:
        done = _stored_records(out, name)
        missing = [item.id for item in items if item.id not in done]
        if missing:
            raise RuntimeError(f"{name}: {len(missing)} questions have no scores record, e.g. {missing[0]!r}")
        records = [done[item.id] for item in items]
        if protocol == "vqascore":
            result = vqascore_result(name, records, items, data_root, settings["label_fixes"], limit)
            extra = {"llava_settings": key, "limit": limit, "partial": bool(limit), "scoring_version": SCORING_VERSION}
            write_result(result, out, extra)  # CLIP eval's files: its examples, with P(yes) as the scores
            for path in _rank_files(out, name):
                path.unlink()
            return read_result(out, name) or {}
        metrics, chance, denominators = benchmark_metrics(name, records, protocol)
        unparseable = [r["id"] for r in records if r.get("unparseable")]
        result = BenchmarkResult(
            name,
            metrics,
            chance,
            records,
            {
                **details,
                "model_kind": "llava",
                "protocol": protocol,
                "protocol_rule": PROTOCOL_RULES[protocol],
                "prompt_template": settings.get("chat_template") or PROMPT_TEMPLATE,
                "tie_rule": PROTOCOL_RULES[protocol],
                "denominators": denominators,
                "unparseable": {"count": len(unparseable), "ids": unparseable}
                if protocol in ("generative", "m3id")
                else None,
                "units": "percent",
            },
        )
        extra = {"llava_settings": key, "limit": limit, "partial": bool(limit), "scoring_version": SCORING_VERSION}
        write_result(result, out, extra)  # the scores file in the planned order, then the JSON
        for path in _rank_files(out, name):
            path.unlink()
        return read_result(out, name) or {}

    return decided_on_rank0(finish)


def vqascore_result(
    name: str, records: list[dict], items: Sequence[Item], data_root: Path, label_fixes: str, limit: int
) -> BenchmarkResult:
    """The CLIP benchmark `name` decided on the MLLM's P(yes) of each pair (strict '>'), as CLIP eval's result;
    cosine metrics (no image embedding here) are left out."""
    from eval.benchmarks import get_spec

    scores = {(str(item.image), item.stem): record["p_yes"] for item, record in zip(items, records, strict=True)}
    result = get_spec(name).run(PairScores(scores), data_root, label_fixes=label_fixes, limit=limit, scoring="strict")
    result.metrics = {k: v for k, v in result.metrics.items() if not k.endswith("cosine")}
    result.chance = {k: v for k, v in result.chance.items() if k in result.metrics}
    for example in result.examples:
        example.pop("image_cosine", None)
        if isinstance(example.get("pair"), dict):
            example["pair"].pop("image_cosine", None)
    result.details.update(
        model_kind="llava",
        protocol="vqascore",
        protocol_rule=PROTOCOL_RULES["vqascore"],
        units="percent; the scores are P(yes)",
    )
    return result


def model_record(model_dir: Path) -> dict:
    config = model_dir / "config.json"
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {
        "path": str(model_dir.resolve()),
        "config_sha256": sha256_file(config) if config.is_file() else None,
        "weights": [{"name": p.name, "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in weights],
    }


class ModelUnavailable(FileNotFoundError):
    """The model named is not on this machine, or its folder cannot be loaded; the message says what to do."""


# What a llava-hf folder must hold to load: the config, the weights, the image processor and the tokenizer.
MODEL_FILES = {
    "config": ("config.json",),
    "image processor": ("preprocessor_config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"),
}


def check_model_folder(folder: Path, label: str) -> None:
    """Every problem of a llava-hf folder at once, before any result file is written (ModelUnavailable)."""
    from models.convert_llava import is_original_layout

    if is_original_layout(folder):
        raise ModelUnavailable(
            f"{label}: {folder} is an original-layout LLaVA checkpoint (mm_vision_tower, mm_projector): convert it "
            f"once with `python -m models.convert_llava {folder} DST` and pass --model DST. Nothing was scored."
        )
    problems = []
    for what, names in MODEL_FILES.items():
        if not any((folder / name).is_file() for name in names):
            problems.append(f"no {what} file ({' or '.join(names)})")
    config = folder / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_text())
        except ValueError as err:
            problems.append(f"config.json does not parse: {err}")
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")] if folder.is_dir() else []
    if not weights:
        problems.append("no weights (*.safetensors or *.bin)")
    problems += [f"weights file {p.name} is empty" for p in weights if p.stat().st_size == 0]
    if problems:
        raise ModelUnavailable(
            f"{label}: {folder} cannot be loaded as a llava-hf model: {'; '.join(problems)}. Nothing was scored."
        )


def checkpoint_chat_template(folder: Path) -> str | None:
    """The chat template the folder's tokenizer carries (tokenizer_config.json), which the runner's prompts use."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("chat_template") or None


def resolve_model(model: Path | str) -> Path:
    """A llava-hf folder: a path; a Hugging Face name (`llava-hf/llava-1.5-7b-hf`) found in the local hub cache,
    offline; or `tiny-llava`, this project's tiny random stand-in, built in the model cache. A name not in the
    cache, or a folder that cannot load, raises ModelUnavailable saying what to download and where."""
    if str(model) == TINY_LLAVA:
        from models.cache import resolve_cache_dir

        return tiny_llava_folder(resolve_cache_dir())
    label, path = str(model), Path(model)
    if path.exists():
        if not path.is_dir():
            raise ModelUnavailable(f"{label}: a file; --model takes a llava-hf folder or a Hugging Face name")
        check_model_folder(path, label)
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", label):
        raise ModelUnavailable(f"{label}: no such folder (--model takes a llava-hf folder or a Hugging Face name)")
    from huggingface_hub import constants, snapshot_download

    try:
        folder = Path(snapshot_download(label, local_files_only=True))
    except Exception:  # huggingface_hub's LocalEntryNotFoundError and kin: not in the local cache
        raise ModelUnavailable(
            f"{label} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}), and models are not "
            f"downloaded here. On a machine with hub access run `huggingface-cli download {label}` (with HF_HOME "
            "pointing at the cache this machine reads, or copy the cache folder models--"
            f"{label.replace('/', '--')} into it), or pass --model with a local llava-hf folder. Original-layout "
            "checkpoints (liuhaotian/llava-v1.5-7b, the LLaVA++ Phi-3-V and LLaMA-3-V) are converted once with "
            "`python -m models.convert_llava SRC DST`. Nothing was scored."
        ) from None
    check_model_folder(folder, label)
    return folder


def run(
    model: Path | str,
    data_root: Path | str,
    out: Path | str,
    *,
    benchmarks: Sequence[str] | None = None,
    protocol: str = "generative",
    limit: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    seed: int = 0,
    label_fixes: str = "paper",
    m3id_alpha: float = M3ID_ALPHA,
    m3id_lambda: float = M3ID_LAMBDA,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    runner: LlavaRunner | None = None,
    image_aspect_ratio: str = "pad",
    m3id_first_step: int = M3ID_FIRST_STEP,
) -> dict[str, dict]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if benchmarks is None:  # vqascore scores CLIP's benchmarks (mmvp_clip included); the others answer questions
        benchmarks = tuple(CLIP_BENCHMARKS) if protocol == "vqascore" else BENCHMARKS
    model, data_root, out = resolve_model(model), Path(data_root), Path(out)
    holder: dict[str, LlavaRunner] = {}
    if runner is not None:
        holder["runner"] = runner

    def get_runner() -> LlavaRunner:
        if "runner" not in holder:
            holder["runner"] = LlavaRunner(model, device=device, dtype=dtype, image_aspect_ratio=image_aspect_ratio)
        return holder["runner"]

    import torch

    rank_device = init_distributed()  # joins a launcher's process group (accelerate launch, torchrun)
    if rank_device.type == "cuda" and device in (None, "cuda"):
        device = str(rank_device)  # each rank its own GPU
    resolved_device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = {
        "llava_scoring_version": LLAVA_SCORING_VERSION,
        "model": model_record(model),
        "protocol": protocol,
        "seed": seed,
        "label_fixes": label_fixes,
        "max_new_tokens": max_new_tokens,
        "m3id_alpha": m3id_alpha,
        "m3id_lambda": m3id_lambda,
        "m3id_first_step": m3id_first_step,
        "image_aspect_ratio": image_aspect_ratio if runner is None else runner.image_aspect_ratio,
        "chat_template": checkpoint_chat_template(model),  # None: LLaVA-1.5's USER/ASSISTANT template
        "device": torch.device(resolved_device).type,
        "dtype": dtype
        if dtype not in (None, "auto")
        else ("bfloat16" if resolved_device.startswith("cuda") else "float32"),
        "data_root": str(data_root.resolve()),
    }
    results = {}
    for name in benchmarks:
        results[name] = evaluate_benchmark(
            holder.get("runner"),
            name,
            data_root,
            out,
            protocol=protocol,
            settings=settings,
            limit=limit,
            batch_size=batch_size,
            progress=progress,
            stop_after=stop_after,
            get_runner=get_runner,
        )
    label = f"{model.name}:{protocol}"
    if rank_and_world()[0] == 0:
        write_summary(out, [SummaryRow(label, 0, results)], list(results), f"LLaVA eval ({label})")
    return results


# ---------------------------------------------------------------- CLIP and LLaVA rows in one table


@dataclass(frozen=True)
class Column:
    header: str
    benchmarks: tuple[str, ...]  # the first the row has supplies the cell (MMVP: an MLLM's mmvp, CLIP's mmvp_clip)
    metric: str
    # MLLM protocols whose result fits the column (None: any); a CLIP result (no protocol) always fits
    protocols: tuple[str, ...] | None = None


def _two_way(subset: str, axis: str, label: str) -> list[Column]:
    name = f"whatsup_{subset.lower()}"
    return [Column(f"{subset} {label} {kind}", (name,), f"{axis}/{kind}") for kind in ("indiv", "pairs")]


TABLE1 = [
    *_two_way("A", "left_right", "Left/Right"),
    *_two_way("A", "on_under", "On/Under"),
    *_two_way("B", "left_right", "Left/Right"),
    *_two_way("B", "front_behind", "Front/Behind"),
]
MMVP = ("mmvp", "mmvp_clip")
# The paper's layouts: (title, columns). Tables 12 and 13 are Tables 1 and 2 with a row per MLLM.
PAPER_TABLES: dict[str, tuple[str, list[Column]]] = {
    "table1": ("Table 1 / 12: What'sUp two-way subsets (individual / pairs)", TABLE1),
    "table2": (
        "Table 2 / 13: four-way What'sUp, COCO-spatial and GQA-spatial",
        [
            Column("A indiv", ("whatsup_a",), "indiv"),
            Column("A pairs", ("whatsup_a",), "pairs"),
            Column("A set of 4", ("whatsup_a",), "set_of_4"),
            Column("B indiv", ("whatsup_b",), "indiv"),
            Column("B pairs", ("whatsup_b",), "pairs"),
            Column("B set of 4", ("whatsup_b",), "set_of_4"),
            Column("COCO one-obj", ("coco_spatial_one",), "indiv"),
            Column("COCO two-obj", ("coco_spatial_two",), "indiv"),
            Column("GQA one-obj", ("gqa_spatial_one",), "indiv"),
            Column("GQA two-obj", ("gqa_spatial_two",), "indiv"),
        ],
    ),
    "table3": (
        "Table 3: MMVP and MMVP-VLM pair accuracy (MMVP-VLM: mean over patterns; CLIP's MMVP: mmvp_clip)",
        [Column("MMVP", MMVP, "pairs/mean"), Column("MMVP-VLM", ("mmvp_vlm",), "pairs/mean")],
    ),
    "table6": (
        "Table 6: MMVP individual and pair accuracy of MLLMs, greedy and M3ID decoding",
        [
            Column("MMVP indiv", ("mmvp",), "indiv", ("generative", "m3id")),
            Column("MMVP pairs", ("mmvp",), "pairs/mean", ("generative", "m3id")),
        ],
    ),
    "table7": (
        "Table 7: MMVP pair accuracy, original vs relaxed constraints (MLLMs: generative vs relaxed results)",
        [
            Column("original", MMVP, "pairs/mean", ("generative",)),
            Column("relaxed", MMVP, "relaxed_pairs/mean", ("relaxed",)),
        ],
    ),
}
# Table 1's last row: CLIP's average image-pair cosine per subset, under the Indiv. column of each.
TABLE1_COSINES = {
    "A Left/Right indiv": ("whatsup_a", "left_right/image_pair_cosine"),
    "A On/Under indiv": ("whatsup_a", "on_under/image_pair_cosine"),
    "B Left/Right indiv": ("whatsup_b", "left_right/image_pair_cosine"),
    "B Front/Behind indiv": ("whatsup_b", "front_behind/image_pair_cosine"),
}
# Every result a table row can hold: CLIP eval's benchmarks and MMVP for MLLMs.
RESULT_NAMES = (*CLIP_BENCHMARKS, "mmvp")


def table_cell(row: SummaryRow, column: Column) -> tuple[float | None, str | None]:
    """(value, why there is none): the column's first benchmark the row has, if its protocol fits the column."""
    name = next((b for b in column.benchmarks if b in row.results), None)
    if name is None:
        return None, None
    record = row.results[name]
    protocol = record.get("protocol")
    if protocol is not None and column.protocols is not None and protocol not in column.protocols:
        return None, (
            f"{row.checkpoint} / {column.header}: a {protocol} result; this column takes "
            f"{' or '.join(column.protocols)} results of MLLMs (or CLIP's)"
        )
    return record.get("metrics", {}).get(column.metric), None


def load_rows(labelled: Sequence[tuple[str, Path]]) -> list[SummaryRow]:
    """One summary row per result folder (CLIP eval's checkpoint folder or an eval.llava --out folder)."""
    rows = []
    for label, folder in labelled:
        results = {name: r for name in RESULT_NAMES if (r := read_result(Path(folder), name)) is not None}
        if not results:
            raise FileNotFoundError(f"{folder}: no <benchmark>.json result files")
        rows.append(SummaryRow(label, 0, results))
    return rows


def comparability_notes(rows: Sequence[SummaryRow]) -> list[str]:
    """What makes rows of one table not comparable: a benchmark scored on different files (their sha256 differ)
    or only on its first examples (`--limit`, "partial")."""
    notes = []
    for name in RESULT_NAMES:
        by_files: dict[tuple, list[str]] = {}
        for row in rows:
            record = row.results.get(name)
            if record is None:
                continue
            files = tuple(sorted((f.get("path", ""), f.get("sha256", "")) for f in record.get("files") or []))
            by_files.setdefault(files, []).append(row.checkpoint)
            if record.get("partial"):
                notes.append(f"{name}: {row.checkpoint} was scored on its first examples only (partial)")
        if len(by_files) > 1:
            groups = "; ".join(", ".join(labels) for labels in by_files.values())
            notes.append(f"{name}: the rows were scored on different benchmark files (sha256 differ): {groups}")
    return notes


def paper_tables(rows: Sequence[SummaryRow]) -> str:
    """Markdown in the paper's layouts (Tables 1/12, 2/13, 3, 6, 7); '–' where a row lacks the result or holds one
    of a protocol the column does not take (listed under the table); last row: chance."""
    from eval.report import _shown

    lines: list[str] = []
    for key, (title, columns) in PAPER_TABLES.items():
        lines += [f"## {title}", "", "| model | " + " | ".join(c.header for c in columns) + " |"]
        lines.append("|---" * (len(columns) + 1) + "|")
        chance: list[float | None] = [None] * len(columns)
        why: list[str] = []
        for row in rows:
            cells = []
            for k, column in enumerate(columns):
                value, reason = table_cell(row, column)
                cells.append(_shown(value, column.metric))
                why += [reason] if reason else []
                name = next((b for b in column.benchmarks if b in row.results), None)
                if chance[k] is None and name is not None:
                    chance[k] = row.results[name].get("chance", {}).get(column.metric)
            lines.append(f"| {row.checkpoint} | " + " | ".join(cells) + " |")
        if key == "table1":
            for row in rows:
                cosines = {h: row.results.get(b, {}).get("metrics", {}).get(m) for h, (b, m) in TABLE1_COSINES.items()}
                if any(v is not None for v in cosines.values()):
                    cells = [f"{cosines[c.header]:.3f}" if cosines.get(c.header) is not None else "" for c in columns]
                    lines.append(f"| avg. image-pair cosine ({row.checkpoint}) | " + " | ".join(cells) + " |")
        shown = [_shown(c, col.metric) for c, col in zip(chance, columns, strict=True)]
        lines += ["| random chance | " + " | ".join(shown) + " |", ""]
        lines += [f"- – {reason}" for reason in why] + ([""] if why else [])
    return "\n".join(lines)


def table_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.llava table", description="CLIP and LLaVA result folders in one table."
    )
    parser.add_argument("results", nargs="+", help="LABEL=FOLDER (a folder of <benchmark>.json files)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    labelled = []
    for spec in args.results:
        label, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"{spec!r}: expected LABEL=FOLDER")
        labelled.append((label, Path(folder)))
    rows = load_rows(labelled)
    write_summary(args.out, rows, list(BENCHMARKS), "CLIP and LLaVA")
    notes = comparability_notes(rows)
    for note in notes:
        print(f"table: not comparable: {note}", file=sys.stderr)
    warnings = "".join(f"- not comparable: {note}\n" for note in notes)
    (args.out / "paper_tables.md").write_text(warnings + ("\n" if warnings else "") + paper_tables(rows))
    print(f"wrote {args.out / 'summary.md'}, {args.out / 'summary.csv'}, {args.out / 'paper_tables.md'}")
    return 0


def log_llava_to_wandb(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """One W&B eval run: the flattened settings of the results as its config, each benchmark's metrics, a table."""
    from types import SimpleNamespace

    from eval.report import log_to_wandb
    from train.typed_config import flatten

    label = f"{Path(str(args.model)).name}-{args.protocol}"
    settings = next((r.get("llava_settings", {}) for r in results.values()), {})
    wandb_cfg = SimpleNamespace(mode=args.wandb_mode, project=args.wandb_project, entity="", group=args.wandb_group)
    row = SummaryRow(label, 0, results)
    log_to_wandb(wandb_cfg, label, Path(args.out), [row], list(results), config=flatten(settings))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["table"]:
        return table_main(argv[1:])
    protocols = "\n".join(f"  {name}: {rule}" for name, rule in PROTOCOL_RULES.items())
    parser = argparse.ArgumentParser(
        prog="python -m eval.llava",
        description=__doc__.split("\n\n")[0],
        epilog=f"protocols (--protocol):\n{protocols}\n\nthe paper's tables from result folders: python -m eval.llava "
        "table LABEL=FOLDER ... (python -m eval.llava table --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True, help=f"a llava-hf format folder, or {TINY_LLAVA} (a tiny random stand-in)"
    )
    parser.add_argument("--data-root", required=True, type=Path, help="the benchmarks' root (the world's bench/)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        choices=(*BENCHMARKS, "mmvp_clip"),
        help=f"default: {' '.join(BENCHMARKS)}; with --protocol vqascore: {' '.join(CLIP_BENCHMARKS)}",
    )
    parser.add_argument("--protocol", default="generative", choices=PROTOCOLS)
    parser.add_argument("--limit", type=int, default=0, help="first N examples per benchmark (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seeds the 50%% option swap of COCO/GQA-spatial")
    parser.add_argument("--label-fixes", default="paper", choices=("paper", "none"))
    parser.add_argument("--m3id-alpha", type=float, default=M3ID_ALPHA)
    parser.add_argument("--m3id-lambda", type=float, default=M3ID_LAMBDA)
    parser.add_argument(
        "--m3id-first-step",
        type=int,
        default=M3ID_FIRST_STEP,
        choices=(0, 1),
        help="t of the first generated token in M3ID's weight (the paper does not say; 0 = no correction there)",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--image-aspect-ratio",
        default="pad",
        choices=IMAGE_ASPECT_RATIOS,
        help="pad (default): square each image in the processor's mean colour first, as LLaVA-1.5 and the authors' "
        "release do; crop: the llava-hf processor alone (resize, centre crop: a 4:3 image loses its side eighths)",
    )
    parser.add_argument(
        "--wandb-mode",
        default="disabled",
        choices=("disabled", "offline", "online"),
        help="log the settings, every benchmark's metrics and a summary table to W&B, as eval.run does for a run "
        "(offline: into <out>/wandb, for `wandb sync`)",
    )
    parser.add_argument("--wandb-project", default="clipablate")
    parser.add_argument("--wandb-group", default="", help="default: the label model:protocol")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="torch threads per process (0 = auto: this process's share of the cores; $OMP_NUM_THREADS wins)",
    )
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: an interruption
    args = parser.parse_args(argv)
    from train.cpu_threads import apply_threads, choose_threads, processes_on_host

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    apply_threads(choose_threads(args.cpu_threads, processes_on_host(world), 0))
    try:
        results = run(
            args.model,
            args.data_root,
            args.out,
            benchmarks=args.benchmarks,
            protocol=args.protocol,
            limit=args.limit,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            label_fixes=args.label_fixes,
            m3id_alpha=args.m3id_alpha,
            m3id_lambda=args.m3id_lambda,
            device=args.device,
            dtype=args.dtype,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            image_aspect_ratio=args.image_aspect_ratio,
            m3id_first_step=args.m3id_first_step,
        )
        rank = rank_and_world()[0]
    except ModelUnavailable as err:  # the user's input: one paragraph, no traceback
        print(f"eval.llava: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if rank != 0:
        return 0
    if args.wandb_mode != "disabled":
        log_llava_to_wandb(args, results)
    for name, record in results.items():
        shown = ", ".join(f"{k} {v:.1f}" for k, v in record.get("metrics", {}).items())
        print(f"{name}: {shown}")
    return 0


if __name__ == "__main__":
    exit_process(main())
