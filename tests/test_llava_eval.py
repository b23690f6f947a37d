"""eval.llava: LLaVA-1.5 scoring on the project's benchmarks, on a tiny random LLaVA in the llava-hf format."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval import llava
from eval.llava_protocols import (
    PROTOCOLS,
    Item,
    m3id_logits,
    m3id_weight,
    match_keywords,
    match_letter,
    normalised_perplexity,
    option_probabilities,
    relaxed_pair_correct,
    swap_bit,
    unique_best,
)
from eval.report import read_result, read_scores
from models.tiny_llava import build_tiny_llava


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "llava")


@pytest.fixture(scope="module")
def runner(tiny_llava: Path) -> llava.LlavaRunner:
    return llava.LlavaRunner(tiny_llava, device="cpu")


def padded(runner: llava.LlavaRunner, image):
    """The image as LLaVA-1.5's `image_aspect_ratio: pad` hands it to the processor (the runner's default)."""
    assert runner.image_aspect_ratio == "pad"
    return llava.expand_to_square(image, llava.mean_colour(runner.image_processor))


# ---------------------------------------------------------------- parsing, on hand-written outputs

LEFT_RIGHT = (("left",), ("right",))
ON_UNDER = (("on",), ("under",))
FOUR_A = (("left",), ("right",), ("on",), ("under",))


@pytest.mark.parametrize(
    ("output", "keywords", "expected"),
    [
        ("Left", LEFT_RIGHT, 0),
        ("The cup is to the right of the box.", LEFT_RIGHT, 1),
        ("RIGHT.", LEFT_RIGHT, 1),
        ("It is on the left or the right", LEFT_RIGHT, None),  # both named: never guessed
        # A negation names both sides: keyword matching (the paper's) cannot read it, so it is unparseable, not
        # guessed either way; it is counted and listed with the other unparseable answers.
        ("The cup is not on the left; it is on the right.", LEFT_RIGHT, None),
        ("The cup is not on the left; it is on the right.", FOUR_A, None),
        ("I cannot tell.", LEFT_RIGHT, None),
        ("leftover", LEFT_RIGHT, None),  # whole words only
        ("Under", ON_UNDER, 1),
        ("The mug is on the table", ON_UNDER, 0),
        ("The mug is on the left", FOUR_A, 0),  # the 'on' of 'on the left' names a side, not the relation 'on'
        ("The mug is on top of the box", FOUR_A, 2),
        ("In front", (("front",), ("behind",)), 0),
        ("on the top", (("top",), ("bottom",)), 0),
        ("", LEFT_RIGHT, None),
    ],
)
def test_keyword_matching(output, keywords, expected):
    assert match_keywords(output, keywords) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("A", 0),
        ("(b)", 1),
        ("B.", 1),
        ("(a) The cone points up", 0),
        ("b) down", 1),
        ("The answer is (b).", 1),
        ("Option A", 0),
        ("A cone pointing up.", None),  # the article, not a letter
        ("The cone is pointing down", 1),  # exactly one option's text
        ("C", None),  # not an option
        ("Hmm", None),
    ],
)
def test_letter_matching(output, expected):
    assert match_letter(output, ("the cone is pointing up", "the cone is pointing down")) == expected


def test_unparseable_are_counted_and_listed_never_guessed(tmp_path, world):
    """Hand-written outputs through the metric code: unparseable answers are wrong, counted and listed."""
    items, _ = llava.benchmark_items("coco_spatial_one", world / "bench", limit=4)
    outputs = ["sure", items[1].options[items[1].answer], "left and right", items[3].options[items[3].answer]]
    records = []
    for item, output in zip(items, outputs, strict=True):
        parsed = llava.parse_answer(item, output)
        records.append({"id": item.id, "correct": parsed == item.answer, "unparseable": parsed is None})
    metrics, chance, denominators = llava.benchmark_metrics("coco_spatial_one", records, "generative")
    assert metrics == {"indiv": 50.0, "unparseable": 50.0}
    assert chance == {"indiv": 50.0, "unparseable": None}
    assert [r["id"] for r in records if r["unparseable"]] == [items[0].id, items[2].id]


# ---------------------------------------------------------------- perplexity, relaxed rule, M3ID, swap


def test_normalised_perplexity_divides_by_token_count():
    logprobs = [math.log(0.5), math.log(0.25), math.log(0.125)]  # sum = log(1/64), 3 tokens
    assert normalised_perplexity(logprobs) == pytest.approx(4.0)  # (1/64)^(-1/3)
    # A longer option with the same per-token probability has the same normalised perplexity.
    assert normalised_perplexity([math.log(0.5)] * 2) == pytest.approx(normalised_perplexity([math.log(0.5)] * 7))
    with pytest.raises(ValueError):
        normalised_perplexity([])


def test_relaxed_rule_and_probabilities():
    p1 = option_probabilities([2.0, 4.0])  # 1/2, 1/4 -> 2/3, 1/3
    assert p1 == pytest.approx([2 / 3, 1 / 3])
    p2 = option_probabilities([3.0, 3.0])
    assert relaxed_pair_correct(p1, p2)  # image 1 prefers caption 1 more than image 2 does
    assert not relaxed_pair_correct(p2, p1)
    assert not relaxed_pair_correct(p2, p2)  # a tie is wrong
    # Both images may prefer caption 2 individually and still be a relaxed-correct pair.
    assert relaxed_pair_correct(option_probabilities([5.0, 4.0]), option_probabilities([9.0, 3.0]))
    assert unique_best([3.0, 1.0, 2.0], lowest=True) == 1 and unique_best([1.0, 1.0], lowest=True) is None


def test_m3id_rule_against_hand_computation():
    l_c = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1]]))
    l_u = torch.log(torch.tensor([[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]))
    t, lam, alpha = 2, 0.15, 0.6
    weight = (1 - math.exp(-lam * t)) / math.exp(-lam * t)
    assert m3id_weight(t, lam) == pytest.approx(weight)
    assert m3id_weight(2) == pytest.approx(math.exp(0.3) - 1)
    got = m3id_logits(l_c, l_u, t, alpha=alpha, lam=lam)
    # Row 0: max p = 0.5 < 0.6, not confident: corrected. Row 1: max p = 0.7 >= 0.6: l_c unchanged.
    row0 = [math.log(c) + weight * (math.log(c) - math.log(u)) for c, u in ((0.5, 0.6), (0.3, 0.2), (0.2, 0.2))]
    assert got[0].tolist() == pytest.approx(row0, rel=1e-5)
    assert got[1].tolist() == pytest.approx(l_c[1].tolist())
    # Option 1 (more probable with the image than without) gains on option 0; by t = 5 the weight flips the choice.
    assert int(got[0].argmax()) == 0 and got[0, 1] - got[0, 0] > l_c[0, 1] - l_c[0, 0]
    assert int(m3id_logits(l_c, l_u, 5, alpha=alpha, lam=lam)[0].argmax()) == 1
    assert int(m3id_logits(l_c, l_u, 4, alpha=alpha, lam=lam)[0].argmax()) == 0


def test_position_swap_is_seeded_and_about_half():
    bits = [swap_bit(0, "coco_spatial_one", str(n)) for n in range(400)]
    assert bits == [swap_bit(0, "coco_spatial_one", str(n)) for n in range(400)]
    assert 160 < sum(bits) < 240
    assert bits != [swap_bit(1, "coco_spatial_one", str(n)) for n in range(400)]


def test_table8_questions():
    stem, answers = llava.spatial_question(
        ("A photo of a dining table on the bottom", "A photo of a dining table on the top")
    )
    assert stem == "Is the dining table on the bottom or on the top?" and answers == ("on the bottom", "on the top")
    stem, answers = llava.spatial_question(
        ("A photo of a cat to the left of a dog", "A photo of a cat to the right of a dog")
    )
    assert stem == "Is the cat to the left of a dog or to the right of a dog?"
    assert llava._swap_stem(stem, answers) == "Is the cat to the right of a dog or to the left of a dog?"
    stem, _ = llava.spatial_question(("A photo of a cat to the front of a dog", "A photo of a cat behind a dog"))
    assert stem == "Is the cat to the front of a dog or behind a dog?"
    assert llava._diff_keywords("A photo of a cat to the front of a dog", "A photo of a cat behind a dog") == (
        ("front",),
        ("behind",),
    )
    item = Item("x", Path("x.jpg"), "Is the cup on or under the box?", "Choose from the two options.", ("on", "under"),
                (("on",), ("under",)), 0)  # fmt: skip
    assert (
        item.prompt("generative")
        == "USER: <image>\nIs the cup on or under the box? Choose from the two options. ASSISTANT:"
    )
    assert item.prompt("choice").endswith(
        "(a) On (b) Under\nAnswer with the option's letter from the given choices directly. ASSISTANT:"
    )
    assert item.continuations("choice") == ["A", "B"] and item.continuations("relaxed") == ["(a) On", "(b) Under"]


def test_whatsup_items_follow_table8(world):
    items, details = llava.benchmark_items("whatsup_a", world / "bench", limit=1)
    assert len(items) == 8 and details["counts"]["rows"] == 4  # one object pair, two questions per image
    two = [i for i in items if i.meta["kind"] == "two_way"]
    left = next(i for i in two if i.meta["relation"] == "left_of")
    assert left.stem.startswith("Is the ") and left.command == "Answer left or right."
    assert left.options == ("left", "right") and left.answer == 0
    under = next(i for i in two if i.meta["relation"] == "under")
    assert under.command == "Choose from the two options." and under.answer == 1
    four = [i for i in items if i.meta["kind"] == "four_way"]
    assert {i.options for i in four} == {("left", "right", "on", "under")}  # the same order for every image


# ---------------------------------------------------------------- the model path equals transformers' own


def test_generation_matches_transformers_generate(runner, world):
    from PIL import Image

    items, _ = llava.benchmark_items("whatsup_b", world / "bench", limit=1)
    items = items[:3]
    prompts = [i.prompt("generative") for i in items]
    ours = runner.generate(prompts, [i.image for i in items], max_new_tokens=6)
    tokenizer = runner.tokenizer
    tokenizer.padding_side = "left"
    images = [padded(runner, Image.open(i.image).convert("RGB")) for i in items]
    pixels = runner.image_processor(images, return_tensors="pt")["pixel_values"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = runner.model.generate(**batch, pixel_values=pixels, max_new_tokens=6, do_sample=False)
    theirs = [
        t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    ]
    assert ours == theirs
    assert len(set(ours)) > 1  # the images/prompts make a difference


def test_option_logprobs_match_transformers_forward(runner, world):
    from PIL import Image

    item = llava.benchmark_items("coco_spatial_two", world / "bench", limit=1)[0][0]
    prompt = item.prompt("relaxed")
    sequences = [runner.continuation_ids(prompt, c) for c in item.continuations("relaxed")]
    ours = runner.option_logprobs(sequences, [item.image] * len(sequences))
    pixels = runner.image_processor([padded(runner, Image.open(item.image).convert("RGB"))], return_tensors="pt")[
        "pixel_values"
    ]
    for (ids, n), mine in zip(sequences, ours, strict=True):
        assert ids[-1] == runner.tokenizer.eos_token_id and n == len(mine)
        with torch.no_grad():
            x = torch.tensor([ids])
            logits = runner.model(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=pixels).logits[0]
        logprobs = torch.log_softmax(logits[-n - 1 : -1].float(), -1).gather(-1, torch.tensor(ids[-n:])[:, None])[:, 0]
        assert mine == pytest.approx(logprobs.tolist(), abs=1e-4)


def test_m3id_decoding_matches_a_direct_computation(runner, world):
    """M3ID through the cached, batched path equals a step-by-step loop on transformers' forward, with and without
    the image; alpha -> 0 (always confident) gives plain greedy decoding."""
    from PIL import Image

    item = llava.benchmark_items("gqa_spatial_one", world / "bench", limit=1)[0][0]
    prompt = item.prompt("m3id")
    steps = 5
    ours = runner.generate([prompt], [item.image], max_new_tokens=steps, m3id={"alpha": 1.0, "lam": 0.15})
    pixels = runner.image_processor([padded(runner, Image.open(item.image).convert("RGB"))], return_tensors="pt")[
        "pixel_values"
    ]
    ids_c = runner.prompt_ids(prompt)
    ids_u = [t for t in ids_c if t != runner.image_token_id]
    tokens = []
    for step in range(steps):
        with torch.no_grad():
            x_c, x_u = torch.tensor([ids_c]), torch.tensor([ids_u])
            with_image = runner.model(input_ids=x_c, attention_mask=torch.ones_like(x_c), pixel_values=pixels)
            without = runner.model(input_ids=x_u, attention_mask=torch.ones_like(x_u))
            l_c = torch.log_softmax(with_image.logits[:, -1].float(), -1)
            l_u = torch.log_softmax(without.logits[:, -1].float(), -1)
        token = int(m3id_logits(l_c, l_u, 1 + step, alpha=1.0, lam=0.15).argmax())
        if token == runner.eos_id:
            break
        tokens.append(token)
        ids_c, ids_u = ids_c + [token], ids_u + [token]
    assert ours == [runner.tokenizer.decode(tokens, skip_special_tokens=True).strip()]
    plain = runner.generate([prompt], [item.image], max_new_tokens=steps)
    assert runner.generate([prompt], [item.image], max_new_tokens=steps, m3id={"alpha": 1e-30, "lam": 0.15}) == plain


# ---------------------------------------------------------------- end to end, result files, resume


def _check_result_files(out: Path, benchmark: str, protocol: str) -> dict:
    record = read_result(out, benchmark)
    assert record is not None and record["protocol"] == protocol and record["partial"] is True
    assert set(record["metrics"]) == set(record["chance"])
    rows = read_scores(out, benchmark)
    assert rows and record["denominators"] and record["files"]
    for row in rows:
        assert row["prompt"].startswith("USER: <image>\n") and row["prompt"].endswith(" ASSISTANT:")
        assert {"id", "options", "answer", "prediction", "correct"} <= set(row)
        assert row["correct"] == (row["prediction"] == row["answer"])
        if protocol in ("generative", "m3id"):
            assert "output" in row and row["unparseable"] == (row["prediction"] is None)
        else:
            assert len(row["perplexity"]) == len(row["options"]) == len(row["token_counts"])
    if protocol in ("generative", "m3id"):
        listed = [r["id"] for r in rows if r["unparseable"]]
        assert record["unparseable"] == {"count": len(listed), "ids": listed}
        assert record["metrics"]["unparseable"] == pytest.approx(100 * len(listed) / len(rows))
    return record


@pytest.mark.parametrize("protocol", [p for p in PROTOCOLS if p != "vqascore"])  # vqascore: test_llava_paper.py
def test_protocol_end_to_end(protocol, runner, tiny_llava, world, tmp_path):
    out = tmp_path / protocol
    results = llava.run(
        tiny_llava, world / "bench", out, protocol=protocol, limit=1, batch_size=4, max_new_tokens=4,
        progress=False, runner=runner,
    )  # fmt: skip
    assert list(results) == list(llava.BENCHMARKS)
    for name in llava.BENCHMARKS:
        record = _check_result_files(out, name, protocol)
        assert record["metrics"] == results[name]["metrics"]
    wa = read_result(out, "whatsup_a")
    assert {"indiv", "pairs", "set_of_4", "left_right/indiv", "on_under/pairs"} <= set(wa["metrics"])
    assert wa["chance"]["set_of_4"] == pytest.approx(100 / 256)
    assert ("left_right/relaxed_pairs" in wa["metrics"]) == (protocol == "relaxed")
    mm = read_result(out, "mmvp_vlm")
    assert mm["chance"]["pairs/mean"] == 25.0
    assert (out / "summary.md").is_file() and (out / "summary.csv").is_file()


def test_resume_recomputes_nothing_and_matches_an_uninterrupted_run(runner, tiny_llava, world, tmp_path):
    kwargs = dict(benchmarks=["whatsup_a"], protocol="relaxed", limit=2, batch_size=2, progress=False)
    full = tmp_path / "full"
    llava.run(tiny_llava, world / "bench", full, runner=runner, **kwargs)

    calls: list[int] = []
    original = runner.option_logprobs

    def counting(sequences, images):
        calls.append(len(sequences))
        return original(sequences, images)

    part = tmp_path / "part"
    runner.option_logprobs = counting
    try:
        with pytest.raises(llava.Stopped):
            llava.run(tiny_llava, world / "bench", part, runner=runner, stop_after=1, **kwargs)
        assert len(calls) == 1 and len(read_scores(part, "whatsup_a")) == 2
        assert read_result(part, "whatsup_a") is None
        with open(part / "whatsup_a.scores.jsonl", "a") as f:
            f.write('{"id": "cut short by a ki')  # an interruption mid-write
        calls.clear()
        llava.run(tiny_llava, world / "bench", part, runner=runner, **kwargs)
        total = len(llava.benchmark_items("whatsup_a", world / "bench", limit=2)[0])
        assert len(calls) == (total - 2) // 2  # only the unscored batches
        calls.clear()
        llava.run(tiny_llava, world / "bench", part, runner=runner, **kwargs)  # finished: reused as is
        assert calls == []
    finally:
        runner.option_logprobs = original
    assert (part / "whatsup_a.scores.jsonl").read_text() == (full / "whatsup_a.scores.jsonl").read_text()
    assert read_result(part, "whatsup_a")["metrics"] == read_result(full, "whatsup_a")["metrics"]


def test_changed_settings_rescore(runner, tiny_llava, world, tmp_path):
    kwargs = dict(benchmarks=["coco_spatial_one"], protocol="choice", limit=2, progress=False, runner=runner)
    first = llava.run(tiny_llava, world / "bench", tmp_path, seed=0, **kwargs)["coco_spatial_one"]
    second = llava.run(tiny_llava, world / "bench", tmp_path, seed=1, **kwargs)["coco_spatial_one"]
    assert first["llava_settings"]["seed"] == 0 and second["llava_settings"]["seed"] == 1
    swaps = [r["swapped"] for r in read_scores(tmp_path, "coco_spatial_one")]
    assert swaps == [llava.swap_bit(1, "coco_spatial_one", str(n)) for n in range(2)]


def test_command_line(tiny_llava, world, tmp_path, capsys):
    argv = ["--model", str(tiny_llava), "--data-root", str(world / "bench"), "--out", str(tmp_path)]
    argv += ["--benchmarks", "gqa_spatial_two", "--protocol", "choice", "--limit", "2", "--no-progress"]
    assert llava.main(argv) == 0
    assert "gqa_spatial_two: indiv" in capsys.readouterr().out
    assert len(read_scores(tmp_path, "gqa_spatial_two")) == 2
    assert json.loads((tmp_path / "gqa_spatial_two.json").read_text())["model_kind"] == "llava"


def test_clip_and_llava_rows_in_one_table(runner, tiny_llava, world, tmp_path):
    from eval import whatsup
    from eval.report import write_result
    from tests.eval_doubles import OracleScorer

    clip = tmp_path / "clip"
    write_result(whatsup.run(OracleScorer(world), world / "bench", subset="A", limit=1), clip)
    llava_out = tmp_path / "llava"
    llava.run(tiny_llava, world / "bench", llava_out, benchmarks=["whatsup_a"], protocol="choice", limit=1,
              progress=False, runner=runner)  # fmt: skip
    out = tmp_path / "table"
    assert llava.main(["table", f"oracle-clip={clip}", f"tiny-llava={llava_out}", "--out", str(out)]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[1].startswith("oracle-clip,") and summary[2].startswith("tiny-llava,")
    header = summary[0].split(",")
    assert "whatsup_a/left_right/pairs" in header and "whatsup_a/set_of_4" in header
    tables = (out / "paper_tables.md").read_text()
    assert "| oracle-clip | 100.0 | 100.0 | 100.0 | 100.0 | – | – | – | – |" in tables  # Table 1, A only
    assert "| random chance | 50.0 | 25.0 | 50.0 | 25.0 |" in tables


def _write_mmvp(root: Path, world: Path) -> None:
    """A hand-written MMVP (MLLM) folder in the real layout, borrowing two of the world's images per pair."""
    import shutil

    folder = root / "MMVP"
    (folder / "MMVP Images").mkdir(parents=True)
    sources = sorted((world / "bench" / "MMVP_VLM" / "Orientation").glob("*.jpg"))[:4]
    for index, source in enumerate(sources, 1):
        shutil.copy(source, folder / "MMVP Images" / f"{index}.jpg")
    (folder / "Questions.csv").write_text(
        "Index,Question,Options,Correct Answer\n"
        "1,Is the cone pointing up or down?,(a) Up (b) Down,(a)\n"
        "2,Is the cone pointing up or down?,(a) Up (b) Down,(b)\n"
        '3,"Are the butterfly\'s wings closer to being open or closed?",(a) Open (b) Closed,(b)\n'
        '4,"Are the butterfly\'s wings closer to being open or closed?",(a) Open (b) Closed,(b)\n'
    )


def test_mmvp_for_mllms(runner, tiny_llava, world, tmp_path):
    root = tmp_path / "root"
    _write_mmvp(root, world)
    items, details = llava.benchmark_items("mmvp", root)
    assert [i.answer for i in items] == [0, 1, 1, 1] and details["counts"]["pairs"] == 2
    assert items[2].prompt("generative") == (
        "USER: <image>\nAre the butterfly's wings closer to being open or closed? (a) Open (b) Closed\n"
        "Answer with the option's letter from the given choices directly. ASSISTANT:"
    )  # Figure 4
    out = tmp_path / "out"
    for protocol in ("relaxed", "m3id"):
        record = llava.run(tiny_llava, root, out / protocol, benchmarks=["mmvp"], protocol=protocol, max_new_tokens=3,
                           progress=False, runner=runner)["mmvp"]  # fmt: skip
        assert record["chance"]["pairs/mean"] == 25.0
        if protocol == "relaxed":
            # The second pair has one answer for both images: the relaxed rule is undefined there and left out.
            assert record["denominators"]["relaxed_pairs/all"] == 1 and record["denominators"]["pairs/all"] == 2


@pytest.mark.parametrize("protocol", ["generative", "choice"])
def test_batched_answers_equal_one_at_a_time(protocol, runner, tiny_llava, world, tmp_path):
    """Left padding changes nothing a user reads: outputs, parsed answers and correctness match batch size 1."""
    kwargs = dict(benchmarks=["whatsup_a", "coco_spatial_one"], protocol=protocol, limit=3, max_new_tokens=6)
    for batch in (1, 5):
        llava.run(tiny_llava, world / "bench", tmp_path / str(batch), batch_size=batch, progress=False, runner=runner,
                  **kwargs)  # fmt: skip
    for name in kwargs["benchmarks"]:
        one, batched = read_scores(tmp_path / "1", name), read_scores(tmp_path / "5", name)
        fields = ("id", "prompt", "output", "prediction", "correct", "unparseable")
        assert [{k: r.get(k) for k in fields} for r in batched] == [{k: r.get(k) for k in fields} for r in one]
        if protocol == "choice":
            assert _flat([r["perplexity"] for r in batched]) == pytest.approx(
                _flat([r["perplexity"] for r in one]), rel=1e-4
            )


def test_generated_world_holds_mmvp_for_mllms(world):
    items, details = llava.benchmark_items("mmvp", world / "bench")
    assert len(items) == 36 and details["counts"]["pairs"] == 18 and details["label_fixes"]["applied"] == []
    for first, second in zip(items[::2], items[1::2], strict=True):
        assert first.options == second.options and {first.answer, second.answer} == {0, 1}
        assert first.parse == "letter" and first.meta["pair"] == second.meta["pair"]


def test_mmvp_published_label_fixes_applied_and_listed(world, tmp_path):
    """Index 279/280 (tsb0601/MMVP#14) read the corrected answers with label_fixes=paper, as published with none."""
    folder = tmp_path / "MMVP"
    (folder / "MMVP Images").mkdir(parents=True)
    source = next((world / "bench" / "MMVP_VLM" / "Orientation").glob("*.jpg"))
    for index in (279, 280):
        (folder / "MMVP Images" / f"{index}.jpg").write_bytes(source.read_bytes())
    question = "Is the elderly person standing or sitting in the picture?"
    (folder / "Questions.csv").write_text(
        "Index,Question,Options,Correct Answer\n"
        f"279,{question},(a) Standing (b) Sitting,(a)\n280,{question},(a) Standing (b) Sitting,(b)\n"
    )
    fixed, details = llava.benchmark_items("mmvp", tmp_path, label_fixes="paper")
    published, plain = llava.benchmark_items("mmvp", tmp_path, label_fixes="none")
    assert [i.answer for i in fixed] == [1, 0] and [i.answer for i in published] == [0, 1]
    assert [(f["row"], f["answer"]) for f in details["label_fixes"]["applied"]] == [
        ("279", "(a) -> (b)"),
        ("280", "(b) -> (a)"),
    ]
    assert plain["label_fixes"] == {"mode": "none", "applied": []}
    text = (folder / "Questions.csv").read_text()
    (folder / "Questions.csv").write_text(text.replace("\n280,", "\n28O,"))  # a letter O for a zero
    with pytest.raises(ValueError, match=r"Questions.csv line 3: Index '28O' is not a whole number"):
        llava.benchmark_items("mmvp", tmp_path)
    (folder / "Questions.csv").write_text("Index,Question,Correct Answer\n1,q,(a)\n2,q,(b)\n")
    with pytest.raises(ValueError, match=r"Questions.csv: expected columns Index, Question, Options, Correct Answer"):
        llava.benchmark_items("mmvp", tmp_path)
    (tmp_path / "MMVP_VLM").mkdir()
    (tmp_path / "MMVP_VLM" / "Questions.csv").write_text("\ufeffQuestion ID,Statement\n1,a\n2,b\n")
    with pytest.raises(ValueError, match=r"Questions.csv: expected columns Question ID, Type, Statement"):
        llava.benchmark_items("mmvp_vlm", tmp_path)


# ---------------------------------------------------------------- several processes (accelerate launch, gloo on CPU)

ROOT = Path(__file__).resolve().parents[1]
MULTI = dict(benchmarks=["whatsup_a", "mmvp_vlm"], protocol="relaxed", limit=2, batch_size=3)
FLOAT_FIELDS = ("token_logprobs", "perplexity", "probabilities")


def _multi_args(model: Path, data_root: Path, out: Path, *extra: str) -> list[str]:
    args = ["--model", str(model), "--data-root", str(data_root), "--out", str(out), "--benchmarks"]
    args += [*MULTI["benchmarks"], "--protocol", MULTI["protocol"], "--limit", str(MULTI["limit"])]
    return args + ["--batch-size", str(MULTI["batch_size"]), *extra]


def _launch_two(args: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file launch/accelerate/cpu_2proc.yaml -m eval.llava ...`: two gloo processes."""
    config = ROOT / "launch" / "accelerate" / "cpu_2proc.yaml"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "eval.llava"]
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _flat(value) -> list[float]:
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


def _assert_same_results(expected: Path, got: Path) -> None:
    """Everything equal, except option log-probabilities (and what follows from them) within fp32 noise: a question's
    left-padded batch differs with the number of processes, which moves its logits by ~1e-6."""
    for name in MULTI["benchmarks"]:
        want, have = read_scores(expected, name), read_scores(got, name)
        assert [r["id"] for r in have] == [r["id"] for r in want]  # the planned order
        for a, b in zip(want, have, strict=True):
            assert {k: v for k, v in b.items() if k not in FLOAT_FIELDS} == {
                k: v for k, v in a.items() if k not in FLOAT_FIELDS
            }  # prediction, correctness, prompts, options, token counts
            for field in FLOAT_FIELDS:
                assert (field in a) == (field in b)
                if field in a:
                    assert _flat(b[field]) == pytest.approx(_flat(a[field]), rel=1e-4, abs=1e-5)
        want_json, have_json = read_result(expected, name), read_result(got, name)
        for record in (want_json, have_json):
            record.pop("scores_sha256")
        assert have_json == want_json  # metrics, chance, denominators, settings, provenance
    assert (got / "summary.csv").read_text() == (expected / "summary.csv").read_text()
    assert not list(got.glob("*.scores.rank*.jsonl"))  # merged, then removed


@pytest.fixture(scope="module")
def one_process(runner, tiny_llava, world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llava_one_process")
    llava.run(tiny_llava, world / "bench", out, progress=False, runner=runner, **MULTI)
    return out


def test_two_processes_equal_one_process(one_process, tiny_llava, world, tmp_path):
    """accelerate launch, two gloo CPU processes: rank r scores questions r, r + 2, ...; rank 0 merges, prints."""
    done = _launch_two(_multi_args(tiny_llava, world / "bench", tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_results(one_process, tmp_path)
    assert done.stdout.count("whatsup_a: indiv") == 1  # rank 0 alone prints the results
    assert "[relaxed, rank 0 of 2]" in done.stderr  # and the progress bar (its share)


def test_resume_across_a_change_in_the_number_of_processes(one_process, runner, tiny_llava, world, tmp_path):
    # Two processes interrupted after one batch each, rank 1's last line cut short; resumed by one process.
    two_then_one = tmp_path / "two_then_one"
    stopped = _launch_two(_multi_args(tiny_llava, world / "bench", two_then_one, "--stop-after", "1", "--no-progress"))
    assert stopped.returncode != 0 and "Stopped" in stopped.stderr
    assert read_result(two_then_one, "whatsup_a") is None
    rank_files = [llava.rank_scores_path(two_then_one, "whatsup_a", r) for r in (0, 1)]
    assert [len(read_scores_file(p)) for p in rank_files] == [MULTI["batch_size"]] * 2
    text = rank_files[1].read_text()
    rank_files[1].write_text(text[: len(text) - 20])  # an interruption mid-write
    stored = {r["id"] for p in rank_files for r in llava._read_records(p)}  # the complete lines
    assert len(stored) == 2 * MULTI["batch_size"] - 1

    scored: list[str] = []
    original = llava.score_items

    def counting(runner_, items, *args):
        scored.extend(i.id for i in items)
        return original(runner_, items, *args)

    llava.score_items = counting
    try:
        llava.run(tiny_llava, world / "bench", two_then_one, progress=False, runner=runner, **MULTI)
    finally:
        llava.score_items = original
    items = llava.benchmark_items("whatsup_a", world / "bench", limit=MULTI["limit"])[0]
    assert [i for i in scored if i in {x.id for x in items}] == [i.id for i in items if i.id not in stored]
    _assert_same_results(one_process, two_then_one)

    # One process interrupted after one batch; resumed by two processes.
    one_then_two = tmp_path / "one_then_two"
    with pytest.raises(llava.Stopped):
        llava.run(tiny_llava, world / "bench", one_then_two, progress=False, runner=runner, stop_after=1, **MULTI)
    assert len(read_scores(one_then_two, "whatsup_a")) == MULTI["batch_size"]
    resumed = _launch_two(_multi_args(tiny_llava, world / "bench", one_then_two, "--no-progress"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    total = len(items)
    assert f"whatsup_a: {MULTI['batch_size']} of {total} questions already scored, resuming" in resumed.stdout
    _assert_same_results(one_process, one_then_two)


def read_scores_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
