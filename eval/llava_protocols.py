"""LLaVA-1.5 evaluation protocols, model-free parts: the questions (paper, Table 8), answer parsing, perplexity
normalisation, the relaxed-constraints pair rule and the M3ID correction rule (Section 5.1, Appendix A).

Everything here is pure Python / small torch functions, so it is unit-tested without a model.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"  # LLaVA-1.5 (Appendix A.1)
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."  # Appendix A.2, Figure 4
LETTERS = "abcd"
PROTOCOLS = ("generative", "choice", "relaxed", "m3id", "vqascore")
# VQAScore (Lin et al. 2024, t2v_metrics), as the authors' eval_vqa_score.py scores LLaVA-1.5: P("Yes") after this
# question, in the model's conversation with its system message (LLaVA-1.5's vicuna_v1).
VQASCORE_QUESTION = 'Does this figure show "{caption}"? Please answer yes or no.'
VQASCORE_ANSWER = "Yes"
VQASCORE_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
M3ID_ALPHA = 0.6  # Table 6
M3ID_LAMBDA = 0.15
# t of the first generated token; the paper does not say. 1 (default): the correction applies from the first token;
# 0: w_0 = 0, no correction at the first token. `eval.llava --m3id-first-step`, recorded in every result.
M3ID_FIRST_STEP = 1

PROTOCOL_RULES = {
    "generative": (
        "greedy decoding of 'USER: <image>\\n{question} ASSISTANT:' with the question of Table 8; the answer is the "
        "one option whose keywords (whole words, case-insensitive) occur in the output; an output naming no option "
        "or several is unparseable, counted as wrong and listed, never guessed"
    ),
    "m3id": (
        "as generative, but each greedy step takes argmax of l = l_c + w_t (l_c - l_u) where l_c, l_u are the "
        "next-token log-probabilities with and without the image, w_t = (1 - exp(-lambda t)) / exp(-lambda t), "
        "t = m3id_first_step (1 by default, recorded) for the first generated token, applied only when "
        "max_k l_c < log(alpha) (else l = l_c)"
    ),
    "choice": (
        "multiple choice: the question with lettered options and 'Answer with the option's letter from the given "
        "choices directly.'; the answer is the option whose letter continuation ('A</s>', 'B</s>', ...) has the "
        "lowest perplexity; an exact tie has no answer and counts as wrong"
    ),
    "vqascore": (
        "VQAScore (the authors' eval_vqa_score.py, t2v_metrics): for every (image, caption) pair a CLIP-format "
        "benchmark compares, P('Yes') = exp(mean log p of the answer's tokens) after '"
        + VQASCORE_SYSTEM
        + " USER: <image>\\n"
        + VQASCORE_QUESTION
        + " ASSISTANT:'; the benchmark then decides exactly as for CLIP on these scores (the same metrics, the caption "
        "options it compares, a strict '>': a tie is wrong; MMVP-VLM and mmvp_clip with their official rule)"
    ),
    "relaxed": (
        "relaxed constraints (Section 5.2): the perplexity of each full option '(a) Option</s>' normalised by its "
        "token count, ppl = exp(-mean log p); p(option | image) = (1/ppl) normalised over the image's options; "
        "individual: the most probable option (a tie counts as wrong); pair (i1, c1), (i2, c2): correct iff "
        "p(c1 | i1) > p(c1 | i2) (strict)"
    ),
}


@dataclass(frozen=True)
class Item:
    """One question about one image."""

    id: str
    image: Path
    stem: str  # the question without its command
    command: str  # Table 8's command after the question (generative); "" when the stem carries lettered options
    options: tuple[str, ...]  # answer texts in displayed order
    keywords: tuple[tuple[str, ...], ...]  # per displayed option, for keyword matching
    answer: int  # displayed index of the correct option
    parse: str = "keyword"  # "keyword" or "letter" (MMVP-VLM, whose question asks for a letter)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def options_text(self) -> str:
        return " ".join(f"({LETTERS[k]}) {capitalise(o)}" for k, o in enumerate(self.options))

    def question(self, protocol: str) -> str:
        if protocol in ("generative", "m3id") and self.parse == "keyword":
            return f"{self.stem} {self.command}".strip()
        return f"{self.stem} {self.options_text()}\n{LETTER_INSTRUCTION}"

    def prompt(self, protocol: str) -> str:
        if protocol == "vqascore":  # the stem is the caption
            question = VQASCORE_QUESTION.format(caption=self.stem)
            return f"{VQASCORE_SYSTEM} {PROMPT_TEMPLATE.format(question=question)}"
        return PROMPT_TEMPLATE.format(question=self.question(protocol))

    def continuations(self, protocol: str) -> list[str]:
        """The texts whose perplexity is ranked (an EOS token is appended to each by the scorer)."""
        if protocol == "choice":
            return [LETTERS[k].upper() for k in range(len(self.options))]
        if protocol == "relaxed":
            return [f"({LETTERS[k]}) {capitalise(o)}" for k, o in enumerate(self.options)]
        raise ValueError(f"protocol {protocol!r} has no continuations")


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- answer parsing


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# "on the left of", "on its right": a side, not the relation "on" ("on top of" stays "on").
_ON_A_SIDE = re.compile(r" on (?=(?:the |its |his |her |their )?(?:left|right) )")


def match_keywords(output: str, keywords: tuple[tuple[str, ...], ...]) -> int | None:
    """The index of the one option whose keywords (each a whole word or word sequence) occur in `output`;
    None when no option or more than one option is named. The "on" of "on the left / right" names a side, so
    "The cup is on the left of the box." reads as left, not as both on and left."""
    words = _ON_A_SIDE.sub(" ", " " + " ".join(_words(output)) + " ")
    named = [k for k, option in enumerate(keywords) if any(f" {' '.join(_words(w))} " in words for w in option)]
    return named[0] if len(named) == 1 else None


def match_letter(output: str, options: tuple[str, ...]) -> int | None:
    """An option letter ('A', '(a)', 'b.', 'Option B', 'The answer is (b)') or exactly one option's full text;
    None otherwise (a sentence that merely starts with the article 'A' is not a letter)."""
    n = len(options)
    text = output.strip()
    letters = LETTERS[:n]
    patterns = (
        rf"^\(?([{letters}])\)?[.:)]?$",  # the whole answer is a letter
        rf"^\(([{letters}])\)",  # starts with '(a)'
        rf"^([{letters}])[.:)]\s",  # 'a. ...', 'b) ...'
        rf"^(?:option|answer)\s*(?:is\s*)?:?\s*\(?([{letters}])\)?(?:[.:)]|\s|$)",
        rf"\b(?:the\s+)?(?:answer|option)\s+is\s*:?\s*\(?([{letters}])\)?(?:[.:)]|\s|$)",
    )
    for pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            return LETTERS.index(m.group(1).lower())
    return match_keywords(output, tuple((o,) for o in options))


def parse_answer(item: Item, output: str) -> int | None:
    return match_letter(output, item.options) if item.parse == "letter" else match_keywords(output, item.keywords)


# ---------------------------------------------------------------- perplexity and the relaxed rule


def normalised_perplexity(token_logprobs: list[float]) -> float:
    """exp(-(1/n) sum log p): the perplexity normalised by the number of tokens (EOS included)."""
    if not token_logprobs:
        raise ValueError("an option needs at least one token")
    return math.exp(-sum(token_logprobs) / len(token_logprobs))


def option_probabilities(perplexities: list[float]) -> list[float]:
    """p(option | image): 1/ppl normalised over the image's options (Section 5.2's ppl ratio, read as the
    probability the text describes: a lower perplexity is a more probable match)."""
    inverse = [1.0 / p for p in perplexities]
    total = sum(inverse)
    return [v / total for v in inverse]


def unique_best(values: list[float], *, lowest: bool) -> int | None:
    """The index of the strictly best value; None on an exact tie for best."""
    best = min(values) if lowest else max(values)
    winners = [k for k, v in enumerate(values) if v == best]
    return winners[0] if len(winners) == 1 else None


def relaxed_pair_correct(probs_image1: list[float], probs_image2: list[float], first_caption: int = 0) -> bool:
    """Section 5.2: (image 1, caption 1) with (image 2, caption 2) are the more probable matches iff
    p(c1 | i1) > p(c1 | i2), each p normalised over that image's two options. A tie is wrong."""
    return probs_image1[first_caption] > probs_image2[first_caption]


# ---------------------------------------------------------------- M3ID


def m3id_weight(t: int, lam: float = M3ID_LAMBDA) -> float:
    gamma = math.exp(-lam * t)
    return (1.0 - gamma) / gamma


def m3id_logits(l_c, l_u, t: int, *, alpha: float = M3ID_ALPHA, lam: float = M3ID_LAMBDA):
    """Section 5.1: l = l_c + w_t (l_c - l_u) where the model is not confident (max_k l_c < log alpha), else l_c.
    `l_c`, `l_u`: (batch, vocab) log-probabilities with and without the image; `t`: the decoding step (1 = first)."""
    import torch

    corrected = l_c + m3id_weight(t, lam) * (l_c - l_u)
    confident = l_c.max(dim=-1, keepdim=True).values >= math.log(alpha)
    return torch.where(confident, l_c, corrected)


# ---------------------------------------------------------------- position bias


def swap_bit(seed: int, benchmark: str, example_id: str) -> bool:
    """Appendix A.1's 50% option-order swap, seeded per example (independent of --limit, batching and resume)."""
    digest = hashlib.sha256(f"{seed}\t{benchmark}\t{example_id}".encode()).digest()
    return bool(digest[0] & 1)
