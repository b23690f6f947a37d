"""train/cache.py: training from cached outputs of frozen parts equals training without, and caches stay honest."""

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_finetune import finetune_cmd, metrics, run

from models import build_model
from models.config import ImageTowerConfig, ModelConfig
from train.cache import (
    build_cache,
    build_image_cache,
    caption_texts,
    image_cache_blocker,
    shards_fingerprint,
    text_cache_blocker,
)
from train.data import ShardSamples, index_shards

STEPS = ["train.max_steps=6", "optim.warmup_steps=1", "train.log_every_steps=1", "data.augment=false"]


def test_auto_builds_a_cache_only_for_a_run_that_repays_it(world_shards, tmp_path):
    """A 2-step smoke run (128 samples of 700) starts at once without a cache build and says why; a run long
    enough builds it; after that even the smoke run uses the finished cache."""
    smoke = ["train.max_steps=2", "optim.warmup_steps=1", "data.augment=false", f"cache_dir={tmp_path / 'features'}"]
    first = run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "smoke", *smoke))
    assert "image features: computed every step (cache=auto: this run trains on 128 samples, fewer than the 700" in (
        first.stdout
    )
    assert not list((tmp_path / "features").glob("image-*"))
    run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "long", *smoke, "train.max_steps=11"))  # 704 >= 700
    assert [p for p in (tmp_path / "features").glob("image-*") if p.is_dir()]
    again = run(finetune_cmd("tiny_clip_neg", world_shards, tmp_path / "smoke2", *smoke))
    assert "image features: cached in" in again.stdout


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").read_text()
    return load_file(str(run_dir / "checkpoints" / latest / "trainable.safetensors"))


def trained(recipe: str, shards: Path, out: Path, cache: str) -> tuple[list[float], dict, dict]:
    done = run(finetune_cmd(recipe, shards, out, *STEPS, f"cache={cache}", f"cache_dir={out.parent / 'features'}"))
    run_dir = out / recipe
    record = json.loads((run_dir / "feature_caches.json").read_text())
    # the frozen parts a cache replaces are freed before training (their weights leave the model)
    freed = [part for kind, part in (("image", "image tower"), ("text", "LLM2Vec LLM")) if record[kind]]
    assert (f"freed (their outputs come from the cache): {', '.join(freed)}" in done.stdout) == bool(freed)
    return [r["loss"] for r in metrics(run_dir)], final_weights(run_dir), record


@pytest.mark.parametrize(
    ("recipe", "cached", "tolerance"),
    [
        # fp32 image tower outputs are the same numbers whichever batch computed them: bit-identical here.
        ("tiny_clip_neg", ("image",), 1e-6),
        # The LLM pads each batch to its longest text, and the cache batches texts by length, not as training
        # does: float sums in another order (measured differences ~1e-8 in the weights).
        ("tiny_clip_llm2vec_neg", ("image", "text"), 1e-5),
        # A PACL head: the image cache holds the last block's patch tokens (flat rows), unflattened by the head.
        ("tiny_clip_pacl_neg", ("image",), 1e-6),
    ],
)
def test_training_from_the_cache_gives_the_losses_and_weights_of_training_without(
    recipe, cached, tolerance, world_shards, tmp_path
):
    losses_off, weights_off, record_off = trained(recipe, world_shards, tmp_path / "off", "off")
    losses_on, weights_on, record_on = trained(recipe, world_shards, tmp_path / "on", "on")
    assert record_off["image"] is None and record_off["text"] is None
    assert [part for part in ("image", "text") if record_on[part]] == list(cached)
    assert len(losses_on) == len(losses_off) == 6
    assert losses_on == pytest.approx(losses_off, rel=tolerance, abs=tolerance)
    assert weights_on.keys() == weights_off.keys()
    for name in weights_on:
        torch.testing.assert_close(weights_on[name], weights_off[name], rtol=tolerance, atol=tolerance, msg=name)
    # and training moved the weights, so the comparison compares something
    start = build_model(_recipe_model(recipe)).model.state_dict()
    assert any(not torch.equal(weights_on[n], start[n]) for n in weights_on if n in start)


def _recipe_model(recipe: str) -> ModelConfig:
    from train.config import load_recipe

    return load_recipe(Path("recipes") / f"{recipe}.yaml").model


def test_a_second_run_reuses_the_cache_and_a_changed_input_gets_a_new_one(world_shards, tmp_path):
    bundle = build_model(ModelConfig(name="tiny-clip"))
    index = index_shards([world_shards])
    args = {"precision": "fp32", "batch_size": 64, "workers": 0, "device": torch.device("cpu"), "autocast": nullcontext}
    first = build_image_cache(tmp_path, bundle, index, [str(world_shards)], **args)
    written = (first.folder / "features.npy").stat().st_mtime_ns
    again = build_image_cache(tmp_path, bundle, index, [str(world_shards)], **args)
    assert again.folder == first.folder and (again.folder / "features.npy").stat().st_mtime_ns == written
    # the cached rows are the tower's outputs on the eval transform, sample by sample
    samples = ShardSamples(index, bundle.preprocess_eval, "first", seed=0)
    with torch.no_grad():
        direct = bundle.model.image_tower(torch.stack([samples.pixels(i, 0) for i in (0, 5, 699)]))
    torch.testing.assert_close(first.rows([0, 5, 699]), direct, rtol=1e-5, atol=1e-6)

    with torch.no_grad():  # other weights
        next(bundle.model.image_tower.parameters()).add_(0.01)
    changed_weights = build_image_cache(tmp_path, bundle, index, [str(world_shards)], **args)
    assert changed_weights.folder != first.folder
    assert not np.array_equal(changed_weights.features, first.features)
    assert build_image_cache(
        tmp_path, bundle, index, [str(world_shards)], **{**args, "precision": "bf16"}
    ).folder not in (
        first.folder,
        changed_weights.folder,
    )
    fewer = tmp_path / "fewer"  # other shard contents: the same shards but the last
    fewer.mkdir()
    for tar in sorted(world_shards.glob("*.tar"))[:-1]:
        (fewer / tar.name).symlink_to(tar)
    (fewer / "manifest.json").write_bytes((world_shards / "manifest.json").read_bytes())
    assert shards_fingerprint(index_shards([fewer], unrecorded="index"), [fewer]) != shards_fingerprint(
        index, [world_shards]
    )


def test_an_interrupted_build_resumes_with_the_chunks_it_had_not_finished(tmp_path):
    rows, dim = 10, 3
    chunks = [np.arange(s, min(s + 3, rows)) for s in range(0, rows, 3)]  # 4 chunks
    key = {"kind": "test", "version": 1}
    computed: list[int] = []

    def values(chunk_id: int) -> torch.Tensor:
        return torch.arange(len(chunks[chunk_id]) * dim, dtype=torch.float32).reshape(-1, dim) + 100 * chunk_id

    def compute_then_crash(ids):
        for chunk_id in ids:
            if len(computed) == 2:
                raise KeyboardInterrupt  # as a killed job
            computed.append(chunk_id)
            yield chunk_id, values(chunk_id)

    folder = tmp_path / "test-cache"
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, key, rows, dim, chunks, compute_then_crash)
    assert not folder.exists() and (tmp_path / ".test-cache.partial").is_dir()

    resumed: list[int] = []

    def compute(ids):
        for chunk_id in ids:
            resumed.append(chunk_id)
            yield chunk_id, values(chunk_id)

    build_cache(folder, key, rows, dim, chunks, compute)
    assert computed == [0, 1] and resumed == [2, 3]
    expected = np.concatenate([values(c).numpy() for c in range(len(chunks))])
    np.testing.assert_array_equal(np.load(folder / "features.npy"), expected)
    assert not (tmp_path / ".test-cache.partial").exists() and not list(folder.glob("done-*"))

    # a partial build under another key is not resumed: everything is computed again
    resumed.clear()
    other = tmp_path / "other-cache"
    (tmp_path / ".other-cache.partial").mkdir()
    (tmp_path / ".other-cache.partial" / "meta.json").write_text(json.dumps({"key": {"kind": "stale"}}))
    build_cache(other, key, rows, dim, chunks, compute)
    assert resumed == [0, 1, 2, 3]


def test_caches_are_used_only_where_they_are_exact():
    locked = ModelConfig(name="tiny-clip")
    assert image_cache_blocker(locked, augment=False) is None
    assert "augment" in image_cache_blocker(locked, augment=True)
    assert image_cache_blocker(ModelConfig(image=ImageTowerConfig(locked=False)), augment=False) == (
        "the image tower trains"
    )
    assert image_cache_blocker(ModelConfig(image=ImageTowerConfig(unlocked_last_blocks=2)), augment=False)
    assert text_cache_blocker(locked) == "the text tower trains"
    assert text_cache_blocker(_recipe_model("tiny_clip_llm2vec_neg")) is None


def test_the_text_cache_holds_every_caption_and_hard_negative_of_the_policy(world_shards):
    samples = ShardSamples(index_shards([world_shards]), lambda image: image, "first", seed=0)
    texts, offsets, negative_rows = caption_texts(samples, "options")
    assert offsets[0] == 0 and offsets[-1] == len(negative_rows) and len(offsets) == len(samples) + 1
    for i in (0, 17, len(samples) - 1):
        meta = samples.meta(i)
        rows = range(offsets[i], offsets[i + 1])
        assert [texts[r] for r in rows] == meta["captions"]
        got = [texts[negative_rows[r]] if negative_rows[r] >= 0 else None for r in rows]
        assert got == meta["hard_negatives"]
    assert (negative_rows >= 0).any()
    concat, offsets, _ = caption_texts(samples, "concat")
    assert list(np.diff(offsets)) == [1] * len(samples)
    assert concat[1] == " ".join(samples.meta(1)["captions"])


def test_two_processes_build_the_cache_of_one(world_shards, tmp_path):
    recipe = ["recipes/tiny_clip_neg.yaml", f"data.shards=[{world_shards}]", "data.workers=0", "data.augment=false"]
    run(["-m", "train.cache", *recipe, f"cache_dir={tmp_path / 'one'}"])
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/accelerate/cpu_2proc.yaml"]
    run(["-m", "train.cache", *recipe, f"cache_dir={tmp_path / 'two'}"], launcher)
    (one,) = (tmp_path / "one").glob("image-*")
    (two,) = (tmp_path / "two").glob("image-*")
    assert one.name == two.name
    np.testing.assert_array_equal(np.load(one / "features.npy"), np.load(two / "features.npy"))
    assert not list((tmp_path / "two").glob(".*partial"))


# --- LLM2Vec padding and the text cache's length-sorted build ----------------------------------------------------

TEXTS = [
    "a red ball",
    "a green box is behind the purple cup, and the purple cup is closer to the camera than the box",
    "cup",
    "the white tile is on the left of the yellow plate",
    "two objects: a brown ring and a black cup; the ring is on the right",
]


@pytest.fixture(scope="module")
def tiny_llm2vec_bundle():
    """tiny_clip_llm2vec_neg's model (fp32); a test sets the tower's chunk_size (captions per LLM pass)."""
    return build_model(_recipe_model("tiny_clip_llm2vec_neg"))


def _padded_to(tokens: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """The same texts left-padded to `width` columns (what padding="max_length" gives)."""
    extra = width - tokens["input_ids"].shape[1]
    return {
        key: torch.cat([torch.full((len(value), extra), pad_id if key == "input_ids" else 0), value], dim=1)
        for key, value in tokens.items()
    }


def test_llm2vec_pads_each_pass_to_its_longest_text_and_the_embeddings_stay_those_of_max_length_padding(
    tiny_llm2vec_bundle,
):
    from models.llm2vec_text import trim_padding

    bundle = tiny_llm2vec_bundle
    bundle.model.text_tower.chunk_size = 2
    tower, tokenizer = bundle.model.text_tower, bundle.tokenizer
    tokens = tokenizer(TEXTS)  # llm2vec pads the batch to its longest text, on the left
    lengths = tokens["attention_mask"].sum(dim=1)
    assert tokens["input_ids"].shape[1] == int(lengths.max()) < tokenizer.llm2vec.max_length
    # every LLM pass (chunk of 2 rows) is cut to its own longest text
    chunks = tower._chunks(tokens)
    assert [c["input_ids"].shape[1] for c in chunks] == [int(lengths[i : i + 2].max()) for i in range(0, 5, 2)]
    for chunk in chunks:
        assert set(chunk) == {"input_ids", "attention_mask", "embed_mask"}
        assert (chunk["attention_mask"].sum(0) > 0).all() and chunk["embed_mask"].sum() > 0
    longest_row = {key: value[[int(lengths.argmax())]] for key, value in tokens.items()}
    assert trim_padding(longest_row) is longest_row  # a slice its longest text fills is passed on as it is

    pad_id = tokenizer.llm2vec.tokenizer.pad_token_id
    longest = tower.frozen_features(tokens)
    full = tower.frozen_features(_padded_to(tokens, tokenizer.llm2vec.max_length, pad_id))
    alone = torch.cat([tower.frozen_features(tokenizer([text])) for text in TEXTS])  # no padding at all
    # llm2vec masks padded keys out of attention and mean-pools the caption's tokens only (embed_mask); rotary
    # positions all shift by the padding, which attention does not see: equal up to float rounding.
    torch.testing.assert_close(longest, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(longest, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(longest[0], longest[1])  # different captions, different embeddings


def test_the_text_cache_batches_by_token_count_and_stores_rows_in_the_original_order(
    tiny_llm2vec_bundle, world_shards, tmp_path
):
    from train.cache import TextStore, build_text_cache, length_order, padding_tokens, text_lengths

    bundle = tiny_llm2vec_bundle
    bundle.model.text_tower.chunk_size = 8
    tokenizer = bundle.tokenizer
    index = index_shards([world_shards])
    texts, _, negative_rows = caption_texts(ShardSamples(index, lambda image: image, "first", seed=0), "concat")
    order = length_order(tokenizer, texts)
    real = tokenizer(texts[:50])["attention_mask"].sum(dim=1)  # template + caption: a constant offset
    assert len(set((real - torch.as_tensor(text_lengths(tokenizer, texts[:50]))).tolist())) <= 3
    keys = text_lengths(tokenizer, texts)[order]
    assert (np.diff(keys) <= 0).all() and sorted(order.tolist()) == list(range(len(texts)))

    args = {"precision": "fp32", "batch_size": 32, "device": torch.device("cpu"), "autocast": nullcontext}
    store = build_text_cache(tmp_path, bundle, index, [str(world_shards)], caption_policy="concat", **args)
    assert isinstance(store, TextStore) and store.features.shape[0] == len(texts)
    rows = [0, 1, len(texts) // 2, int(order[0]), int(order[-1]), int(negative_rows[negative_rows >= 0][0])]
    with torch.no_grad():
        direct = torch.cat([bundle.model.frozen_text_features(tokenizer([texts[r]])) for r in rows])
    torch.testing.assert_close(store.rows(rows), direct, rtol=1e-5, atol=1e-5)  # row r holds text r

    # padding: the cache's batches (by tokens, each pass to its longest text) against the alternatives
    sorted_ = padding_tokens(tokenizer, texts, batch_size=32, chunk_size=8)
    shuffled = padding_tokens(tokenizer, texts, batch_size=32, chunk_size=8, order="given", pad="batch")
    max_length = padding_tokens(tokenizer, texts, batch_size=32, chunk_size=8, order="given", pad="max_length")
    assert sorted_.real == shuffled.real == max_length.real and sorted_.texts == len(texts)
    assert sorted_.computed < shuffled.computed < max_length.computed
    assert sorted_.waste < 0.10 and sorted_.ratio < 1.1
    assert max_length.computed == len(texts) * tokenizer.llm2vec.max_length


def test_a_partial_build_with_another_chunk_layout_starts_over(tmp_path):
    # A finished chunk id names rows only under its layout: the text cache's order (by token count) or another
    # batch size gives other rows the same ids, so such a partial build must not be resumed.
    rows, dim, key = 6, 2, {"kind": "test", "version": 1}
    by_length = [np.array([5, 4, 3]), np.array([2, 1, 0])]
    in_order = [np.array([0, 1, 2]), np.array([3, 4, 5])]  # as many chunks, other rows

    def compute(chunks, stop_after=None):
        def run(ids):
            for n, chunk_id in enumerate(ids):
                if n == stop_after:
                    raise KeyboardInterrupt
                yield chunk_id, torch.as_tensor(chunks[chunk_id] + 1.0)[:, None].repeat(1, dim)

        return run

    folder = tmp_path / "test-cache"
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, key, rows, dim, by_length, compute(by_length, stop_after=1))
    build_cache(folder, key, rows, dim, in_order, compute(in_order))
    # resumed, chunk 0 (rows 5, 4, 3) would count as done and rows 0-2 would never be computed
    np.testing.assert_array_equal(np.load(folder / "features.npy")[:, 0], np.arange(rows) + 1)  # row r holds r + 1
