"""DataMix-665K-style dialogue: questions and answers about a scene, plus text-only chats.

Answers mix the paper's key phrases ("on the left", "to the left", "at the right", ...), wordings
without them ("left of", one-word GQA answers) and "left" as a verb ("Someone left a ...") so that
hard-negative code that swaps every "left" can be caught.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from data_prep.toyworld.catalog import article
from data_prep.toyworld.scenes import Scene

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
SIDE_WORDS = {"left_of": "left", "right_of": "right"}
SPATIAL_PHRASE = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "on": "on top of",
    "under": "under",
    "in_front_of": "in front of",
    "behind": "behind",
    "above": "above",
    "below": "below",
}


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    left_as_verb: bool = False


def _a(name: str) -> str:
    return f"{article(name)} {name}"


def _kind(name: str) -> str:
    return name.split()[-1]


def relation_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Questions whose answers state the scene's spatial relation."""
    rel = scene.relation
    s, r = scene.subject_object().name, scene.reference_object().name
    if rel in SIDE_WORDS:
        side = SIDE_WORDS[rel]  # the subject's side
        other = "right" if side == "left" else "left"
        on_side = {side: s, other: r}
        # Which side a question asks about, and in which order objects are listed, are drawn at random:
        # every answer wording then occurs with "left" and with "right" equally, so its left/right-swapped
        # hard negative cannot be rejected from the words alone.
        asked, listed = rng.choice(("left", "right")), rng.sample(("left", "right"), 2)
        yes = "Yes" if asked == side else "No"
        return [
            QA(f"Where is the {s} relative to the {r}?", f"The {s} is to the {side} of the {r}."),
            QA(f"What is on the {asked} side of the image?", f"On the {asked} there is {_a(on_side[asked])}."),
            QA(f"What is on the {asked}?", f"There is {_a(on_side[asked])} on the {asked}."),
            QA(f"Which side of the picture is the {s} on?", f"The {s} is at the {side} of the picture."),
            QA(
                "Describe the positions of the objects.",
                f"The {on_side[listed[0]]} is on the {listed[0]} and the {on_side[listed[1]]} is on the {listed[1]}.",
            ),
            QA(f"Is the {s} {asked} of the {r}?", f"{yes}, the {s} is {side} of the {r}."),
            QA(f"Where should I look to find the {_kind(s)}?", f"Look at the {side} side of the image."),
            QA(f"What is next to the {r}, on its {other} side?", f"Nothing, the {s} is on its {side} side."),
        ]
    if rel in ("on", "under"):
        top, bottom = (s, r) if rel == "on" else (r, s)
        word = "on" if rel == "on" else "under"
        return [
            QA(f"What is on top of the {bottom}?", f"{_a(top).capitalize()} is on top of the {bottom}."),
            QA(f"Where is the {top}?", f"The {top} is resting on the {bottom}."),
            QA(f"What is under the {top}?", f"There is {_a(bottom)} under the {top}."),
            QA(f"Is the {s} on or under the {r}?", f"The {s} is {word} the {r}."),
        ]
    if rel in ("in_front_of", "behind"):
        front, back = (s, r) if rel == "in_front_of" else (r, s)
        return [
            QA("Which object is closer to the camera?", f"The {front} is closer; it stands in front of the {back}."),
            QA(f"What is behind the {front}?", f"{_a(back).capitalize()} is behind the {front}."),
            QA(f"Where is the {s} relative to the {r}?", f"The {s} is {SPATIAL_PHRASE[rel]} the {r}."),
            QA(f"Is the {back} partly hidden?", f"Yes, the {back} is partly hidden behind the {front}."),
        ]
    raise ValueError(f"no questions for relation {rel!r}")


def short_questions(scene: Scene) -> list[QA]:
    """GQA-style single-word answers (no key phrase even when about left/right)."""
    rel = scene.relation
    s, r = scene.subject_object(), scene.reference_object()
    questions = [
        QA(f"What color is the {s.kind.name}?{SHORT_ANSWER}", s.colour.name.capitalize()),
        QA(f"What color is the {r.kind.name}?{SHORT_ANSWER}", r.colour.name.capitalize()),
    ]
    if rel in SIDE_WORDS:
        side = SIDE_WORDS[rel]
        other = "right" if side == "left" else "left"
        questions += [
            QA(
                f"Is the {s.kind.name} to the left or to the right of the {r.kind.name}?{SHORT_ANSWER}",
                side.capitalize(),
            ),
            QA(f"Which side is the {r.kind.name} on?{SHORT_ANSWER}", other.capitalize()),
        ]
    elif rel in ("on", "under"):
        top, bottom = (s, r) if rel == "on" else (r, s)
        questions.append(QA(f"What is the {top.kind.name} sitting on?{SHORT_ANSWER}", bottom.kind.name.capitalize()))
    elif rel in ("in_front_of", "behind"):
        answer = "In front" if rel == "in_front_of" else "Behind"
        questions.append(QA(f"Is the {s.kind.name} in front of or behind the {r.kind.name}?{SHORT_ANSWER}", answer))
    return questions


def general_questions(scene: Scene) -> list[QA]:
    s, r = scene.subject_object(), scene.reference_object()
    return [
        QA(f"What color is the {s.kind.name}?", f"The {s.kind.name} is {s.colour.name}."),
        QA("How many objects are in the image?", f"There are two objects: {_a(s.name)} and {_a(r.name)}."),
        QA("What objects can you see?", f"I can see {_a(s.name)} and {_a(r.name)}."),
        QA("What does the background look like?", f"The background is a plain {scene.backdrop.name} surface."),
    ]


def left_verb_questions(scene: Scene) -> list[QA]:
    """'left' as the past tense of 'leave' (one also contains a real spatial phrase)."""
    rel = scene.relation
    assert rel is not None
    s, r = scene.subject_object().name, scene.reference_object().name
    return [
        QA(f"Why is the {_kind(s)} there?", f"Someone left {_a(s)} next to the {r}.", True),
        QA(f"Is there any paint on the {_kind(r)}?", f"No, there is no paint left on the {_kind(r)}.", True),
        QA(f"What happened to the {_kind(s)}?", f"It looks like the owner left the {_kind(s)} behind.", True),
        QA("Is anything else in the scene?", f"Nothing else is left in the scene besides the {s} and the {r}.", True),
        QA(
            f"Who put the {_kind(s)} there?",
            f"Somebody left it there; the {s} is {SPATIAL_PHRASE[rel]} the {r}.",
            True,
        ),
    ]


def sign_questions(scene: Scene, folder: str) -> list[QA]:
    if not scene.signs:
        return []
    text = scene.signs[0][1]
    if folder == "ocr_vqa":
        return [
            QA("What word is written on the board?", f"The board says {text}."),
            QA("Is there any text in the image?", f"Yes, a dark board at the top reads {text}."),
        ]
    return [QA(f"What does the sign say?{SHORT_ANSWER}", text), QA("What is written on the sign?", text)]


def region_question(scene: Scene) -> QA:
    """Visual Genome referring-expression style: normalised box of the subject, two decimals."""
    x0, y0, x1, y1 = scene.placements[scene.subject or 0].box
    width, height = scene.size
    coords = ", ".join(f"{v:.2f}" for v in (x0 / width, y0 / height, x1 / width, y1 / height))
    name = scene.subject_object().name
    return QA(
        f"Please provide the bounding box coordinate of the region this sentence describes: {name}.", f"[{coords}]"
    )


def scene_dialogue(rng: random.Random, scene: Scene, folder: str) -> list[QA]:
    """1-4 rounds; the first is usually about the relation, later ones drawn from every pool."""
    if folder == "gqa":
        first_pool = short_questions(scene)
        rest_pool = short_questions(scene)
    else:
        first_pool = sign_questions(scene, folder) if scene.signs and rng.random() < 0.6 else []
        first_pool = first_pool or relation_questions(scene, rng)
        rest_pool = relation_questions(scene, rng) + general_questions(scene) + sign_questions(scene, folder)
        if folder == "vg":
            rest_pool.append(region_question(scene))
    rounds = [rng.choice(first_pool)]
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        options = [qa for qa in rest_pool if all(qa.question != done.question for done in rounds)]
        if options:
            rounds.append(rng.choice(options))
    if folder != "gqa" and rng.random() < 0.12:
        rounds.insert(rng.randint(1, len(rounds)), rng.choice(left_verb_questions(scene)))
    return rounds[:4]


def to_conversation(rng: random.Random, rounds: list[QA]) -> list[dict[str, object]]:
    """Alternating turns; `<image>` goes before or after the first question."""
    turns: list[dict[str, object]] = []
    for index, qa in enumerate(rounds):
        question = qa.question
        if index == 0:
            question = f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": qa.answer}]
    return turns


# ShareGPT-like text-only chats (no image). Some contain key phrases (so not every key-phrase instance
# has an image, as in the paper's 12957 vs 12658) and some use "left" as a verb or for "remaining".
TEXT_CHATS: tuple[tuple[QA, ...], ...] = (
    (
        QA(
            "How do I get from the station to the museum?",
            "Leave the station and turn to the left. After two blocks the museum is on the right, next to a bakery.",
        ),
    ),
    (QA("I have 5 apples and eat 2. How many are there now?", "You have 3 apples left.", True),),
    (
        QA(
            "What is the rule of thirds in photography?",
            "Place the subject on the left or right third line of the frame.",
        ),
        QA("Does it apply to portraits?", "Yes, put the eyes near the upper third line."),
    ),
    (
        QA(
            "Write a haiku about autumn.",
            "Crisp leaves drift and fall\nthe old oak hums to the wind\nsoft gold on the path",
        ),
    ),
    (
        QA("What is 12 times 7?", "12 times 7 is 84."),
        QA("And divided by 4?", "84 divided by 4 is 21."),
    ),
    (QA("Which hand do most people write with?", "Most people write with their right hand."),),
    (
        QA(
            "Summarize the story of Cinderella in one sentence.",
            "Cinderella left a glass slipper at the ball, and the prince used it to find her.",
            True,
        ),
    ),
    (
        QA(
            "Give me directions to the park.",
            "Go straight, take the second street at the right, and the gate is at the left.",
        ),
        QA("Is it far?", "About ten minutes on foot."),
    ),
    (
        QA(
            "Explain what a CSV file is.",
            "A CSV file stores a table as plain text, one row per line, fields separated by commas.",
        ),
    ),
    (QA("My keys are gone. Any tips?", "Retrace your steps and check the places you visited last."),),
    (
        QA("How do I set a table?", "The fork goes to the left of the plate and the knife to the right."),
        QA("Where does the glass go?", "Above the knife."),
    ),
    (QA("Name three primary colours.", "Red, yellow and blue."),),
)


def text_chat(rng: random.Random) -> list[QA]:
    return list(rng.choice(TEXT_CHATS))


def sharegpt_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(7)) + f"_{rng.randint(0, 3)}"


def plain_conversation(rounds: list[QA]) -> list[dict[str, object]]:
    turns: list[dict[str, object]] = []
    for qa in rounds:
        turns += [{"from": "human", "value": qa.question}, {"from": "gpt", "value": qa.answer}]
    return turns
