"""Hard-negative captions by flipping one spatial relation (paper Section 4.2, NegCLIP loss).

Each swapper returns the caption with every relation of its axis flipped, or None when it found
nothing it could flip safely. The rules are conservative on purpose: a missed negative only costs a
little training signal, but a "negative" that still describes the image (e.g. "he left the room"
turned into "he right the room", or "left and right" into "right and left") teaches the wrong thing.

Design, shared by all axes:
- Text is split into word tokens (Unicode letters, inner apostrophes) and only the characters of
  the swapped word (or phrase) are rewritten, so punctuation, whitespace and the case pattern of
  everything else survive unchanged.
- Decisions look only at neighbouring words, lower-cased. The rules never ask which side of a pair
  a word is (left vs right, above vs below), so a swapped caption gets the very same decisions and
  swapping twice gives back the original.
- All swaps of one call are collected first and applied in one pass: no left->right->left.
- "X and/or Y" coordinations of the two sides ("left and right", "top and bottom") are left alone:
  flipped they mean the same thing, which would make a false negative.
"""

import re
from collections.abc import Callable, Iterable

__all__ = [
    "HARD_NEGATIVES",
    "make_hard_negative",
    "swap_above_below",
    "swap_front_behind",
    "swap_left_right",
    "swap_on_under",
]


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


def swap_left_right(text: str) -> str | None:
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


# --------------------------------------------------------------------------------------------------
# above <-> below (also over/under, upper/lower, top/bottom in clear phrases)
# --------------------------------------------------------------------------------------------------

_AB_SWAP = {
    "above": "below", "below": "above", "over": "under", "under": "over", "upper": "lower",
    "lower": "upper", "uppermost": "lowermost", "lowermost": "uppermost", "topmost": "bottommost",
    "bottommost": "topmost", "top": "bottom", "bottom": "top",
}  # fmt: skip
_AB = frozenset(_AB_SWAP)
_AB_HINT_RE = re.compile(r"(?i)above|below|over|under|upper|lower|top|bottom")
_OBJ_DETS = _fs("the", "a", "an", "his", "her", "its", "their", "my", "your", "our", "this", "that", "these")
# "as mentioned above", "see below": references to the document, not to the scene.
_TEXT_REF = _fs(
    "see", "shown", "listed", "mentioned", "described", "noted", "stated", "discussed", "explained",
    "outlined", "given", "detailed", "illustrated", "quoted", "cited", "as", "read", "refer", "follows",
)  # fmt: skip
_AB_FOLLOW_VETO = _fs(
    "mentioned", "named", "cited", "listed", "noted", "described", "stated", "referenced", "all",
    "average", "normal", "zero", "freezing", "par", "expectations", "standard", "standards",
    "suspicion", "reproach", "criticism", "board", "threshold", "grade", "cost", "market", "budget",
)  # fmt: skip
_AB_THE_VETO = _fs(
    "law", "average", "rest", "norm", "poverty", "threshold", "limit", "age", "minimum", "maximum",
    "national", "legal", "recommended", "fray", "belt", "fold",
)  # fmt: skip
# "over"/"under" have many non-spatial senses ("over 100", "under pressure", "game over"): only
# after verbs of hanging/flying/placing, and only before a determiner.
_OVER_UNDER_TRIGGERS = _fs(
    "hanging", "hangs", "hung", "hang", "hovering", "hovers", "hovered", "hover", "flying", "flies",
    "flew", "fly", "directly", "suspended", "floating", "floats", "floated", "dangling", "dangles",
    "dangled", "mounted", "positioned", "located", "placed", "situated", "soaring", "soars", "looming",
    "looms", "loomed",
)  # fmt: skip
_UL_NOUNS = _fs(
    "part", "parts", "half", "portion", "section", "area", "region", "side", "sides", "corner",
    "corners", "edge", "edges", "end", "level", "levels", "floor", "floors", "deck", "decks", "shelf",
    "shelves", "bunk", "bunks", "row", "rows", "tier", "tiers", "body", "lip", "lips", "jaw", "teeth",
    "arm", "arms", "leg", "legs", "back", "cabinet", "cabinets", "window", "windows", "branch",
    "branches", "layer", "layers", "panel", "panels", "frame", "surface", "balcony", "story", "stories",
    "storey", "storeys", "eyelid", "eyelids", "tray", "trays", "compartment", "compartments", "rack",
    "racks", "quadrant",
)  # fmt: skip
_TB_NOUNS = _fs(
    "half", "halves", "part", "parts", "portion", "section", "edge", "edges", "corner", "corners",
    "shelf", "shelves", "drawer", "drawers", "row", "rows", "layer", "layers", "bunk", "bunks", "floor",
    "floors", "deck", "decks", "tier", "tiers", "step", "steps", "rack", "racks", "panel", "panels",
    "side", "sides", "area", "region", "rung", "rungs", "lip", "teeth", "cabinet", "cabinets", "frame",
    "border", "margin", "quadrant", "surface", "branch", "branches", "window", "windows", "tray",
    "trays", "compartment", "compartments",
)  # fmt: skip
_TB_PREPS = _fs("at", "on", "to", "from", "near", "toward", "towards", "in", "into", "onto")
# "the top of the line/class/charts", "from the bottom of my heart", "off the top of my head".
_TB_OF_VETO = _fs(
    "line", "class", "hour", "world", "barrel", "heart", "list", "league", "charts", "chart", "game",
    "morning", "food", "problem", "matter", "issue", "head", "mind", "pecking", "rankings", "ranks",
    "standings",
)  # fmt: skip
# Words that can follow a relation noun that ends its phrase ("at the top is a ...").
_FUNCTION_AFTER = _fs(
    "or", "but", "is", "are", "was", "were", "with", "while", "where", "which", "that", "has", "have",
    "sits", "sit", "sitting", "rests", "near", "next", "there", "in", "on", "at", "by", "beside",
    "above", "below", "under", "over", "to",
)  # fmt: skip


def _of_object(w: _Words, i: int) -> str | None:
    """Noun after "of" at token i+1: "the top of the hill" -> "hill", "the top of my head" -> "head"."""
    word = w.next(i, 2)
    if word in _OBJ_DETS:
        word = w.next(i, 3)
    return word


def _ab_spatial(w: _Words, i: int) -> bool:
    low = w.low[i]
    if low in ("uppermost", "lowermost", "topmost", "bottommost"):
        return True
    if _coordinated(w, i, _AB):
        return False
    p1, p2 = w.prev(i), w.prev(i, 2)
    n1, n2 = w.next(i), w.next(i, 2)

    if low in ("above", "below"):
        if p1 == "the" or n1 in _AB_FOLLOW_VETO or w.number_after(i):  # "the above image", "above 50%"
            return False
        if n1 in ("the", "a", "an") and n2 in _AB_THE_VETO:  # "above the law", "below the belt"
            return False
        return not (p1 in _TEXT_REF and w.ends_clause(i))  # "as mentioned above."
    if low in ("over", "under"):
        return p1 in _OVER_UNDER_TRIGGERS and n1 in _OBJ_DETS
    if n1 in _LR:  # "upper left", "top-right", if that left/right is itself spatial
        return _lr_spatial(w, i + 1, "")
    if low in ("upper", "lower"):
        return n1 in _UL_NOUNS
    # top / bottom
    if w.number_after(i):  # "the top 10"
        return False
    if n1 in _TB_NOUNS:
        return True
    if n1 == "of" and _is_det(p1):  # "the top of the stairs"
        return _of_object(w, i) not in _TB_OF_VETO
    if p1 == "the" and p2 in _TB_PREPS:  # "on the top", "at the bottom is a ..."
        return w.ends_clause(i) or n1 in _FUNCTION_AFTER
    return False


def swap_above_below(text: str) -> str | None:
    """Swap "above" <-> "below", and in clear spatial phrases over/under, upper/lower, top/bottom.

    "on top of" belongs to the on/under axis and is not touched here.
    """
    if not _AB_HINT_RE.search(text):
        return None
    w = _Words(text)
    edits = [_swap_token(w, i, _AB_SWAP) for i, low in enumerate(w.low) if low in _AB and _ab_spatial(w, i)]
    return _apply(text, edits)


# --------------------------------------------------------------------------------------------------
# in front of <-> behind (also front/back, foreground/background in clear phrases)
# --------------------------------------------------------------------------------------------------

_FB_HINT_RE = re.compile(r"(?i)front|behind|back|ground")
# Words after "behind"/"in front of" that are not its object ("behind and in front of").
_NON_OBJECT = _fs(
    "and", "or", "but", "nor", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "behind",
    "as", "while", "when", "where", "which", "who", "whom", "whose", "to", "for", "with", "of", "in",
    "on", "at", "by", "from", "into", "than", "then", "so", "because", "if",
)  # fmt: skip
# Figurative "behind": "behind schedule", "left behind", "the reason behind", "fall behind".
# Decision: never swapped (and the same veto applies to "in front of", to keep swaps reversible).
_BEHIND_P1_VETO = _fs(
    "left", "leave", "leaves", "leaving", "fall", "falls", "fell", "falling", "fallen", "lag", "lags",
    "lagged", "lagging", "stay", "stays", "stayed", "staying", "remain", "remains", "remained",
    "remaining", "trail", "trails", "trailed", "trailing", "from", "reason", "reasons", "idea", "ideas",
    "story", "stories", "science", "logic", "motivation", "motivations", "concept", "thinking",
    "philosophy", "meaning", "inspiration", "mind", "minds", "force", "forces", "team", "teams",
    "truth", "secret", "secrets", "rationale", "intent", "intention", "purpose", "principle",
    "principles", "technology", "mechanism", "history", "brains", "brain", "power", "money", "far",
    "way", "weeks", "days", "years", "months", "hours", "minutes", "points", "put", "puts", "putting",
    "get", "got", "stand", "stands", "stood",
)  # fmt: skip
_BEHIND_N1_VETO = _fs("schedule", "schedules", "bars", "closed", "enemy", "us")
_BEHIND_THE_VETO = _fs("scenes", "times", "wheel", "curve", "eight", "camera")
_FB_SWAP = {"front": "back", "back": "front", "foreground": "background", "background": "foreground"}
_FB_AXIS = frozenset(_FB_SWAP)
_FB_PREPS = _fs("in", "at", "to", "toward", "towards", "from", "near", "on", "into")
_FB_NOUNS = _fs(
    "seat", "seats", "row", "rows", "yard", "garden", "porch", "wheel", "wheels", "tire", "tires",
    "tyre", "tyres", "leg", "legs", "paw", "paws", "teeth", "tooth", "bumper", "window", "windows",
    "end", "half", "part", "portion", "section", "area", "corner", "corners", "side", "sides", "panel",
    "fender", "room", "rooms", "entrance", "pocket", "pockets", "deck", "hooves", "fin", "fins", "axle",
    "left", "right",
)  # fmt: skip
_FB_OF_VETO = _fs("mind", "beyond", "pack")  # "the back of my mind", "the back of the pack"
_BG_ADJ = _fs("far", "distant", "blurry", "blurred", "immediate", "near", "dark", "hazy", "misty", "faint")
_BG_NOUN_VETO = _fs("music", "noise", "information", "check", "checks", "story", "process", "task")


def _behind_object_ok(w: _Words, first: int, last: int) -> bool:
    """The relation spanning tokens first..last has an object after it and no figurative reading."""
    if w.prev(first) in _BEHIND_P1_VETO:
        return False
    n1 = w.next(last)
    if n1 is None or n1 in _NON_OBJECT or n1 in _BEHIND_N1_VETO:
        return False
    return not (n1 == "the" and w.next(last, 2) in _BEHIND_THE_VETO)


def _fb_coordinated(w: _Words, first: int, last: int) -> bool:
    """ "behind and in front of", "in front or behind": a symmetric pair, left alone."""
    if w.next(last) in _COORD_CONJ:
        after = w.next(last, 2)
        if after == "behind" or (after == "in" and w.next(last, 3) == "front"):
            return True
    if w.prev(first) in _COORD_CONJ:
        before = w.prev(first, 2)
        if before == "behind" or (before == "front" and w.prev(first, 3) == "in"):
            return True
        if before == "of" and w.prev(first, 3) == "front" and w.prev(first, 4) == "in":
            return True
    return False


def _front_back_spatial(w: _Words, i: int) -> bool:
    if _coordinated(w, i, _FB_AXIS):
        return False
    p1, p2, p3 = w.prev(i), w.prev(i, 2), w.prev(i, 3)
    n1 = w.next(i)
    if w.low[i] in ("foreground", "background"):
        if n1 in _BG_NOUN_VETO:  # "in the background music"
            return False
        if p1 == "the" and (p2 in _FB_PREPS or n1 == "of"):  # "in the background", "the foreground of"
            return True
        return p1 in _BG_ADJ and p2 == "the" and p3 in _FB_PREPS  # "in the far background"
    # front / back
    if p1 == "the" and n1 == "of":  # "the back of the room", not "the back of my mind"
        return _of_object(w, i) not in _FB_OF_VETO
    # "the back seat", "its front legs", "the front left wheel". No look at what follows the noun:
    # that may itself be swapped on this axis ("right behind"), which would make swaps irreversible.
    if _is_det(p1) and n1 in _FB_NOUNS:
        return True
    if p1 == "the" and p2 in _FB_PREPS:  # "sitting in the front", "at the back is a door"
        return w.ends_clause(i) or n1 in _FUNCTION_AFTER
    return False


def swap_front_behind(text: str) -> str | None:
    """Swap "in front of" <-> "behind", and clear front/back, foreground/background phrases.

    Adverbial forms map to each other ("with trees behind." <-> "with trees in front."). A phrase
    like "in  front of" with odd spacing is rewritten with single spaces. Figurative "behind"
    ("behind schedule", "left behind", "the reason behind") is never swapped.
    """
    if not _FB_HINT_RE.search(text):
        return None
    w = _Words(text)
    edits: list[Edit] = []
    i, n = 0, len(w)
    while i < n:
        low = w.low[i]
        if low == "in" and w.next(i) == "front":
            if w.next(i, 2) == "of":  # "in front of X" -> "behind X"
                if _behind_object_ok(w, i, i + 2) and not _fb_coordinated(w, i, i + 2):
                    edits.append((w.spans[i][0], w.spans[i + 2][1], _match_case(w.src(i, i + 2), "behind")))
                i += 3
                continue
            # adverbial "in front." -> "behind."
            if w.ends_clause(i + 1) and w.prev(i) not in _BEHIND_P1_VETO and not _fb_coordinated(w, i, i + 1):
                edits.append((w.spans[i][0], w.spans[i + 1][1], _match_case(w.src(i, i + 1), "behind")))
            i += 2
            continue
        if low == "behind" and not _fb_coordinated(w, i, i):
            if _behind_object_ok(w, i, i):
                edits.append((*w.spans[i], _match_case(w.src(i), "in front of")))
            elif w.ends_clause(i) and w.prev(i) not in _BEHIND_P1_VETO:
                edits.append((*w.spans[i], _match_case(w.src(i), "in front")))
        elif low in _FB_AXIS and _front_back_spatial(w, i):
            edits.append(_swap_token(w, i, _FB_SWAP))
        i += 1
    return _apply(text, edits)


# --------------------------------------------------------------------------------------------------
# on <-> under
# --------------------------------------------------------------------------------------------------

# Mapping (a bijection, so swapping twice is the identity):
#   "on top of X" <-> "underneath X"     "on top." <-> "underneath."     "atop the X" <-> "beneath the X"
#   "on a/an/the X" <-> "under a/an/the X", only when X is a plain object, never a side/time/medium:
#   "on the left", "on Monday", "on the phone", "under pressure", "under the influence" stay put.
# Bare "on" without an article ("on it", "on fire", "on sale") is never swapped.
_OU_HINT_RE = re.compile(r"(?i)\b(?:on|under|underneath|atop|beneath)\b")
_OU_SWAP = {"on": "under", "under": "on", "atop": "beneath", "beneath": "atop"}
_ARTICLES = _fs("a", "an", "the")
# Nouns that make "on/under the X" non-spatial or a different relation (union for both words).
_OU_NP_VETO = _fs(
    "left", "right", "top", "bottom", "side", "sides", "front", "back", "edge", "other", "way", "phone",
    "telephone", "tv", "television", "radio", "internet", "web", "screen", "display", "menu", "list",
    "page", "website", "site", "market", "sale", "team", "job", "move", "go", "run", "loose", "rise",
    "verge", "brink", "basis", "average", "occasion", "whole", "contrary", "same", "one", "day", "days",
    "night", "nights", "morning", "afternoon", "evening", "weekend", "weekday", "monday", "tuesday",
    "wednesday", "thursday", "friday", "saturday", "sunday", "date", "hour", "trip", "journey",
    "mission", "diet", "budget", "lookout", "agenda", "record", "air", "line", "horizon", "influence",
    "impression", "direction", "supervision", "guidance", "leadership", "control", "age", "name",
    "law", "rules", "rule", "terms", "weather", "radar", "sun", "care", "pressure", "threat", "command",
    "auspices", "banner", "pretense", "pretext", "assumption", "condition", "conditions",
    "circumstances", "guise", "spell", "microscope", "knife", "gun", "spotlight", "surface", "premise",
    "premises", "stewardship", "tutelage", "watch", "eye", "watchful", "heading", "title", "category",
    "topic", "subject", "theme", "first", "second", "third", "last", "next", "following", "previous",
    "opposite", "far", "near", "grounds", "behalf", "account", "hand", "hands", "fly", "spot", "mend",
    "road", "house", "money", "nose", "dot", "clock", "cheap", "ropes", "rocks", "cover", "show",
    "program", "programme", "news", "channel", "episode", "album", "stage", "bus", "train", "plane",
    "flight", "ship", "boat", "understanding", "attack", "arrest", "review", "construction",
    "investigation", "regime",
)  # fmt: skip
# Verbs/nouns taking "on" as a particle or topic marker: "turned on the light", "a lecture on the war".
_OU_P1_VETO = _fs(
    "turn", "turns", "turned", "turning", "switch", "switches", "switched", "switching", "put", "puts",
    "putting", "try", "tries", "tried", "trying", "carry", "carries", "carried", "carrying", "focus",
    "focuses", "focused", "focusing", "focussed", "depend", "depends", "depended", "depending",
    "dependent", "rely", "relies", "relied", "relying", "based", "comment", "comments", "commented",
    "commenting", "work", "works", "worked", "working", "spend", "spends", "spent", "spending", "take",
    "takes", "took", "taking", "taken", "go", "goes", "went", "going", "gone", "come", "comes", "came",
    "coming", "act", "acts", "acted", "acting", "agree", "agrees", "agreed", "agreeing", "insist",
    "insists", "insisted", "concentrate", "concentrates", "concentrated", "concentrating", "reflect",
    "reflects", "reflected", "reflecting", "count", "counts", "counted", "counting", "feed", "feeds",
    "fed", "feeding", "prey", "preys", "preyed", "click", "clicks", "clicked", "clicking", "tap", "taps",
    "tapped", "tapping", "log", "logged", "logging", "sign", "signed", "signing", "hop", "hopped",
    "hopping", "get", "gets", "got", "getting", "catch", "catches", "caught", "pass", "passed", "vote",
    "voted", "voting", "bet", "bets", "betting", "report", "reports", "reported", "reporting",
    "article", "articles", "lecture", "lectures", "essay", "essays", "documentary", "course",
    "seminar", "tips", "advice", "information", "thoughts", "views", "opinion", "opinions", "update",
    "updates", "news", "research", "study", "studies", "emphasis", "effect", "effects", "impact",
    "influence", "attack", "attacks", "ban", "bans", "tax", "taxes", "limit", "limits", "restrictions",
    "debate", "discussion", "workshop", "expert", "experts", "guide", "tutorial", "perspective",
    "insight", "insights", "statement", "ruling", "conference", "podcast", "hold", "holds", "held",
    "keep", "keeps", "kept", "stay", "stays", "stayed", "later", "and", "or", "born", "appear",
    "appears", "appeared", "appearing", "played", "published", "posted", "shared", "available",
)  # fmt: skip
# Words that end the noun phrase after the article.
_NP_STOP = _fs(
    "of", "and", "or", "with", "in", "on", "at", "by", "for", "to", "is", "are", "was", "were", "while",
    "near", "next", "under", "from", "that", "which", "who", "as", "underneath", "beneath", "atop",
)  # fmt: skip
# "on top of that/this/everything" means "in addition"; "on top of the world" is an idiom.
_ON_TOP_OBJ_VETO = _fs(
    "that", "this", "everything", "things", "all", "which", "it", "world", "underneath", "under",
    "beneath", "atop", "on",
)  # fmt: skip


def _ou_np_ok(w: _Words, i: int) -> bool:
    """Token i is on/under, followed by an article and a plain-object noun phrase."""
    if w.next(i) not in _ARTICLES or w.prev(i) in _OU_P1_VETO:
        return False
    for k in range(2, 5):
        word = w.next(i, k)
        if word is None or word in _NP_STOP:
            return k > 2  # at least one word after the article
        if word in _OU_NP_VETO:
            return False
    return True


def _on_top_obj_ok(w: _Words, first: int, last: int) -> bool:
    if w.prev(first) in _OU_P1_VETO:
        return False
    obj = w.next(last)
    if obj is None or obj in _NON_OBJECT or obj in _ON_TOP_OBJ_VETO:
        return False
    return not (obj == "the" and w.next(last, 2) in _ON_TOP_OBJ_VETO)


def swap_on_under(text: str) -> str | None:
    """Swap support/containment relations: "on a table" <-> "under a table", "on top of" <-> "underneath".

    Conservative: see the mapping above. "on the left/right/top/side" never changes.
    """
    if not _OU_HINT_RE.search(text):
        return None
    w = _Words(text)
    edits: list[Edit] = []
    i, n = 0, len(w)
    while i < n:
        low = w.low[i]
        if low == "on" and w.next(i) == "top":
            if w.next(i, 2) == "of":  # "on top of X" -> "underneath X"
                if _on_top_obj_ok(w, i, i + 2):
                    edits.append((w.spans[i][0], w.spans[i + 2][1], _match_case(w.src(i, i + 2), "underneath")))
                i += 3
                continue
            if w.ends_clause(i + 1) and w.prev(i) not in _OU_P1_VETO:  # "cherries on top."
                edits.append((w.spans[i][0], w.spans[i + 1][1], _match_case(w.src(i, i + 1), "underneath")))
            i += 2
            continue
        if low == "underneath":
            if _on_top_obj_ok(w, i, i):
                edits.append((*w.spans[i], _match_case(w.src(i), "on top of")))
            elif w.ends_clause(i) and w.prev(i) not in _OU_P1_VETO:
                edits.append((*w.spans[i], _match_case(w.src(i), "on top")))
        elif low in ("atop", "beneath"):
            if w.next(i) in _OBJ_DETS and w.prev(i) not in _OU_P1_VETO:
                edits.append(_swap_token(w, i, _OU_SWAP))
        elif low in ("on", "under") and _ou_np_ok(w, i):
            edits.append(_swap_token(w, i, _OU_SWAP))
        i += 1
    return _apply(text, edits)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

HARD_NEGATIVES: dict[str, Callable[[str], str | None]] = {
    "left-right": swap_left_right,
    "above-below": swap_above_below,
    "front-behind": swap_front_behind,
    "on-under": swap_on_under,
}


def make_hard_negative(text: str, axis: str) -> str | None:
    """Hard negative of `text` along `axis` (a key of HARD_NEGATIVES), or None if nothing to flip."""
    try:
        swap = HARD_NEGATIVES[axis]
    except KeyError:
        valid = ", ".join(sorted(HARD_NEGATIVES))
        raise ValueError(f"unknown hard-negative axis {axis!r}; valid axes: {valid}") from None
    return swap(text)
