"""Tokenizers trained here, for the tiny stand-ins whose real tokenizers cannot be downloaded on these machines.

Both are trained with the `tokenizers` library on a small built-in English corpus of spatial captions, so the
words the benchmarks hinge on ("left", "right", "under", "behind", ...) get their own tokens. Training is
deterministic: the same corpus and settings give the same vocabulary in every process.
"""

from __future__ import annotations

from itertools import cycle, islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

OBJECTS = (
    "ball", "box", "cube", "sphere", "cylinder", "cup", "mug", "plate", "book", "chair", "table", "lamp", "dog",
    "cat", "car", "bus", "tree", "bottle", "pillow", "armchair", "laptop", "phone", "bowl", "vase", "candle",
    "shoe", "hat", "apple", "banana", "orange", "person", "man", "woman", "bicycle", "horse", "clock", "sofa",
)  # fmt: skip
COLORS = ("red", "green", "blue", "yellow", "purple", "white", "black", "gray", "brown", "pink")
RELATIONS = (
    "on", "under", "to the left of", "to the right of", "in front of", "behind", "next to", "above", "below",
    "near", "on top of", "inside",
)  # fmt: skip
TEMPLATES = (
    "a {c1} {o1} {r} a {c2} {o2}",
    "A photo of a {o1} {r} a {o2}.",
    "The {o1} is {r} the {o2}.",
    "There is a {c1} {o1} on the left and a {c2} {o2} on the right.",
    "A {o1} at the right, a {o2} at the left.",
    "{o1} {r} {o2}",
    "Is the {o1} {r} the {o2}? Yes, the {c1} {o1} is {r} it.",
)
GENERAL = (
    "The picture shows a small room with two things in it. What is in the image? Describe the scene in detail. "
    "He left the room and the door was left open. Render a clear and concise summary of the photo. "
    "Some objects are bigger than others; one of them is closer to the camera, the other is far away. "
    "Where is it? It is on the floor, near the wall, between the window and the door, at the center."
)
# As Llama's and T5's tokenizers: no token_type_ids (llm2vec passes every tokenizer output to the model).
_FAST_TOKENIZER_KWARGS = {"model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False}


def caption_corpus(size: int = 3000) -> list[str]:
    """A fixed list of short English captions: spatial templates filled in a fixed order, plus general text."""
    rows = []
    colors, relations, templates = cycle(COLORS), cycle(RELATIONS), cycle(TEMPLATES)
    pairs = [(a, b) for a in OBJECTS for b in OBJECTS if a != b]
    for o1, o2 in islice(cycle(pairs), size):
        c1, c2 = next(colors), next(colors)
        rows.append(next(templates).format(o1=o1, o2=o2, c1=c1, c2=c2, r=next(relations)))
    return rows + GENERAL.split(". ")


def train_sentencepiece_style_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """SigLIP-like (its real one is a T5 SentencePiece model): Metaspace BPE, `</s>` appended, pad id 0."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(caption_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **_FAST_TOKENIZER_KWARGS
    )


def train_byte_level_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Llama-like: byte-level BPE (no unknown characters), `<s>` prepended, ids <unk>=0 <s>=1 </s>=2 as Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(caption_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **_FAST_TOKENIZER_KWARGS
    )
