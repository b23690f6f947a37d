"""Hard-negative caption swaps (paper Section 4.2): spatial words flip, every other sense stays put."""

import random
import re

import pytest

from data_prep.negatives import (
    HARD_NEGATIVES,
    make_hard_negative,
    swap_above_below,
    swap_front_behind,
    swap_left_right,
    swap_on_under,
)

# (input, expected output or None when nothing spatial may be swapped)
LEFT_RIGHT_CASES = [
    # "on/to/at the left/right", "left/right of", "to the left/right of"
    ("A cat on the left.", "A cat on the right."),
    ("A dog to the right of a table", "A dog to the left of a table"),
    ("A dog left of a table", "A dog right of a table"),
    ("The mug is right of the plate.", "The mug is left of the plate."),
    ("The sign at the left reads STOP.", "The sign at the right reads STOP."),
    ("Move it to the right to make room.", "Move it to the left to make room."),
    ("the left of the image is dark", "the right of the image is dark"),
    # "... side", "left-hand", "lefthand", "leftmost", "leftward(s)"
    ("on the right side of the road", "on the left side of the road"),
    ("Left side of the road", "Right side of the road"),
    ("the left hand side of the page", "the right hand side of the page"),
    ("a left-hand drive car", "a right-hand drive car"),
    ("the righthand door", "the lefthand door"),
    ("the leftmost chair", "the rightmost chair"),
    ("Left-most cup is red.", "Right-most cup is red."),
    ("birds flying rightwards", "birds flying leftwards"),
    ("a leftward glance", "a rightward glance"),
    ("a left-handed pitcher", "a right-handed pitcher"),  # handedness is a left/right attribute
    # upper/lower/top/bottom/far/front + left/right, hyphenated or not
    ("the top left corner", "the top right corner"),
    ("logo in the bottom-right.", "logo in the bottom-left."),
    ("the upper-left quadrant", "the upper-right quadrant"),
    ("the lower right of the frame", "the lower left of the frame"),
    ("standing on the far left", "standing on the far right"),
    ("the front left wheel", "the front right wheel"),
    ("on the very left", "on the very right"),
    # possessives: "on its left", "to her right", "the man's left hand"
    ("a lamp on its left", "a lamp on its right"),
    ("the girl to her right", "the girl to her left"),
    ("the man's left hand", "the man's right hand"),
    ("the man\u2019s left hand", "the man\u2019s right hand"),
    ("raising his right arm", "raising his left arm"),
    # verbs of turning/facing
    ("Turn left at the light.", "Turn right at the light."),
    ("The car turned right.", "The car turned left."),
    ("a dog facing left", "a dog facing right"),
    ("a girl looking right", "a girl looking left"),
    ("make a left turn", "make a right turn"),
    ("take a right", "take a left"),
    # directional pairs
    ("from left to right", "from right to left"),
    ("Left to right: Ann, Bob.", "Right to left: Ann, Bob."),
    ("reading left-to-right", "reading right-to-left"),
    ("John Smith (left) and Jane Doe (right)", "John Smith (right) and Jane Doe (left)"),
    # both directions at once, no double swap
    ("the cat on the left and the dog on the right", "the cat on the right and the dog on the left"),
    ("Left side red, right side blue", "Right side red, left side blue"),
    ("a cup on the right, a fork to its left.", "a cup on the left, a fork to its right."),
    # verb "left" next to a spatial "left"
    ("She left the cup on the left.", "She left the cup on the right."),
    ("He left it on the left side.", "He left it on the right side."),
    ("What's left of the cake is on the right.", "What's left of the cake is on the left."),
    # case kept
    ("On The Left", "On The Right"),
    ("ON THE LEFT", "ON THE RIGHT"),
    ("Right side of the car", "Left side of the car"),
    # punctuation, whitespace, multi-line, non-ASCII
    ("on  the\tleft!!", "on  the\tright!!"),
    (
        "On the left\u2014a caf\u00e9; on the right: na\u00efve art.",
        "On the right\u2014a caf\u00e9; on the left: na\u00efve art.",
    ),
    ("A cat on the left.\nA dog on the right.\n", "A cat on the right.\nA dog on the left.\n"),
    ("\u00bbto the left\u00ab", "\u00bbto the right\u00ab"),
    ("Stra\u00dfe, links: on the right", "Stra\u00dfe, links: on the left"),
    ("(on the left)", "(on the right)"),
    # political senses: hyphenated "right-wing" is politics; spaced "the left wing of X" is space.
    ("the right wing of the plane", "the left wing of the plane"),
    ("the left wing of the building", "the right wing of the building"),
    ("right-wing party", None),
    ("a left-wing newspaper", None),
    ("the right wing party", None),
    ("He is left wing.", None),
    ("far-right politicians", None),
    ("left-leaning media", None),
    # verb "left" (leave) and other non-spatial "left"
    ("He left the room.", None),
    ("she left behind her bag", None),
    ("a bag left behind", None),
    ("there is nothing left", None),
    ("the only one left", None),
    ("left over pizza", None),
    ("leftover pizza", None),
    ("leftovers in the fridge", None),
    ("What's left of the cake?", None),
    ("what\u2019s left of the cake", None),
    ("All that is left of the castle is a wall.", None),
    ("It left him speechless.", None),
    ("Left it on the table.", None),
    ("The man left half of his sandwich.", None),  # "left half" needs a clause start or a trigger
    ("She has left of her own accord.", None),
    ("the turn left him dizzy", None),  # "turn" is a noun here; "left him" makes "left" the verb
    # non-spatial "right"
    ("That's right.", None),
    ("you're right", None),
    ("the right answer", None),
    ("at the right time", None),
    ("in the right place", None),
    ("on the right track", None),
    ("in his right mind", None),
    ("all right", None),
    ("right now", None),
    ("right away", None),
    ("right after lunch", None),
    ("the dog is right next to the cat", None),
    ("looking right at the camera", None),  # adverbial "right" = directly
    ("copyright 2020", None),
    ("alright then", None),
    ("human rights", None),
    ("the right to vote", None),
    ("their right to protest", None),
    ("right of way", None),
    ("at right angles", None),
    ("a right triangle", None),
    ("proved her right", None),
    ("the right-hand man", None),
    ("It doesn't look right.", None),  # "look right" = correct; only progressive "looking" is spatial
    ("Right, let's go.", None),
    ("a box right side up", None),  # "right side up" = upright, not a side
    # symmetric coordinations: flipping them gives a paraphrase, not a negative
    ("cars parked left and right", None),
    ("on the left and right sides", None),
    ("to the left and to the right", None),
    ("left/right symmetry", None),
    ("turn left or right", None),
    # no spatial context at all
    ("LEFT", None),
    ("Left: a cat", None),
    ("", None),
    ("A photo of a cat.", None),
]

SWAPPABLE = [(src, out) for src, out in LEFT_RIGHT_CASES if out is not None]

_STEM_RE = re.compile(r"left|right", re.IGNORECASE)


def _flip_all(token: str) -> str:
    """Naive flip of every left/right inside one token, keeping case (test oracle only)."""

    def repl(m: re.Match[str]) -> str:
        new = "right" if m.group().lower() == "left" else "left"
        if m.group().isupper():
            return new.upper()
        return new.capitalize() if m.group()[0].isupper() else new

    return _STEM_RE.sub(repl, token)


@pytest.mark.parametrize(("text", "expected"), LEFT_RIGHT_CASES)
def test_swap_left_right(text, expected):
    assert swap_left_right(text) == expected


@pytest.mark.parametrize(("text", "swapped"), SWAPPABLE)
def test_left_right_swapping_twice_is_identity(text, swapped):
    assert swap_left_right(swapped) == text


@pytest.mark.parametrize(("text", "swapped"), SWAPPABLE)
def test_left_right_changes_only_swapped_words(text, swapped):
    before, after = text.split(), swapped.split()
    assert len(before) == len(after)
    # Outside the left/right stems not a character moves: punctuation and whitespace are kept.
    assert _STEM_RE.sub("#", text) == _STEM_RE.sub("#", swapped)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed
    for a, b in changed:
        assert _flip_all(a) == b


def test_left_right_case_oracle_agrees():
    assert _flip_all("Left-hand/RIGHT") == "Right-hand/LEFT"
    assert swap_left_right("Top-Left") == "Top-Right"
    assert swap_left_right("TOP-LEFT") == "TOP-RIGHT"


def test_left_right_no_double_swap_in_long_text():
    text = " ".join(["the cat on the left and the dog on the right."] * 50)
    out = swap_left_right(text)
    assert out == " ".join(["the cat on the right and the dog on the left."] * 50)
    assert swap_left_right(out) == text


ABOVE_BELOW_CASES = [
    ("A lamp above the table.", "A lamp below the table."),
    ("A rug below the window.", "A rug above the window."),
    ("The clouds above.", "The clouds below."),
    ("a picture hanging over the sofa", "a picture hanging under the sofa"),
    ("a drone flying over the city", "a drone flying under the city"),
    ("the upper shelf", "the lower shelf"),
    ("the top left corner", "the bottom left corner"),  # left/right untouched on this axis
    ("at the top of the stairs", "at the bottom of the stairs"),
    ("A photo of a dining table on the bottom", "A photo of a dining table on the top"),
    ("the Topmost branch", "the Bottommost branch"),
    ("Above: a bird. Below the bird, a cat.", "Below: a bird. Above the bird, a cat."),
    # non-spatial senses
    ("as mentioned above.", None),
    ("See below.", None),
    ("the above image", None),
    ("above average", None),
    ("below 50%", None),
    ("above the law", None),
    ("over 100 people", None),
    ("under pressure", None),
    ("lower case letters", None),
    ("the top 10 songs", None),
    ("top of the line", None),
    ("from the bottom of my heart", None),
    ("top speed", None),
    ("on top of the table", None),  # "on top of" belongs to the on-under axis
    ("above and below the line", None),  # symmetric pair
]


@pytest.mark.parametrize(("text", "expected"), ABOVE_BELOW_CASES)
def test_swap_above_below(text, expected):
    assert swap_above_below(text) == expected
    if expected is not None:
        assert swap_above_below(expected) == text


FRONT_BEHIND_CASES = [
    ("A dog in front of a car.", "A dog behind a car."),
    ("A dog behind a car.", "A dog in front of a car."),
    ("Behind the house is a garden.", "In front of the house is a garden."),
    ("IN FRONT OF THE TV", "BEHIND THE TV"),
    ("a house with trees behind.", "a house with trees in front."),
    ("a man standing in front.", "a man standing behind."),
    ("mountains in the background", "mountains in the foreground"),
    ("in the far background, a tower", "in the far foreground, a tower"),
    ("the back of the room", "the front of the room"),
    ("sitting in the front seat", "sitting in the back seat"),
    ("a dog sitting in the back", "a dog sitting in the front"),
    # "behind schedule" and other figurative "behind": decided never to swap
    ("We are behind schedule.", None),
    ("he left behind his keys", None),
    ("the reason behind the decision", None),
    ("behind the scenes", None),
    ("behind and in front of the house", None),  # symmetric pair
    ("a white background", None),  # "background" outside "in the background" is not a relation
    ("the back and forth", None),
    ("in the back of my mind", None),
]


@pytest.mark.parametrize(("text", "expected"), FRONT_BEHIND_CASES)
def test_swap_front_behind(text, expected):
    assert swap_front_behind(text) == expected
    if expected is not None:
        assert swap_front_behind(expected) == text


ON_UNDER_CASES = [
    ("A beer bottle on a armchair", "A beer bottle under a armchair"),  # What'sUp Subset A wording
    ("A beer bottle under a armchair", "A beer bottle on a armchair"),
    ("a book on the table", "a book under the table"),
    ("ON THE TABLE", "UNDER THE TABLE"),
    ("a cat on top of the car", "a cat underneath the car"),
    ("a cat underneath the car", "a cat on top of the car"),
    ("a cake with cherries on top.", "a cake with cherries underneath."),
    ("a bird atop the pole", "a bird beneath the pole"),
    ("a mug on the desk on the left", "a mug under the desk on the left"),
    # "on the left" and other non-support uses never change
    ("the cat on the left", None),
    ("on the right side", None),
    ("on a sunny day", None),
    ("turned on the light", None),
    ("talking on the phone", None),
    ("on top of that, it rained", None),
    ("under pressure", None),
    ("under the influence", None),
    ("a lecture on the war", None),
    ("on or under the table", None),  # symmetric pair
    ("a cat on it", None),  # bare "on" without an article is not swapped
]


@pytest.mark.parametrize(("text", "expected"), ON_UNDER_CASES)
def test_swap_on_under(text, expected):
    assert swap_on_under(text) == expected
    if expected is not None:
        assert swap_on_under(expected) == text


_FUZZ_WORDS = (
    "the a an on to at in of from left right Left RIGHT top bottom upper lower above below over under "
    "front back behind foreground background underneath atop beneath is was he she it cat dog table "
    "side hand corner far turn turned facing and or , . - ( ) his her its man's what's nothing one "
    "there wing party now away schedule time answer half way up hanging flying seat room mind line 10"
).split()


@pytest.mark.parametrize("axis", sorted(HARD_NEGATIVES))
def test_swapping_twice_is_identity_on_random_word_salad(axis):
    # Rules must decide the same way on both sides of every pair, or negatives would not be reversible.
    swap = HARD_NEGATIVES[axis]
    rng = random.Random(axis)
    swapped = 0
    for _ in range(5000):
        text = ""
        for word in (rng.choice(_FUZZ_WORDS) for _ in range(rng.randint(1, 12))):
            glue = "" if not text or word in ",.)-" or text.endswith(("(", "-")) else " "
            text += glue + word
        out = swap(text)
        if out is not None:
            swapped += 1
            assert swap(out) == text, (text, out)
    assert swapped > 100


def test_registry_and_dispatch():
    assert set(HARD_NEGATIVES) == {"left-right", "above-below", "front-behind", "on-under"}
    assert make_hard_negative("a cat on the left", "left-right") == "a cat on the right"
    assert make_hard_negative("a cat above a dog", "above-below") == "a cat below a dog"
    assert make_hard_negative("a cat behind a dog", "front-behind") == "a cat in front of a dog"
    assert make_hard_negative("a cat on a dog", "on-under") == "a cat under a dog"
    assert make_hard_negative("He left the room.", "left-right") is None


def test_unknown_axis_lists_valid_axes():
    with pytest.raises(ValueError, match="unknown hard-negative axis 'up-down'") as info:
        make_hard_negative("a cat on the left", "up-down")
    for axis in HARD_NEGATIVES:
        assert axis in str(info.value)
