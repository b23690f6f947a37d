"""The hard-negative rule of the authors' released code, beside ours (data_prep.negatives), chosen per recipe.

The release (GitHub lst627/CLIP-Embeds, `open_clip/src/leftright.json` read by `DataMixDataset._modify`) maps six
phrases to their opposites. For the caption drawn for a step it searches the phrases case-sensitively, in the
file's order; the first one found has every occurrence replaced by its opposite (`str.replace`); no phrase, no
negative. So "one on the left and one on the right" becomes "one on the right and one on the right" (the first
phrase found wins, the second is left as it is), "On the left, a tree." has none (case), and "left hand" has none.

Ours (`token_rules`) is `data_prep.negatives.make_negative`: word tokens, case-insensitive, every left/right mention
swapped at once, symmetric or non-spatial uses refused; build_shards writes its negatives into the shards.

    NEGATIVE_RULES["released"]("the cup is to the left of the box")   # -> "the cup is to the right of the box"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# leftright.json, in its key order (the order the release searches in).
RELEASED_PHRASES: tuple[tuple[str, str], ...] = (
    ("on the left", "on the right"),
    ("on the right", "on the left"),
    ("to the left", "to the right"),
    ("to the right", "to the left"),
    ("at the left", "at the right"),
    ("at the right", "at the left"),
)


def released_negative(text: str) -> str | None:
    """The release's negative of `text`: its first phrase (table order, case-sensitive) replaced everywhere, or
    None when no phrase occurs."""
    for phrase, opposite in RELEASED_PHRASES:
        if phrase in text:
            return text.replace(phrase, opposite)
    return None


def token_rules_negative(text: str) -> str | None:
    """Ours, as build_shards writes it into the shards (left/right axis)."""
    from data_prep.negatives import make_negative

    return make_negative(text, "left-right")[0]


# data.negative_rule -> the negative of one caption (None: no negative).
NEGATIVE_RULES: dict[str, Callable[[str], str | None]] = {
    "released": released_negative,
    "token_rules": token_rules_negative,
}


def rule_negatives(rule: str, captions: Sequence[str], shard_negatives: Sequence[str | None]) -> list[str | None]:
    """Each caption's negative under `rule`: `token_rules` reads what build_shards wrote (`shard_negatives`, so a
    shard folder built with --hard-negatives none trains without), `released` derives them from the captions."""
    if rule == "token_rules":
        return list(shard_negatives)
    if rule not in NEGATIVE_RULES:
        raise ValueError(f"unknown negative rule {rule!r}; choose one of {', '.join(NEGATIVE_RULES)}")
    return [NEGATIVE_RULES[rule](caption) for caption in captions]
