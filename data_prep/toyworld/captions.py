"""Caption wording: BLIP-style LCS captions and the exact benchmark caption forms."""

from __future__ import annotations

import random
from collections.abc import Callable

from data_prep.toyworld.catalog import article
from data_prep.toyworld.geometry import OPPOSITE
from data_prep.toyworld.scenes import Scene

# Paper Appendix B.2; statistics are lowercase substring matches.
KEY_PHRASES = ("on the left", "on the right", "to the left", "at the left", "at the right")

# Real LCS-558K instructions (a sample of the pool LLaVA used to wrap BLIP captions).
LCS_INSTRUCTIONS = (
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Give a brief description of the image.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Share a concise interpretation of the image provided.",
    "Summarize the visual content of the image.",
    "Present a compact description of the photo's key features.",
    "Create a compact narrative representing the image presented.",
    "Give a short and clear explanation of the subsequent image.",
    "What is in the photo?",
)

# What'sUp caption words per relation (the benchmark always writes "a", even before vowels).
WHATSUP_WORDS = {
    "on": "on",
    "under": "under",
    "left_of": "to the left of",
    "right_of": "to the right of",
    "in_front_of": "in front of",
    "behind": "behind",
}
# COCO-/GQA-spatial two-object words; "to the front of" is the irregular form seen in the GQA file.
SPATIAL_QA_WORDS = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
    "in_front_of": "in front of",
    "behind": "behind",
}
IRREGULAR_FRONT = "to the front of"


def with_article(name: str) -> str:
    return f"{article(name)} {name}"


def whatsup_caption(subject: str, relation: str, reference: str) -> str:
    return f"A {subject} {WHATSUP_WORDS[relation]} a {reference}"


def spatial_qa_one_caption(name: str, side: str) -> str:
    return f"A photo of a {name} on the {side}"


def spatial_qa_two_caption(subject: str, relation: str, reference: str, irregular: bool = False) -> str:
    words = IRREGULAR_FRONT if irregular and relation == "in_front_of" else SPATIAL_QA_WORDS[relation]
    return f"A photo of a {subject} {words} a {reference}"


def lcs_instruction(rng: random.Random) -> str:
    """The human turn: `<image>` before or after the instruction, as both occur in the real file."""
    instruction = rng.choice(LCS_INSTRUCTIONS)
    return f"<image>\n{instruction}" if rng.random() < 0.5 else f"{instruction}\n<image>"


def lcs_caption(rng: random.Random, scene: Scene, backdrop_name: str) -> str:
    """A lowercase BLIP-like caption stating the scene's relation (some wordings lack a key phrase)."""
    relation = scene.relation
    assert relation is not None
    s, r = scene.subject_object().name, scene.reference_object().name
    # Every relation is described from one canonical direction; the converse swaps the roles.
    if relation in ("right_of", "under", "behind"):
        relation, s, r = OPPOSITE[relation], r, s
    a_s, a_r = with_article(s), with_article(r)
    bg = with_article(backdrop_name)
    # Left/right wordings name the side of either object, chosen at random, so every wording and its
    # left/right-swapped form are equally common as true captions: a hard negative can then only be told
    # apart by looking at the image, never by its words alone.
    side = rng.choice(("left", "right"))
    other = "right" if side == "left" else "left"
    x, y = (s, r) if side == "left" else (r, s)  # x is the object on `side`
    a_x, a_y = with_article(x), with_article(y)
    first, second = rng.sample([a_s, a_r], 2)
    templates: dict[str, list[Callable[[], str]]] = {
        "left_of": [
            lambda: f"{a_x} to the {side} of {a_y}",
            lambda: f"{a_x} on the {side} and {a_y} on the {other}",
            lambda: f"{a_x} at the {side} of {a_y}",
            lambda: f"{a_x} {side} of {a_y} on {bg} background",
            lambda: f"{first} and {second}, the {x.split()[-1]} is on the {side}",
            lambda: f"{a_x} on the {side} side, {a_y} beside it",
        ],
        "on": [
            lambda: f"{a_s} on top of {a_r}",
            lambda: f"{a_s} sitting on {a_r}",
            lambda: f"{a_r} under {a_s}",
            lambda: f"{a_r} with {a_s} on it",
            lambda: f"{a_s} resting on {a_r} against {bg} wall",
        ],
        "in_front_of": [
            lambda: f"{a_s} in front of {a_r}",
            lambda: f"{a_r} behind {a_s}",
            lambda: f"{a_s} standing in front of {a_r}",
            lambda: f"{a_s} partly hiding {a_r} behind it",
        ],
        "above": [lambda: f"{a_s} above {a_r}", lambda: f"{a_r} below {a_s}"],
    }
    return rng.choice(templates[relation])()
