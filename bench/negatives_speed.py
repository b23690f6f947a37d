"""Negatives per second on long GPT-style answers: data_prep.negatives against the implementation it replaced.

    python bench/negatives_speed.py [--paragraphs 2000] [--rounds 5]

The baseline is data_prep/negatives.py's left/right swapper as it was before issue 13 (rule-by-rule token
decisions only: no credit-line, referring-expression or symmetry rules), copied below unchanged as
`baseline_swap_left_right`. The texts are LLaVA-Instruct-style detailed answers: paragraphs of 6 to 10
sentences (about 100 to 200 words), a third of the sentences naming a side, built deterministically from the
corpus' GPT-style and COCO sentences plus side-free description sentences. Rounds alternate between the
variants; each row reports its best round (the least disturbed by other processes on the machine).

`bench_negatives()` returns a benchmark in bench/run.py's format ({"how", "columns", "rows"} with
ratio_vs_baseline), so bench/run.py can add it as one more table.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: `python bench/negatives_speed.py`
    sys.path.insert(0, str(REPO))

from data_prep.negatives import make_negative  # noqa: E402

CORPUS = REPO / "tests" / "data" / "negatives_corpus.jsonl"

# Sentences without a side, in the register of LLaVA-Instruct detailed descriptions.
FILLER = (
    "The image captures a lively scene in a city park on a sunny afternoon.",
    "Several people can be seen enjoying their time outdoors.",
    "The overall atmosphere of the scene is calm and relaxed.",
    "The lighting suggests that the photo was taken in the late afternoon.",
    "In the background, there are tall buildings and a few trees.",
    "The colors in the image are vibrant, with a mix of greens and blues.",
    "There is a small dog near the bench, looking up at its owner.",
    "The table is set with plates, cups and a vase of fresh flowers.",
    "A bicycle is leaning against the wall next to the entrance.",
    "The sky is clear, and the weather appears to be pleasant.",
    "This setting suggests a casual gathering among friends or family.",
    "The kitchen is well equipped, featuring a refrigerator, an oven and a microwave.",
    "Overall, the image conveys a sense of everyday life in a busy neighborhood.",
    "It is important to stay hydrated and wear sunscreen on such a warm day.",
    "The man is wearing a blue shirt and jeans, and he is holding a phone.",
)


# ---------------------------------------------------------------------------------------------------------------
# Frozen baseline: data_prep/negatives.py's left/right swapper before issue 13, unchanged. Do not edit.
# fmt: off



# --------------------------------------------------------------------------------------------------
# Tokens and edits
# --------------------------------------------------------------------------------------------------

# A word: letters only (digits and "_" excluded), inner apostrophes kept ("what's", "man's").
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
# Two words belong to one phrase when only spaces or a single hyphen separate them ("top-left").
_LINK_RE = re.compile(r"\s+|[-\u2010\u2011]")
# "left/right", "left & right", "left-right": a pair written as one unit.
_PAIR_GAP_RE = re.compile(r"\s*[/&]\s*|[-\u2010\u2011]")
_HYPHEN_RE = re.compile(r"[-\u2010\u2011]")
# A number right after a word: "above 50%", "the top 10", "under $5".
_NUMBER_AHEAD_RE = re.compile(r"[ \t]*[-+~]?[ \t]*[\d$\u20ac\u00a3\u00a5]")
# Parentheses/brackets around a single word: "John Smith (left)".
_OPEN_BRACKET_RE = re.compile(r"[(\[]\s*$")
_CLOSE_BRACKET_RE = re.compile(r"\s*[)\]]")

Edit = tuple[int, int, str]


class _Words:
    """Word tokens of one text plus adjacency-aware neighbour lookups."""

    __slots__ = ("low", "spans", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: list[tuple[int, int]] = []
        self.low: list[str] = []
        for m in _WORD_RE.finditer(text):
            self.spans.append(m.span())
            self.low.append(m.group().lower().replace("\u2019", "'"))

    def __len__(self) -> int:
        return len(self.low)

    def linked(self, j: int) -> bool:
        """Whether token j directly follows token j-1 (same phrase, no punctuation between)."""
        if not 0 < j < len(self.low):
            return False
        return _LINK_RE.fullmatch(self.text, self.spans[j - 1][1], self.spans[j][0]) is not None

    def gap(self, j: int) -> str:
        """Text between token j-1 and token j."""
        return self.text[self.spans[j - 1][1] : self.spans[j][0]]

    def prev(self, i: int, k: int = 1) -> str | None:
        """k-th word before token i, or None if a clause boundary comes first."""
        for _ in range(k):
            if not self.linked(i):
                return None
            i -= 1
        return self.low[i]

    def next(self, i: int, k: int = 1) -> str | None:
        """k-th word after token i, or None if a clause boundary comes first."""
        for _ in range(k):
            if not self.linked(i + 1):
                return None
            i += 1
        return self.low[i]

    def ends_clause(self, i: int) -> bool:
        """Token i is followed by punctuation or the end of the text (not by a linked word or number)."""
        if self.linked(i + 1):
            return False
        return _NUMBER_AHEAD_RE.match(self.text, self.spans[i][1]) is None

    def number_after(self, i: int) -> bool:
        return _NUMBER_AHEAD_RE.match(self.text, self.spans[i][1]) is not None

    def src(self, i: int, j: int | None = None) -> str:
        """Original text of tokens i..j (inclusive)."""
        return self.text[self.spans[i][0] : self.spans[i if j is None else j][1]]


def _match_case(src: str, repl: str) -> str:
    """Give `repl` the case pattern of `src`: "LEFT" -> "RIGHT", "Left" -> "Right", "left" -> "right"."""
    letters = [c for c in src if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return repl.upper()
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl


def _apply(text: str, edits: Iterable[Edit]) -> str | None:
    """Apply non-overlapping edits in one pass; None when nothing changed."""
    out: list[str] = []
    last = 0
    for start, end, repl in sorted(edits):
        out.append(text[last:start])
        out.append(repl)
        last = end
    if not out:
        return None
    out.append(text[last:])
    result = "".join(out)
    return None if result == text else result


def _swap_token(w: _Words, i: int, mapping: dict[str, str], stem: str | None = None) -> Edit:
    """Edit that replaces token i (or only its leading `stem`) by its opposite, keeping case."""
    start = w.spans[i][0]
    stem = stem or w.low[i]
    end = start + len(stem)
    return (start, end, _match_case(w.text[start:end], mapping[stem]))


_COORD_CONJ = frozenset({"and", "or", "nor"})
_COORD_FILL = frozenset({"the", "to", "on", "at", "in", "its", "his", "her", "their", "far"})


def _coordinated(w: _Words, i: int, axis: frozenset[str]) -> bool:
    """Token i is one side of a symmetric pair: "left and right", "the top or the bottom", "left/right"."""
    n = len(w)
    for a, b in ((i - 1, i), (i, i + 1)):
        other = a if b == i else b
        if 0 <= a and b < n and w.low[other] in axis:
            if _PAIR_GAP_RE.fullmatch(w.text, w.spans[a][1], w.spans[b][0]):
                return True
    # Forward: "left and (the|to the ...) right".
    if w.next(i) in _COORD_CONJ:
        for k in range(2, 5):
            word = w.next(i, k)
            if word in axis:
                return True
            if word not in _COORD_FILL:
                break
    # Backward: "left and (the ...) right", seen from "right".
    k = 1
    while k <= 3 and w.prev(i, k) in _COORD_FILL:
        k += 1
    return w.prev(i, k) in _COORD_CONJ and w.prev(i, k + 1) in axis


def _fs(*words: str) -> frozenset[str]:
    return frozenset(words)


# --------------------------------------------------------------------------------------------------
# left <-> right
# --------------------------------------------------------------------------------------------------

_LR_SWAP = {"left": "right", "right": "left"}
_LR = frozenset(_LR_SWAP)
_LR_HINT_RE = re.compile(r"(?i)left|right")
# Candidate tokens. Plurals "lefts"/"rights" are not candidates: "rights" is almost always legal
# ("human rights", "all rights reserved"), and "leftover", "copyright", "alright" never match.
_LR_TOKEN_RE = re.compile(r"(left|right)(most|wards?|hand|handed|handers?)?")

# Words that make a following left/right a noun or adjective.
_DETS = _fs("the", "a", "an", "its", "his", "her", "their", "my", "your", "our")
# Contracted "is"/"has" that look like possessives ("it's left of the door", "what's left").
_S_CONTRACTIONS = _fs(
    "what's", "that's", "it's", "he's", "she's", "there's", "here's", "who's", "where's", "let's",
    "everything's", "nothing's", "something's", "how's", "why's", "when's", "this's",
)  # fmt: skip
# "on the left", "to her right", "in the far left": a preposition before the determiner.
_STRONG_PREPS = _fs("on", "to", "at", "from", "toward", "towards", "in", "into", "onto", "near", "by")
# Modifiers that are spatial on their own ("top left", "far right", "front left wheel").
# "far-right"/"far-left" used politically are caught by the political-follower veto.
_MODS = _fs("far", "upper", "lower", "top", "bottom", "front", "rear", "middle", "center", "centre", "outer")
# Modifiers that are spatial only after a determiner: "the very left", but "you are very right".
_MODS_NEED_DET = _fs("very", "immediate", "extreme", "back")
# Bare prepositions: "from left to right", "pictured left", "at left".
_DIRECT_PREPS = _fs("from", "to", "at", "on", "in", "toward", "towards", "pictured")
# Turning verbs: "turn left at the corner" is spatial even with a preposition after it.
_TURN_VERBS = _fs(
    "turn", "turns", "turned", "turning", "veer", "veers", "veered", "veering", "swerve", "swerves",
    "swerved", "swerving", "steer", "steers", "steered", "steering", "swipe", "swipes", "swiped",
    "swiping", "scroll", "scrolls", "scrolled", "scrolling",
)  # fmt: skip
# Orientation/motion verbs; a preposition after them reads as adverbial "right" ("looking right at
# the camera" = directly at), so those are not swapped. "look/looks/looked right" is left out on
# purpose: "it doesn't look right" means "correct"; only the progressive "looking" is kept.
_ORIENT_VERBS = _fs(
    "face", "faces", "faced", "facing", "looking", "glance", "glances", "glanced", "glancing", "gaze",
    "gazes", "gazed", "gazing", "stare", "stares", "stared", "staring", "point", "points", "pointed",
    "pointing", "lean", "leans", "leaned", "leant", "leaning", "tilt", "tilts", "tilted", "tilting",
    "move", "moves", "moved", "moving", "shift", "shifts", "shifted", "shifting", "slide", "slides",
    "slid", "sliding", "drift", "drifts", "drifted", "drifting", "heads", "headed", "heading", "pan",
    "pans", "panned", "panning", "rotate", "rotates", "rotated", "rotating", "swing", "swings", "swung",
    "swinging", "bend", "bends", "bending", "bent", "curve", "curves", "curved", "curving", "slant",
    "slants", "slanted", "slanting", "keep", "keeps", "aim", "aims", "aimed", "aiming", "oriented",
    "orientated", "step", "steps", "stepped", "stepping",
)  # fmt: skip
# Nouns after which left/right is spatial even without anything before it ("Left side of the road").
_FOLLOW_STRONG = _fs(
    "side", "sides", "hand", "hands", "handed", "hander", "handers", "corner", "corners", "edge", "edges",
    "lane", "lanes", "arm", "arms", "leg", "legs", "foot", "feet", "eye", "eyes", "ear", "ears",
    "shoulder", "shoulders", "knee", "knees", "elbow", "elbows", "wrist", "wrists", "ankle", "ankles",
    "cheek", "cheeks", "hip", "hips", "thigh", "thighs", "paw", "paws", "flank", "flanks", "turn",
    "turns", "eyebrow", "eyebrows", "hemisphere", "most", "ward", "wards",  # "left-most", "right-ward"
)  # fmt: skip
# Also objects of the verb "leave" ("he left half of the pizza"): spatial only at a clause start.
_FOLLOW_WEAK = _fs(
    "half", "part", "parts", "portion", "section", "column", "columns", "panel", "panels", "quadrant",
    "region", "area", "border", "margin", "image", "photo", "picture", "frame",
)  # fmt: skip
# Adjectival "right" meaning "correct"/"suitable" ("the right answer", "at the right time", "in his
# right mind"), geometry ("right angle"), "a right mess". Vetoed for both words so the rules stay
# symmetric; "the left answer" is no loss.
_NONSPATIAL_NOUNS = _fs(
    "answer", "answers", "time", "times", "timing", "moment", "moments", "thing", "things", "choice",
    "choices", "decision", "decisions", "way", "ways", "place", "places", "spot", "position",
    "direction", "directions", "track", "path", "idea", "ideas", "word", "words", "person", "people",
    "guy", "guys", "one", "ones", "candidate", "candidates", "partner", "partners", "fit", "size",
    "sizes", "amount", "amounts", "balance", "mix", "combination", "kind", "kinds", "type", "types",
    "sort", "tool", "tools", "price", "prices", "order", "approach", "attitude", "question",
    "questions", "reason", "reasons", "conditions", "angle", "angles", "angled", "triangle",
    "triangles", "mind", "mess", "move", "moves", "call", "note", "tone", "spirit", "equipment", "gear",
    "ingredients", "information", "info", "solution", "solutions", "job", "jobs", "career", "match",
    "level", "levels", "temperature", "setting", "settings", "lighting", "opportunity", "environment",
    "strategy", "step", "steps", "stuff", "version", "dose", "dosage", "number", "response", "result",
    "results", "outcome", "course", "impression", "message", "priorities", "context", "formula",
    "password", "code", "color", "colour", "colors", "colours", "shade", "part", "parts", "portion",
    "portions",
)  # fmt: skip
# ... except these when followed by "of": "the right part of the image".
_NEED_OF = _fs("part", "parts", "portion", "portions")
# Political senses: "right-wing party", "far-right groups", "left-leaning media".
_POLITICAL = _fs(
    "party", "parties", "politics", "political", "politician", "politicians", "extremist",
    "extremists", "extremism", "populist", "populists", "populism", "nationalist", "nationalists",
    "government", "governments", "media", "voter", "voters", "activist", "activists", "ideology",
    "agenda", "movement", "coalition", "faction", "factions", "conservative", "conservatives",
    "liberal", "liberals", "radical", "radicals", "militia", "militias", "terrorism", "terrorist",
    "terrorists", "press", "winger", "wingers", "leader", "leaders", "policies", "policy",
)  # fmt: skip
_HAND_MAN = _fs("man", "men", "woman", "women", "person", "people", "guy")  # "right-hand man"
# A subject or auxiliary before "left" makes it the verb: "he left ...", "has left of her own".
_SUBJECTS = _fs(
    "i", "you", "he", "she", "we", "they", "who", "it", "someone", "somebody", "everyone", "everybody",
    "nobody", "people",
)  # fmt: skip
_AUX = _fs(
    "has", "have", "had", "having", "been", "being", "get", "gets", "got", "gotten", "getting", "just",
    "already", "never", "recently", "finally", "also", "still", "accidentally",
)  # fmt: skip
_BE = _fs("is", "are", "was", "were", "am", "be") | _S_CONTRACTIONS
# "what's left of the cake", "all that is left of", "nothing left of": "leave", not direction.
_REMNANT = _fs(
    "what", "what's", "whats", "whatever", "nothing", "something", "anything", "everything", "little",
    "much", "all", "none", "remains", "remained", "thing", "things", "bit", "bits", "piece", "pieces",
    "one", "ones", "some", "enough", "remaining", "that's", "few", "that", "which", "who",
)  # fmt: skip
# Complements of the verb "leave" or of adverbial "right" ("left behind", "left over", "right now",
# "right away", "left alone"); vetoed unless a preposition+determiner makes the word a noun.
_PARTICLES = _fs(
    "behind", "over", "alone", "unattended", "untouched", "unchanged", "unused", "unfinished",
    "undone", "unsaid", "unanswered", "empty", "open", "blank", "idle", "intact", "out", "off",
    "away", "now", "then", "here", "there", "back", "after", "afterwards", "afterward", "before",
    "home", "early", "undisturbed", "unlocked", "alive", "dead", "hanging", "stranded", "exposed",
    "abandoned", "waiting", "speechless", "wondering", "unharmed", "outside", "inside", "up", "down",
    "through", "next",
)  # fmt: skip
# Prepositions after adverbial "right" ("right next to", "right at the camera").
_PREP_FOLLOW = _fs(
    "up", "down", "through", "into", "onto", "next", "beside", "under", "above", "below", "by", "in",
    "on", "at", "across", "past", "along", "toward", "towards", "to", "around", "round", "over",
    "behind", "off", "out", "there", "here",
)  # fmt: skip
# Objects after "left"/"right" make them verbs: "left the room", "left it", "to right the wrongs".
_OBJECTS = _fs(
    "the", "a", "an", "his", "her", "him", "them", "their", "its", "it", "me", "my", "us", "our", "you",
    "your", "this", "that", "these", "those", "some", "no", "any", "everything", "nothing", "something",
    "anything", "wrong", "wrongs", "itself", "himself", "herself", "themselves", "everyone", "everybody",
    "someone",
)  # fmt: skip
_PROVE = _fs("prove", "proves", "proved", "proven", "proving")  # "proved her right"


def _is_possessive(word: str | None) -> bool:
    return word is not None and word.endswith("'s") and word not in _S_CONTRACTIONS


def _is_det(word: str | None) -> bool:
    return word in _DETS or _is_possessive(word)


def _lr_spatial(w: _Words, i: int, suffix: str) -> bool:
    """Whether token i ("left"/"right" + optional suffix) is used in the spatial sense."""
    if suffix in ("most", "ward", "wards"):
        return True
    p1, p2, p3 = w.prev(i), w.prev(i, 2), w.prev(i, 3)
    n1, n2 = w.next(i), w.next(i, 2)
    if suffix:  # lefthand(ed), righthander: spatial, except "righthand man"
        return not (suffix == "hand" and n1 in _HAND_MAN)

    if _coordinated(w, i, _LR):
        return False
    # "from left to right", "left-to-right": directional, always swapped as a pair.
    if (n1 == "to" and n2 in _LR) or (p1 == "to" and p2 in _LR):
        return True
    # Photo-credit style labels: "John Smith (left) and Jane Doe (right)".
    start, end = w.spans[i]
    if _OPEN_BRACKET_RE.search(w.text, 0, start) and _CLOSE_BRACKET_RE.match(w.text, end):
        return True

    # Vetoes that hold in every context.
    if n1 in _POLITICAL:
        return False
    # "right-wing"/"left-leaning" (hyphenated) are political; spaced "the left wing of the plane" is not.
    # "right wing" + political noun is political either way.
    if n1 in ("wing", "wings", "leaning") and (
        _HYPHEN_RE.fullmatch(w.gap(i + 1)) or n1 == "leaning" or n2 in _POLITICAL
    ):
        return False
    if n1 == "hand" and n2 in _HAND_MAN:
        return False
    if n1 in _NONSPATIAL_NOUNS and not (n1 in _NEED_OF and n2 == "of"):
        return False
    if n1 == "of" and n2 == "way":  # "right of way"
        return False
    if n1 in ("side", "sides") and n2 in ("up", "out"):  # "right side up" = upright, "right side out"
        return False

    # "on the left", "to her right", "on the far left": always a noun; nothing after it can veto.
    if _is_det(p1) and p2 in _STRONG_PREPS:
        return True
    if p1 in (_MODS | _MODS_NEED_DET) and _is_det(p2) and p3 in _STRONG_PREPS:
        return True

    if p1 in _SUBJECTS or p1 in _AUX:
        return False
    if p1 is not None and p1.endswith(("'ve", "'d", "'ll", "'re", "'m")):
        return False
    if n1 in _PARTICLES or n1 in _OBJECTS:
        return False

    if _is_det(p1):
        if n1 == "to":  # "the right to vote", "their right to protest"
            return False
        if p1 == "her" and (n1 in _PREP_FOLLOW or p2 in _PROVE):  # "found her right outside"
            return False
        return True
    if p1 in _MODS:
        return True
    if p1 in _MODS_NEED_DET:
        return _is_det(p2) or n1 in _FOLLOW_STRONG or n1 in _FOLLOW_WEAK
    if p1 in _DIRECT_PREPS:
        return True
    if p1 in _TURN_VERBS:
        return n1 not in ("around", "round")
    if p1 in _ORIENT_VERBS:
        return n1 not in _PREP_FOLLOW

    # No trigger before the word: decide on what follows.
    if n1 in _FOLLOW_STRONG:
        return True
    if n1 in ("wing", "wings"):  # "left wing of the building"; bare "left wing" may be political
        return n2 == "of"
    if n1 == "of":  # "a dog left of a table" vs "what's left of the cake"
        if p1 in _REMNANT:
            return False
        if p1 in _BE:
            return p2 not in _REMNANT
        return True
    return n1 in _FOLLOW_WEAK and p1 is None


def baseline_swap_left_right(text: str) -> str | None:
    """Swap spatial "left" <-> "right" ("on the left", "left of", "top-left", "leftmost", ...).

    Returns None when no spatial left/right was found. Non-spatial uses stay untouched: the verb
    "left" ("he left the room", "left behind", "nothing left"), "right" as correct/immediately
    ("the right answer", "right now"), rights, and political "right-wing"/"far-left party".
    """
    if not _LR_HINT_RE.search(text):
        return None
    w = _Words(text)
    edits: list[Edit] = []
    for i, low in enumerate(w.low):
        m = _LR_TOKEN_RE.fullmatch(low)
        if m is not None and _lr_spatial(w, i, m.group(2) or ""):
            edits.append(_swap_token(w, i, _LR_SWAP, stem=m.group(1)))
    return _apply(text, edits)
# fmt: on


# ---------------------------------------------------------------------------------------------------------------
# Benchmark


def long_answers(paragraphs: int, seed: int = 0) -> list[str]:
    """Deterministic LLaVA-style detailed answers, about a third of their sentences naming a side."""
    sided = [
        r["text"]
        for r in map(json.loads, CORPUS.read_text(encoding="utf-8").splitlines())
        if r["style"] in ("llava_gpt", "coco") and r["text"].endswith(".")
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        n = rng.randint(6, 10)
        sentences = [rng.choice(sided) if rng.random() < 1 / 3 else rng.choice(FILLER) for _ in range(n)]
        out.append(" ".join(sentences))
    return out


def _timed(fn: Callable[[str], object], texts: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    made = sum(fn(t) is not None for t in texts)
    return time.perf_counter() - start, made


def _first(fn: Callable[[str], tuple]) -> Callable[[str], object]:
    return lambda text: fn(text)[0]


def bench_negatives(paragraphs: int = 2000, rounds: int = 5) -> dict:
    """Negatives per second of the frozen baseline and of make_negative (swap_left_right plus its rule name)."""
    texts = long_answers(paragraphs)
    variants: dict[str, Callable[[str], object]] = {
        "swap_left_right before issue 13 (baseline)": baseline_swap_left_right,
        "make_negative now (negative + rule, as build_shards calls it)": _first(make_negative),
    }
    best: dict[str, float] = {}
    made: dict[str, int] = {}
    for fn in variants.values():  # warm-up: regex caches, first-call costs
        _timed(fn, texts[:20])
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds, made[name] = _timed(fn, texts)
            best[name] = min(best.get(name, float("inf")), seconds)
    words = sum(len(t.split()) for t in texts)
    rows = {}
    for name in variants:
        rows[name] = {
            "texts": len(texts),
            "words_per_text": round(words / len(texts), 1),
            "with_negative": made[name],
            "seconds": round(best[name], 4),
            "negatives_per_s": round(len(texts) / best[name], 1),
        }
    base = rows["swap_left_right before issue 13 (baseline)"]["negatives_per_s"]
    for row in rows.values():
        row["ratio_vs_baseline"] = round(row["negatives_per_s"] / base, 2)
    return {
        "how": (
            f"Hard negatives (left/right) per second on {len(texts)} LLaVA-Instruct-style detailed answers "
            f"(6 to 10 sentences, {round(words / len(texts))} words on average, a third of the sentences naming a "
            f"side; bench/negatives_speed.py), one process, best of {rounds} alternating rounds. Baseline: the "
            "swapper before issue 13, frozen in bench/negatives_speed.py. with_negative: texts that got one."
        ),
        "columns": {
            "texts": "texts",
            "words_per_text": "words/text",
            "with_negative": "with negative",
            "seconds": "seconds",
            "negatives_per_s": "negatives/s",
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python bench/negatives_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    result = bench_negatives(args.paragraphs, args.rounds)
    print(result["how"])
    for name, row in result["rows"].items():
        print(
            f"  {name}: {row['negatives_per_s']} negatives/s ({row['seconds']} s for {row['texts']} texts, "
            f"{row['with_negative']} with a negative), {row['ratio_vs_baseline']}x baseline"
        )
    return result


if __name__ == "__main__":
    main()
