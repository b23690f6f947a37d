"""Hard-negative captions by flipping one spatial relation (paper Section 4.2, NegCLIP loss).

Each swapper returns the caption with every relation of its axis flipped, or None when it found
nothing it could flip safely. The rules are conservative on purpose: a missed negative only costs a
little training signal, but a "negative" that still describes the image (e.g. "he left the room"
turned into "he right the room", "left and right" into "right and left", or "one lamp on the left
and another on the right" into its own paraphrase) teaches the wrong thing. When in doubt: None.

    make_negative(text, axis) -> (negative or None, rule)      # the rule that fired, or why not
    python -m data_prep.negatives --evaluate tests/data/negatives_corpus.jsonl
    python -m data_prep.negatives --explain "jane doe, left, and john roe attend the opening"

Design, shared by all axes:
- Text is split into word tokens (Unicode letters, inner apostrophes) and only the characters of
  the swapped word (or phrase) are rewritten, so punctuation, whitespace and the case pattern of
  everything else survive unchanged.
- Decisions look only at neighbouring words, lower-cased (left/right also at a few facts about the
  whole text: is it a short referring expression, does it say "wrong", which clauses name a side).
  The rules never ask which side of a pair a word is (left vs right, above vs below), so a swapped
  caption gets the very same decisions and swapping twice gives back the original.
- All swaps of one call are collected first and applied in one pass: no left->right->left.
- "X and/or Y" coordinations of the two sides ("left and right", "top and bottom") are left alone:
  flipped they mean the same thing, which would make a false negative.

The left/right rules are measured against tests/data/negatives_corpus.jsonl: sentences in the styles
of LCS-558K (BLIP captions, agency credit lines), COCO, RefCOCO/Visual Genome, GQA, LLaVA-Instruct
GPT answers and text-only chat, each with the negative a careful reader would write (or null).
"""

import re
from collections.abc import Callable, Iterable

__all__ = [
    "HARD_NEGATIVES",
    "evaluate",
    "explain_left_right",
    "make_hard_negative",
    "make_negative",
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

    __slots__ = ("ctx", "low", "spans", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.ctx = None  # left/right rules: facts about the whole text, computed on demand
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
#
# Every token is decided by a named rule (`_lr_rule`), then the whole text is checked once more
# (`_lr_symmetric`): a swap that only trades two sides described alike ("one lamp on the left and
# another on the right") is refused. Rule names are reported by `explain_left_right`, recorded per
# caption by build_shards and sampled by inspect_shards, so every negative can be traced to a rule.
#
# Spatial rules (a token is swapped under the first that applies, after the vetoes):
#   suffix          leftmost, right-hand, leftward(s)
#   direction       "from left to right", "left-to-right"
#   credit-bracket  "John Smith (left)"
#   credit-comma    "jane doe, left, and john roe attend": a bare side (with an optional ordinal)
#                   set off by commas after a name, the agency credit-line convention
#   credit-name     "the striker right celebrates his goal": a bare side between a name and the
#                   caption's verb, where the verb "left" cannot stand
#   credit-letter   "Jane Doe (L) and John Roe (R)": only when both marks are there
#   prep-noun       "on the left", "to her right", "the left of the image", "take a right"
#   side-noun       "the left side", "his right hand", "a left turn" (closed class of parts/sides)
#   possessive      "his right arm", "the man's left boot"
#   locative        "in the left basket", "against the right wall": a determiner phrase inside a
#                   place preposition
#   contrast        "the left screen ... the right screen", "a pair of shoes, the left one"
#   refexp          "left blue mug", "right guy in white", "the right one", "person right": a short
#                   referring expression without a finite verb (RefCOCO, Visual Genome answers)
#   modifier        "top left", "far right", "second from left"
#   bare-prep       "on right", "pictured left", "from left"
#   turn-verb       "turn left", "veered right"
#   orient-verb     "facing left", "pointing right"
#   of              "a dog left of a table"
#
# "right" as "correct" is told by syntax, not by its noun. Before a noun (not a side or body part)
# a determiner phrase "the right X" is swapped only with positive spatial evidence (a place
# preposition, a possessive, a contrast with another side, a referring expression). Evidence is
# overruled when the phrase reads as evaluative: a purpose complement ("the right shoes for hiking",
# "the right time to go"), a degree word ("just the right amount"), "wrong" in the same text, or an
# abstract-noun suffix ("-ness", "-tion", "-ity", ...). Verb objects ("find the right balance",
# "have the right mindset") and predicates ("is the right size") carry no evidence and stay put. A
# short idiom list remains for phrases that are locative in form ("in the right place", "at the
# right time", "on the right track").

_LR_SWAP = {"left": "right", "right": "left"}
_LR = frozenset(_LR_SWAP)
_LR_HINT_RE = re.compile(r"(?i)left|right|\([lr]\)")
# Candidate tokens. Plurals "lefts"/"rights" are not candidates: "rights" is almost always legal
# ("human rights", "all rights reserved"), and "leftover", "copyright", "alright" never match.
_LR_TOKEN_RE = re.compile(r"(left|right)(most|wards?|hand|handed|handers?)?")

# Words that make a following left/right a noun or adjective.
_DETS = _fs("the", "a", "an", "its", "his", "her", "their", "my", "your", "our")
_POSSESSIVE_DETS = _fs("its", "his", "her", "their", "my", "your", "our")
# Contracted "is"/"has" that look like possessives ("it's left of the door", "what's left").
_S_CONTRACTIONS = _fs(
    "what's", "that's", "it's", "he's", "she's", "there's", "here's", "who's", "where's", "let's",
    "everything's", "nothing's", "something's", "how's", "why's", "when's", "this's",
)  # fmt: skip
# "on the left", "to her right", "in the far left": a preposition before the determiner.
_STRONG_PREPS = _fs("on", "to", "at", "from", "toward", "towards", "in", "into", "onto", "near", "by")
# Place prepositions that make "P the left/right X" locative ("in the left basket"). Not "at", "to",
# "from", "by", "for", "with": "at the right temperature", "to the right size", "from the right
# source", "with the right tools" are evaluative far more often than spatial.
_LOC_PREPS = _fs(
    "in", "on", "into", "onto", "inside", "against", "atop", "under", "beneath", "behind", "beside",
    "near", "across", "along", "over", "through", "underneath",
)  # fmt: skip
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
# Sides, body parts and parts of things: left/right before them is spatial with or without a
# determiner ("Left side of the road", "his right hand", "a left turn").
_FOLLOW_STRONG = _fs(
    "side", "sides", "hand", "hands", "handed", "hander", "handers", "corner", "corners", "edge", "edges",
    "lane", "lanes", "arm", "arms", "leg", "legs", "foot", "feet", "eye", "eyes", "ear", "ears",
    "shoulder", "shoulders", "knee", "knees", "elbow", "elbows", "wrist", "wrists", "ankle", "ankles",
    "cheek", "cheeks", "hip", "hips", "thigh", "thighs", "paw", "paws", "flank", "flanks", "turn",
    "turns", "eyebrow", "eyebrows", "hemisphere", "most", "ward", "wards",  # "left-most", "right-ward"
)  # fmt: skip
# Also objects of the verb "leave" ("he left half of the pizza"): spatial only at a clause start or
# after a determiner.
_FOLLOW_WEAK = _fs(
    "half", "part", "parts", "portion", "section", "column", "columns", "panel", "panels", "quadrant",
    "region", "area", "border", "margin", "image", "photo", "picture", "frame",
)  # fmt: skip
# Parts after a determiner ("the left wing of the plane", "the right end of the rope").
_PART_NOUNS = (
    _FOLLOW_STRONG
    | _FOLLOW_WEAK
    | _fs("wing", "wings", "end", "ends", "halves", "pane", "tip", "lens", "page", "field", "flank", "back")
)
# Idioms that are locative in form: "at the right time", "in the right place", "on the right track",
# "in his right mind", plus geometry ("right angle") and "the right answer". Not the mechanism for
# telling "right" = correct (that is syntax, see above); only phrases whose form is spatial.
_IDIOM_NOUNS = _fs(
    "answer", "answers", "time", "times", "timing", "moment", "moments", "thing", "things", "choice",
    "choices", "decision", "decisions", "way", "ways", "place", "places", "spot", "position",
    "direction", "directions", "track", "path", "idea", "ideas", "word", "words", "fit", "size",
    "sizes", "amount", "amounts", "balance", "mix", "combination", "kind", "kinds", "type", "types",
    "sort", "tool", "tools", "price", "prices", "order", "approach", "attitude", "question",
    "questions", "reason", "reasons", "conditions", "angle", "angles", "angled", "triangle",
    "triangles", "mind", "mess", "move", "moves", "call", "note", "tone", "spirit", "equipment", "gear",
    "ingredients", "information", "info", "solution", "solutions", "job", "jobs", "career", "match",
    "level", "levels", "temperature", "setting", "settings", "lighting", "opportunity", "environment",
    "strategy", "step", "steps", "stuff", "version", "dose", "dosage", "number", "response", "result",
    "results", "outcome", "course", "impression", "message", "priorities", "context", "formula",
    "password", "code", "color", "colour", "colors", "colours", "shade", "part", "parts", "portion",
    "portions", "mood", "hands", "light", "mindset", "candidate", "candidates", "partner", "partners",
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

# Function words: a closed class. A word outside it after "the left"/"the right" is read as the
# noun (or an adjective before it) that left/right modifies.
_FUNCTION = (
    _DETS
    | _BE
    | _OBJECTS
    | _PREP_FOLLOW
    | _STRONG_PREPS
    | (_SUBJECTS - {"people", "someone", "somebody", "everyone", "everybody", "nobody"})
    | _fs(
        "of", "for", "with", "without", "and", "or", "but", "nor", "so", "yet", "than", "as", "if",
        "while", "whereas", "because", "since", "when", "where", "which", "who", "whom", "whose", "what",
        "how", "why", "that", "this", "these", "those", "do", "does", "did", "done", "has", "have",
        "had", "been", "being", "can", "could", "will", "would", "shall", "should", "may", "might",
        "must", "not", "no", "very", "too", "also", "just", "only", "even", "then", "there", "here",
        "now", "about", "against", "between", "among", "during", "before", "after", "until", "via",
        "from", "within", "upon", "like", "unlike", "per", "each", "every", "both", "either",
        "neither", "all", "any", "some", "such", "own", "same", "other", "another", "more", "most",
        "much", "many", "few", "less", "least", "again", "still", "yes", "ok", "okay", "please",
        "i'm", "you're", "we're", "they're", "i've", "you've", "we've", "they've", "i'd", "you'd",
        "he'd", "she'd", "we'd", "they'd", "i'll", "you'll", "he'll", "she'll", "we'll", "they'll",
        "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "can't", "won't",
        "shouldn't", "wouldn't", "couldn't", "hasn't", "haven't", "hadn't",
    )
)  # fmt: skip
# Words before "the right X" that make the phrase evaluative: "just the right amount".
_DEGREE = _fs("just", "exactly", "precisely", "quite", "all", "not", "simply", "absolutely", "definitely")
# Derivational suffixes of abstract nouns ("mindfulness", "position", "quality", "alignment").
_ABSTRACT_SUFFIXES = ("ness", "ity", "ism", "ship", "hood", "tion", "sion", "ology", "ics", "ude")
_ABSTRACT_SUFFIXES_LONG = ("ment", "ance", "ence")  # only in words of 7+ letters: not "fence"
# Words that signal a set the side picks from: "two cups ... the left cup", "a pair of shoes, the left one".
_SET_WORDS = _fs(
    "two", "three", "four", "five", "six", "both", "pair", "pairs", "couple", "several", "multiple",
    "other", "others", "twin", "twins",
)  # fmt: skip
# Adjectives that are also particles of "leave": in a referring expression "left open laptop" is the
# open laptop on the left, but "left open" alone is the verb.
_ADJ_PARTICLES = _fs("open", "empty", "blank", "back", "dead", "hanging", "inside", "outside")
# A finite verb or subject pronoun: the text is a sentence, not a referring expression.
_FINITE = (
    _BE
    | _S_CONTRACTIONS
    | _fs(
        "be", "been", "has", "have", "had", "do", "does", "did", "can", "could", "will", "would",
        "shall", "should", "may", "might", "must", "i", "you", "he", "she", "we", "they", "i'm",
        "you're", "we're", "they're", "isn't", "aren't", "don't", "doesn't", "didn't", "can't", "won't",
    )
)  # fmt: skip
_MAX_REFEXP_WORDS = 10
_QUANTITY = _fs(
    "one", "two", "three", "four", "five", "no", "only", "last", "few", "some", "all", "nothing",
    "none", "any", "many", "several", "enough", "remaining",
)  # fmt: skip

# Credit lines. A bare side after a name, followed by the caption's verb: "the striker right
# celebrates". Only verbs that are not also plural nouns, so that "left homes in ruins", "left
# signs", "left presents" (the verb "leave" and its object) never match.
_CREDIT_VERBS = _fs(
    "celebrates", "attends", "poses", "arrives", "speaks", "reacts", "gestures", "greets", "hugs",
    "embraces", "congratulates", "competes", "performs", "listens", "chats", "shakes", "holds",
    "receives", "accepts", "kisses", "looks", "makes", "leads", "helps", "meets", "takes", "gives",
    "tries", "joins", "waits", "controls", "vies", "defends", "applauds", "salutes", "walks",
    "celebrate", "attend", "pose", "arrive", "speak", "react", "greet", "compete", "perform",
    "listen", "congratulate", "embrace", "chat",
)  # fmt: skip
# Base forms after "X left and Y ...": "footballer left and his teammate celebrate".
_CREDIT_BASE_VERBS = _fs(
    "celebrate", "attend", "pose", "arrive", "speak", "react", "greet", "compete", "perform", "listen",
    "congratulate", "embrace", "chat", "shake", "hold", "look",
)  # fmt: skip
# Ordinals and positions inside a comma-set credit: "person, second left, poses".
_CREDIT_MODS = _fs("second", "third", "fourth", "fifth", "sixth", "standing", "seated", "sitting", "back")
# Words before ", right," that make it a discourse marker ("okay, right, ..."), not a position.
_DISCOURSE = _fs(
    "okay", "ok", "yes", "yeah", "yep", "oh", "ah", "well", "so", "alright", "now", "hey", "um",
    "uh", "mean", "know", "see", "go", "then", "first", "next", "and", "but", "or", "turn", "straight",
    "up", "down", "sure", "fine", "good", "great", "exactly", "true", "correct",
)  # fmt: skip
_COMMA_GAP_RE = re.compile(r"[ \t]*,[ \t]*")
_COMMA_OR_CLOSE_RE = re.compile(r"[ \t]*(?:,|\))")
# "Jane Doe (L) and John Roe (R)": single-letter marks, only as a pair, never near trademark signs.
_CREDIT_LETTER_RE = re.compile(r"(?<=[^\W\d_][ \t])\(([LlRr])\)(?=[\s,.;:]|$)")
_TRADEMARK_RE = re.compile(r"(?i)\((?:tm|c)\)|[\u00ae\u2122\u00a9]")
_LETTER_SWAP = {"L": "R", "R": "L", "l": "r", "r": "l"}


def _is_possessive(word: str | None) -> bool:
    return word is not None and word.endswith("'s") and word not in _S_CONTRACTIONS


def _is_det(word: str | None) -> bool:
    return word in _DETS or _is_possessive(word)


def _is_content(word: str | None) -> bool:
    return word is not None and word not in _FUNCTION and word not in _LR


def _is_participle(word: str) -> bool:
    """ "dressed", "parked" (not "speed", "bed"): a participle after a side noun, not a noun it modifies."""
    return (len(word) >= 5 and word.endswith("ed") and not word.endswith("eed")) or (
        len(word) >= 5 and word.endswith("ing") and word not in _IDIOM_NOUNS
    )


def _abstract(word: str) -> bool:
    """An abstract-noun suffix, singular or plural: "mindfulness", "proportions", "adjustments"."""
    if word.endswith("s") and not word.endswith(("ss", "ics")):
        word = word[:-1]
    return word.endswith(_ABSTRACT_SUFFIXES) or (len(word) >= 7 and word.endswith(_ABSTRACT_SUFFIXES_LONG))


class _LRContext:
    """Facts about the whole text that some token rules need, computed once and only when asked."""

    __slots__ = ("_fragment", "_wrong", "w")

    def __init__(self, w: _Words) -> None:
        self.w = w
        self._fragment: bool | None = None
        self._wrong: bool | None = None

    @property
    def fragment(self) -> bool:
        """A short referring expression: few words, no finite verb, no subject pronoun, no question."""
        if self._fragment is None:
            w = self.w
            self._fragment = (
                0 < len(w) <= _MAX_REFEXP_WORDS
                and "?" not in w.text
                and "!" not in w.text
                and not any(low in _FINITE for low in w.low)
            )
        return self._fragment

    @property
    def wrong(self) -> bool:
        """ "wrong" in the text: "the right X" is then read against "the wrong X"."""
        if self._wrong is None:
            self._wrong = "wrong" in self.w.low
        return self._wrong


def _ctx(w: _Words) -> _LRContext:
    if w.ctx is None:
        w.ctx = _LRContext(w)
    return w.ctx


def _np_tail(w: _Words, i: int) -> tuple[list[str], str | None, int]:
    """Content words after token i (up to 3), the word that ends them, and that word's offset."""
    words: list[str] = []
    k = 1
    while k <= 4:
        word = w.next(i, k)
        if not _is_content(word):
            return words, word, k
        words.append(word)
        k += 1
    return words, None, k


def _evaluative(w: _Words, i: int) -> bool:
    """ "the right X" reads as "the correct X": purpose complement, degree word, "wrong", abstract noun."""
    words, stop, k = _np_tail(w, i)
    if stop == "for":  # "the right shoes for hiking"
        return True
    if stop == "to" and _is_content(w.next(i, k + 1)):  # "the right time to go", not "to the left"
        return True
    if w.prev(i, 2) in _DEGREE:  # "just the right amount"
        return True
    if _ctx(w).wrong:  # "the right way and the wrong way"
        return True
    return any(_abstract(word) for word in words)


def _set_evidence(w: _Words, i: int, noun: str) -> bool:
    """The text names a set the side picks from: another left/right before the same noun, a number or
    "pair"/"both"/"other" before it (or, for "one", anywhere)."""
    forms = {noun, noun + "s", noun + "es", noun[:-1] if noun.endswith("s") else noun}
    for j, low in enumerate(w.low):
        if j == i:
            continue
        if low in _LR and w.next(j) == noun:  # "the left screen ... the right screen"
            return True
        if low in _SET_WORDS:
            if noun in ("one", "ones"):
                return True
            if w.next(j) in forms or (w.next(j, 2) in forms and w.next(j) not in _LR):
                return True
    return False


def _prenominal(w: _Words, i: int) -> str | None:
    """Token i is "left"/"right" after a determiner and before a content word: "the right X"."""
    n1 = w.next(i)
    p1, p2 = w.prev(i), w.prev(i, 2)
    if n1 in _PART_NOUNS:
        return "side-noun"
    if p1 in _POSSESSIVE_DETS or _is_possessive(p1):
        if p1 == "her" and (p2 in _PROVE or n1 in _PARTICLES):  # "proved her right", "found her right outside"
            return None
        return "possessive"
    if _evaluative(w, i):
        return None
    if p2 in _LOC_PREPS:
        return "locative"
    if p2 in _STRONG_PREPS and n1.endswith("s") and not n1.endswith("ss"):
        return "prep-noun"  # "the sign at the left reads STOP", "to the right stands a tree": the verb
    if _set_evidence(w, i, n1):
        return "contrast"
    ctx = _ctx(w)
    if ctx.fragment and (i == 1 or p2 == "of"):  # "the right one", "the back of the left chair"
        return "refexp"
    return None


def _comma_set(w: _Words, i: int) -> bool:
    """ "jane doe, left, and ...", "person, second left, poses": a bare side set off by commas after a name."""
    s = i
    while w.prev(s) in _CREDIT_MODS:
        s -= 1
    if s == 0 or not _COMMA_GAP_RE.fullmatch(w.gap(s)):
        return False
    name = w.low[s - 1]
    if not _is_content(name) or name in _DISCOURSE or name in _LR or name.endswith("ed"):
        return False
    if not _COMMA_OR_CLOSE_RE.match(w.text, w.spans[i][1]):
        return False
    return not (i + 1 < len(w) and w.low[i + 1] in _LR)  # "left, right, left": a chant, not a credit


def _credit_name(w: _Words, i: int, p1: str | None, n1: str | None) -> bool:
    """ "the striker right celebrates", "footballer left and his teammate celebrate"."""
    if not _is_content(p1) or p1 in _REMNANT or p1 in _AUX or p1.endswith(("ed", "ly")):
        return False
    if n1 in _CREDIT_VERBS:
        return True
    if n1 == "and":
        return any(w.next(i, k) in _CREDIT_BASE_VERBS for k in range(3, 6))
    return False


def _refexp_tail(w: _Words, i: int, p1: str | None) -> bool:
    """ "person right", "umbrella left": a side after the noun, ending a referring expression of few words."""
    if i != len(w) - 1 or len(w) > 4 or not _is_content(p1) or p1 in _REMNANT:
        return False
    if not w.linked(i) or not _ctx(w).fragment:
        return False
    return not any(low in _QUANTITY for low in w.low)


def _lr_rule(w: _Words, i: int, suffix: str) -> str | None:
    """The rule under which token i ("left"/"right" + optional suffix) is spatial, or None."""
    if suffix in ("most", "ward", "wards"):
        return "suffix"
    p1, p2, p3 = w.prev(i), w.prev(i, 2), w.prev(i, 3)
    n1, n2 = w.next(i), w.next(i, 2)
    if suffix:  # lefthand(ed), righthander: spatial, except "righthand man"
        return None if suffix == "hand" and n1 in _HAND_MAN else "suffix"

    if _coordinated(w, i, _LR):
        return None
    # "from left to right", "left-to-right": directional, always swapped as a pair.
    if (n1 == "to" and n2 in _LR) or (p1 == "to" and p2 in _LR):
        return "direction"
    # Photo-credit style labels: "John Smith (left) and Jane Doe (right)".
    start, end = w.spans[i]
    if _OPEN_BRACKET_RE.search(w.text, 0, start) and _CLOSE_BRACKET_RE.match(w.text, end):
        return "credit-bracket"

    # Vetoes that hold in every context.
    if n1 in _POLITICAL:
        return None
    # "right-wing"/"left-leaning" (hyphenated) are political; spaced "the left wing of the plane" is not.
    # "right wing" + political noun is political either way.
    if n1 in ("wing", "wings", "leaning") and (
        _HYPHEN_RE.fullmatch(w.gap(i + 1)) or n1 == "leaning" or n2 in _POLITICAL
    ):
        return None
    if n1 == "hand" and n2 in _HAND_MAN:
        return None
    if n1 in _IDIOM_NOUNS and not (n1 in _NEED_OF and n2 == "of"):
        return None
    if n1 == "of" and n2 == "way":  # "right of way"
        return None
    if n1 in ("side", "sides") and n2 in ("up", "out"):  # "right side up" = upright, "right side out"
        return None

    # "the right X": a determiner, then a word that is not a function word.
    # After a preposition a participle follows the noun: "the man on the left wearing a hat".
    if _is_det(p1) and _is_content(n1) and not (p2 in _STRONG_PREPS and _is_participle(n1)):
        return _prenominal(w, i)
    # "on the left", "to her right", "on the far left": a noun; nothing after it can veto.
    if _is_det(p1) and p2 in _STRONG_PREPS:
        return "prep-noun"
    if p1 in (_MODS | _MODS_NEED_DET) and _is_det(p2) and p3 in _STRONG_PREPS:
        return "modifier"
    if p1 is None and _comma_set(w, i):
        return "credit-comma"
    if p1 is None and i == 0 and _ctx(w).fragment and _is_content(n1):
        # "left blue mug", "right guy in white", "left open laptop" (but "left open" alone is the verb)
        if n1 in _FOLLOW_STRONG or n1 in _FOLLOW_WEAK:
            return "side-noun"
        if n1 in _ADJ_PARTICLES:
            if _is_content(n2):
                return "refexp"
        elif n1 not in _PARTICLES and not n1.endswith("ed") and not _evaluative(w, i):
            return "refexp"

    if p1 in _SUBJECTS or p1 in _AUX:
        return None
    if p1 is not None and p1.endswith(("'ve", "'d", "'ll", "'re", "'m")):
        return None
    if n1 in _PARTICLES or n1 in _OBJECTS:
        return None

    if _is_det(p1):
        if n1 == "to":  # "the right to vote", "their right to protest"
            return None
        if p1 == "her" and (n1 in _PREP_FOLLOW or p2 in _PROVE):  # "found her right outside"
            return None
        return "det-noun"
    if p1 in _MODS:
        return "modifier"
    if p1 in _MODS_NEED_DET:
        return "modifier" if _is_det(p2) or n1 in _FOLLOW_STRONG or n1 in _FOLLOW_WEAK else None
    if p1 in _CREDIT_MODS and _comma_set(w, i):  # "person, second left, poses"
        return "credit-comma"
    if p1 in _DIRECT_PREPS:
        return "bare-prep"
    if p1 in _TURN_VERBS:
        return None if n1 in ("around", "round") else "turn-verb"
    if p1 in _ORIENT_VERBS:
        return None if n1 in _PREP_FOLLOW else "orient-verb"

    # No trigger before the word: decide on what follows.
    if n1 in _FOLLOW_STRONG:
        return "side-noun"
    if n1 in ("wing", "wings"):  # "left wing of the building"; bare "left wing" may be political
        return "side-noun" if n2 == "of" else None
    if n1 == "of":  # "a dog left of a table" vs "what's left of the cake"
        if p1 in _REMNANT:
            return None
        if p1 in _BE:
            return None if p2 in _REMNANT else "of"
        return "of"
    if n1 in _FOLLOW_WEAK and p1 is None:
        return "side-noun"
    if _credit_name(w, i, p1, n1):
        return "credit-name"
    if n1 is None and _refexp_tail(w, i, p1):
        return "refexp"
    return None


def _lr_spatial(w: _Words, i: int, suffix: str) -> bool:
    """Whether token i ("left"/"right" + optional suffix) is used in the spatial sense."""
    return _lr_rule(w, i, suffix) is not None


# --- sentence level: refuse swaps that describe both sides alike ----------------------------------

# Clause boundaries for the symmetry check: punctuation, and these words.
_SEG_WORDS = _fs("and", "or", "but", "while", "whereas", "nor", "as", "plus")
_GAP_PUNCT_RE = re.compile(r"[.;!?\n,:()\[\]\u2014\u2013]")
_STOP_PUNCT_RE = re.compile(r"[.;!?\n]")
# Words that say nothing about what stands on a side: function words, anaphors ("another", "one",
# "the other", "also", "as well"), frame words ("of the image") and verbs of mere placement.
_NOT_DESCRIPTIVE = (
    _FUNCTION
    | _fs(
        "one", "ones", "another", "other", "others", "both", "also", "too", "well", "more", "each",
        "same", "similar", "identical", "matching", "second", "either", "side", "sides", "hand",
        "image", "picture", "photo", "photograph", "frame", "scene", "view", "shot", "there",
        "placed", "positioned", "located", "situated", "seen", "visible", "sits", "sit", "stands",
        "stand", "is", "are", "appears", "appear", "set",
    )
)  # fmt: skip


class _Mention:
    __slots__ = ("figure", "pairable", "rest", "segment", "side")

    def __init__(self, side: str, segment: int, figure: frozenset[str], rest: frozenset[str], pairable: bool):
        self.side, self.segment, self.figure, self.rest, self.pairable = side, segment, figure, rest, pairable


def _gap_kind(w: _Words, j: int) -> str | None:
    """What separates token j-1 from token j: "stop" (.;!?), "comma" (, : brackets, dashes) or None."""
    if j <= 0:
        return "stop"
    m = _GAP_PUNCT_RE.search(w.text, w.spans[j - 1][1], w.spans[j][0])
    if m is None:
        return None
    return "stop" if _STOP_PUNCT_RE.search(w.text, w.spans[j - 1][1], w.spans[j][0]) else "comma"


def _clause(w: _Words, i: int) -> tuple[int, int]:
    """First and last token of the clause around token i: bounded by punctuation and by _SEG_WORDS."""
    first = i
    while _gap_kind(w, first) is None and w.low[first - 1] not in _SEG_WORDS:
        first -= 1
    last = i
    while last + 1 < len(w) and _gap_kind(w, last + 1) is None and w.low[last + 1] not in _SEG_WORDS:
        last += 1
    return first, last


def _descriptive(w: _Words, first: int, last: int, skip: int = -1) -> frozenset[str]:
    return frozenset(
        w.low[j]
        for j in range(first, last + 1)
        if j != skip and w.low[j] not in _NOT_DESCRIPTIVE and not _LR_TOKEN_RE.fullmatch(w.low[j])
    )


def _mention(w: _Words, i: int, side: str, rule: str) -> _Mention:
    first, last = _clause(w, i)
    figure = _descriptive(w, first, i - 1)
    rest = _descriptive(w, i + 1, last)
    if not figure and not rest:  # the clause says nothing but the side: borrow from its neighbours
        if first > 0 and _gap_kind(w, first) == "comma" and w.low[first - 1] not in _SEG_WORDS:
            # a bare mark between commas or brackets ("jane doe, left,", "John Roe (R)"): the name before
            figure = _descriptive(w, *_clause(w, first - 1))
        if last + 1 < len(w) and _gap_kind(w, last + 1) == "comma" and w.low[last + 1] not in _SEG_WORDS:
            # "On the left, there is a bed.": what follows the comma stands on that side
            rest = _descriptive(w, *_clause(w, last + 1))
    return _Mention(side, first, figure, rest, rule != "direction")


def _alike(a: frozenset[str], b: frozenset[str]) -> bool:
    """One description contains the other ("a small bowl of fruit" / "a similar bowl", "cars" / "")."""
    return a <= b or b <= a


def _lr_symmetric(w: _Words, swapped: list[tuple[int, str, str]]) -> bool:
    """Swapping gives the same side assignments: every swapped side pairs with an opposite side in
    another clause that describes the same thing (or leaves it implicit: "and another on the right")."""
    sides = [side for _, side, _ in swapped]
    if sides.count("left") != sides.count("right"):
        return False
    mentions = [_mention(w, i, side, rule) for i, side, rule in swapped]
    if not all(m.pairable for m in mentions):
        return False
    lefts = [m for m in mentions if m.side == "left"]
    rights = [m for m in mentions if m.side == "right"]
    ok = [
        [r.segment != m.segment and _alike(m.figure, r.figure) and _alike(m.rest, r.rest) for r in rights]
        for m in lefts
    ]
    match: list[int | None] = [None] * len(rights)  # right index -> left index

    def augment(a: int, seen: set[int]) -> bool:  # Kuhn's algorithm: a few mentions at most
        for b, fits in enumerate(ok[a]):
            if fits and b not in seen:
                seen.add(b)
                if match[b] is None or augment(match[b], seen):
                    match[b] = a
                    return True
        return False

    return all(augment(a, set()) for a in range(len(lefts)))


def _credit_letters(w: _Words) -> list[tuple[int, str, str]]:
    """ "(L)"/"(R)" credit marks: (token, side, rule) for each, only when both letters are there."""
    text = w.text
    if "(" not in text or _TRADEMARK_RE.search(text):
        return []
    marks = [m for m in _CREDIT_LETTER_RE.finditer(text)]
    if {m.group(1).upper() for m in marks} != {"L", "R"}:
        return []
    starts = {span[0]: j for j, span in enumerate(w.spans)}
    out = []
    for m in marks:
        j = starts.get(m.start(1))
        if j is not None:
            out.append((j, "left" if m.group(1).upper() == "L" else "right", "credit-letter"))
    return out


def explain_left_right(text: str) -> tuple[str | None, str]:
    """(negative or None, rule): the left/right-swapped text and the rule(s) that fired, "+"-joined;
    or None and why: "no-left-right", "not-spatial", "coordinated" ("left and right") or "symmetric"
    (both sides described alike, so the swap would still describe the image)."""
    if not _LR_HINT_RE.search(text):
        return None, "no-left-right"
    w = _Words(text)
    swapped: list[tuple[int, str, str]] = []
    coordinated = candidates = False
    for i, low in enumerate(w.low):
        if low[0] not in "lr":  # cheap test first: most words cannot be left/right
            continue
        m = _LR_TOKEN_RE.fullmatch(low)
        if m is None:
            continue
        candidates = True
        rule = _lr_rule(w, i, m.group(2) or "")
        if rule is not None:
            swapped.append((i, m.group(1), rule))
        elif not m.group(2) and _coordinated(w, i, _LR):
            coordinated = True
    letters = _credit_letters(w)
    swapped += letters
    if not swapped:
        return None, "coordinated" if coordinated else ("not-spatial" if candidates else "no-left-right")
    if _lr_symmetric(w, swapped):
        return None, "symmetric"
    edits = [_swap_token(w, i, _LR_SWAP, stem=side) for i, side, rule in swapped if rule != "credit-letter"]
    for i, _, _ in letters:
        start, end = w.spans[i]
        edits.append((start, end, _LETTER_SWAP[text[start:end]]))
    result = _apply(text, edits)
    if result is None:
        return None, "not-spatial"
    return result, "+".join(sorted({rule for _, _, rule in swapped}))


def swap_left_right(text: str) -> str | None:
    """Swap spatial "left" <-> "right" ("on the left", "left of", "top-left", "leftmost", credit lines,
    referring expressions, ...).

    Returns None when no spatial left/right was found, or when the swap would describe the image just
    as well (symmetric statements, "left and right"). Non-spatial uses stay untouched: the verb "left"
    ("he left the room", "left behind", "nothing left"), "right" as correct/immediately ("the right
    answer", "find the right balance", "right now"), rights, and political "right-wing"/"far-left party".
    """
    return explain_left_right(text)[0]


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


def _check_axis(axis: str) -> None:
    if axis not in HARD_NEGATIVES:
        valid = ", ".join(sorted(HARD_NEGATIVES))
        raise ValueError(f"unknown hard-negative axis {axis!r}; valid axes: {valid}")


def make_negative(text: str, axis: str = "left-right") -> tuple[str | None, str]:
    """(hard negative or None, rule): the rule(s) that fired ("+"-joined), or why there is none.

    Left/right reports its rules (see the left/right section: "prep-noun", "credit-comma", "refexp",
    ... or "no-left-right", "not-spatial", "coordinated", "symmetric"). The other axes report their
    axis name when they swapped, "none" when not.
    """
    _check_axis(axis)
    if axis == "left-right":
        return explain_left_right(text)
    negative = HARD_NEGATIVES[axis](text)
    return negative, axis if negative is not None else "none"


def make_hard_negative(text: str, axis: str) -> str | None:
    """Hard negative of `text` along `axis` (a key of HARD_NEGATIVES), or None if nothing to flip."""
    _check_axis(axis)
    return HARD_NEGATIVES[axis](text)


# --------------------------------------------------------------------------------------------------
# Evaluation against a hand-labelled corpus: python -m data_prep.negatives --evaluate FILE
# --------------------------------------------------------------------------------------------------


def _changed_words(text: str, other: str | None) -> set[int]:
    """Indices of the word tokens of `text` that differ in `other` (left/right swaps keep the tokens)."""
    if other is None:
        return set()
    a, b = _WORD_RE.findall(text), _WORD_RE.findall(other)
    if len(a) != len(b):  # not a token-preserving swap: count every token as changed
        return set(range(max(len(a), len(b))))
    return {k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y}


def evaluate(records: Iterable[dict], axis: str = "left-right") -> dict:
    """Agreement of make_negative with the corpus' expected outputs.

    Each record is {"style", "text", "expected", "note"?}; "expected" is the negative a careful reader
    would write, or null. An output is a *false negative* when it swaps a word the expected output
    keeps (a "negative" that still describes the image, or garbles it), *missed* when it is None or
    swaps only part of what the expected output swaps.
    """
    per_style: dict[str, list[int]] = {}
    rules: dict[str, int] = {}
    disagreements = []
    total = agree = false_negatives = missed = 0
    for record in records:
        text, expected, style = record["text"], record.get("expected"), record.get("style", "-")
        got, rule = make_negative(text, axis)
        total += 1
        ok = got == expected
        agree += ok
        counts = per_style.setdefault(style, [0, 0])
        counts[0] += ok
        counts[1] += 1
        rules[rule] = rules.get(rule, 0) + 1
        if ok:
            continue
        extra = _changed_words(text, got) - _changed_words(text, expected)
        kind = "false negative" if got is not None and (expected is None or extra) else "missed"
        false_negatives += kind == "false negative"
        missed += kind == "missed"
        disagreements.append(
            {"kind": kind, "style": style, "text": text, "expected": expected, "got": got, "rule": rule}
            | ({"note": record["note"]} if record.get("note") else {})
        )
    return {
        "axis": axis,
        "sentences": total,
        "agree": agree,
        "agreement": round(100.0 * agree / total, 2) if total else 0.0,
        "false_negatives": false_negatives,
        "missed": missed,
        "per_style": {k: {"agree": v[0], "sentences": v[1]} for k, v in sorted(per_style.items())},
        "rules": dict(sorted(rules.items(), key=lambda kv: -kv[1])),
        "disagreements": disagreements,
    }


def read_corpus(path: str) -> list[dict]:
    """A JSONL corpus: one {"style", "text", "expected", "note"?} object per line; blank lines and lines
    starting with "#" are skipped."""
    import json

    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{n}: not a JSON object: {err}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or "expected" not in record:
                raise ValueError(f'{path}:{n}: expected {{"style", "text", "expected"}}, got {line.strip()[:80]}')
            records.append(record)
    return records


def print_evaluation(result: dict) -> None:
    print(f"{result['axis']}: {result['agree']}/{result['sentences']} exact agreement ({result['agreement']}%)")
    print(f"  false negatives (a swap the expected output does not make): {result['false_negatives']}")
    print(f"  missed (no negative, or fewer swaps than expected): {result['missed']}")
    width = max((len(s) for s in result["per_style"]), default=5)
    for style, counts in result["per_style"].items():
        pct = 100.0 * counts["agree"] / counts["sentences"]
        print(f"  {style:<{width}}  {counts['agree']:>4}/{counts['sentences']:<4} {pct:6.1f}%")
    print("  rules: " + ", ".join(f"{rule} {n}" for rule, n in result["rules"].items()))
    for d in result["disagreements"]:
        print(f"  [{d['kind']}, {d['style']}] {d['text']!r}")
        print(f"      expected: {d['expected']!r}")
        print(f"      got:      {d['got']!r} ({d['rule']})" + (f"  note: {d['note']}" if d.get("note") else ""))


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m data_prep.negatives", description="Hard-negative captions: evaluate or explain."
    )
    parser.add_argument("--evaluate", metavar="FILE", help="JSONL corpus of {style, text, expected[, note]}")
    parser.add_argument("--explain", metavar="TEXT", nargs="+", help="print each text's negative and rule")
    parser.add_argument("--axis", default="left-right", choices=sorted(HARD_NEGATIVES))
    parser.add_argument("--json", metavar="FILE", help="--evaluate: also write the result here")
    parser.add_argument("--min-agreement", type=float, help="--evaluate: exit 1 below this percentage")
    args = parser.parse_args(argv)
    if not args.evaluate and not args.explain:
        parser.error("give --evaluate FILE or --explain TEXT")
    for text in args.explain or ():
        negative, rule = make_negative(text, args.axis)
        print(f"{text!r}\n  -> {negative!r} ({rule})")
    if not args.evaluate:
        return 0
    try:
        result = evaluate(read_corpus(args.evaluate), args.axis)
    except (OSError, ValueError) as err:
        print(f"negatives: {err}", file=sys.stderr)
        return 2
    print_evaluation(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)
    if args.min_agreement is not None and result["agreement"] < args.min_agreement:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
