"""The training loader: one global order per epoch, whatever the number of processes, workers or restarts."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from train.data import (
    BatchPlan,
    Collate,
    ShardError,
    ShardSamples,
    choose_caption,
    decode_rgb,
    epoch_loader,
    index_shards,
    seeded_call,
)


@pytest.fixture(scope="module")
def index(world_shards):
    return index_shards([world_shards])


def random_crop_transform():
    return transforms.Compose([transforms.RandomResizedCrop(32, scale=(0.5, 1.0)), transforms.ToTensor()])


def fake_tokenizer(texts):
    return {"input_ids": torch.tensor([[len(t), sum(map(ord, t)) % 1000] for t in texts])}


def test_index_covers_every_sample_of_sizes_json(world_shards, index):
    sizes = json.loads((world_shards / "sizes.json").read_text())
    assert len(index) == sum(sizes.values())
    assert len(set(index.keys)) == len(index)
    with pytest.raises(ShardError, match="no .tar shards"):
        index_shards([world_shards / "nowhere"])


@pytest.mark.parametrize(("world", "accumulation"), [(2, 1), (4, 1), (2, 2)])
def test_global_batches_are_the_same_for_any_number_of_processes(world, accumulation):
    single = BatchPlan(samples=1000, global_batch=64, micro_batch=64, world_size=1)
    split = BatchPlan(samples=1000, global_batch=64, micro_batch=64 // world // accumulation, world_size=world)
    assert split.accumulation == accumulation and split.steps_per_epoch == single.steps_per_epoch == 15
    reference = single.rank_batches(seed=3, epoch=1, rank=0)
    per_rank = [split.rank_batches(seed=3, epoch=1, rank=r) for r in range(world)]
    for step, expected in enumerate(reference):
        # Micro-step a gathers the ranks' slices in rank order: together they are the global batch, in order.
        gathered = [
            np.concatenate([per_rank[r][step * accumulation + a] for r in range(world)]) for a in range(accumulation)
        ]
        assert np.array_equal(np.concatenate(gathered), expected)


def test_epochs_are_permutations_that_differ_and_resume_skips_exactly():
    plan = BatchPlan(samples=100, global_batch=16, micro_batch=8, world_size=1)
    first = np.concatenate(plan.rank_batches(seed=0, epoch=0, rank=0))
    second = np.concatenate(plan.rank_batches(seed=0, epoch=1, rank=0))
    assert len(set(first)) == len(first) == 96  # the last partial global batch is dropped
    assert not np.array_equal(first, second)
    full = plan.rank_batches(seed=0, epoch=0, rank=0)
    resumed = plan.rank_batches(seed=0, epoch=0, rank=0, start_step=4)
    assert all(np.array_equal(a, b) for a, b in zip(full[4 * plan.accumulation :], resumed, strict=True))


def test_plan_problems_are_stated():
    assert BatchPlan(samples=10, global_batch=64, micro_batch=48, world_size=1).problems() == [
        "train.global_batch_size 64 is not a multiple of data.batch_size 48 x 1 processes",
        "the shards hold 10 samples, fewer than one global batch (64)",
    ]


def test_caption_policies_pick_the_matching_negative():
    captions, negatives = ["a on the left", "b", "c to the right"], ["a on the right", None, "c to the left"]
    assert choose_caption(captions, negatives, "first", seed=7) == ("a on the left", "a on the right")
    assert choose_caption(captions, negatives, "random", seed=4) == ("b", None)
    assert choose_caption(captions, negatives, "random", seed=5) == ("c to the right", "c to the left")
    assert choose_caption(captions, negatives, "concat", seed=0) == (
        "a on the left b c to the right",
        "a on the right b c to the left",
    )
    assert choose_caption(["x"], [None], "concat", seed=0) == ("x", None)


def test_samples_are_seeded_per_epoch_not_per_worker(index):
    samples = ShardSamples(index, random_crop_transform(), "random", seed=0, epoch=0)
    a = samples[5]
    torch.manual_seed(123)  # the global RNG must not matter
    b = samples[5]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    other_epoch = ShardSamples(index, random_crop_transform(), "random", seed=0, epoch=1)
    assert any(not torch.equal(samples[i][0], other_epoch[i][0]) for i in range(5))  # other crops
    multi = [i for i in range(len(index)) if index.keys[i].startswith("mix665k")][:40]
    drawn = {
        i: {ShardSamples(index, transforms.ToTensor(), "random", 0, epoch=e)[i][1] for e in range(6)} for i in multi
    }
    assert any(len(captions) > 1 for captions in drawn.values())  # multi-answer items draw other answers


def test_seeded_call_draws_as_torch_manual_seed_and_keeps_the_callers_stream():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    transform = random_crop_transform()
    with torch.random.fork_rng(devices=[]):  # what the loader did before: the reference draws
        torch.manual_seed(77)
        expected = transform(image)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert torch.equal(seeded_call(transform, image, 77), expected)
    assert not torch.equal(seeded_call(transform, image, 78), expected)
    with pytest.raises(ZeroDivisionError):
        seeded_call(lambda img: 1 / 0, image, 77)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_decode_rgb_gives_the_pixels_of_convert_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    rgb.convert(mode).save(buffer, format="JPEG")
    decoded = decode_rgb(buffer.getvalue())
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), np.asarray(image.convert("RGB")))


def test_workers_and_resume_give_the_same_batches(index):
    plan = BatchPlan(samples=len(index), global_batch=32, micro_batch=16, world_size=1)
    collate = Collate(fake_tokenizer, with_negatives=True)

    def batches(workers, start_step=0):
        samples = ShardSamples(index, random_crop_transform(), "random", seed=1)
        return list(epoch_loader(samples, plan, collate, epoch=2, rank=0, start_step=start_step, workers=workers))

    inline, pooled = batches(0), batches(2)
    assert len(inline) == plan.steps_per_epoch * plan.accumulation
    for a, b in zip(inline, pooled, strict=True):
        assert (
            a.keys == b.keys
            and torch.equal(a.pixels, b.pixels)
            and torch.equal(a.text["input_ids"], b.text["input_ids"])
        )
    resumed = batches(0, start_step=3)
    assert [b.keys for b in resumed] == [b.keys for b in inline[3 * plan.accumulation :]]
    assert all(torch.equal(a.pixels, b.pixels) for a, b in zip(inline[3 * plan.accumulation :], resumed, strict=True))


def test_collate_puts_hard_negatives_after_the_captions(index):
    samples = ShardSamples(index, transforms.ToTensor(), "first", seed=0)
    with_negative = [i for i in range(len(index)) if samples[i][2] is not None][:3]
    without = [i for i in range(len(index)) if samples[i][2] is None][:2]
    items = [samples[i] for i in with_negative + without]
    batch = Collate(lambda texts: {"texts": texts}, with_negatives=True)(
        [(torch.zeros(3, 4, 4), *item[1:]) for item in items]
    )
    texts = batch.text["texts"]
    # only real negatives are texts: 5 captions + 3 negatives, no copies for the samples without one
    assert len(texts) == 8 and texts[:5] == [item[1] for item in items]
    assert texts[5:] == [item[2] for item in items[:3]]
    assert batch.negative_mask.tolist() == [True, True, True, False, False]
    plain = Collate(lambda texts: {"texts": texts}, with_negatives=False)([(torch.zeros(3, 4, 4), *items[0][1:])])
    assert plain.negative_mask is None and len(plain.text["texts"]) == 1


def test_a_negative_that_tokenizes_as_its_caption_is_dropped_from_the_rows_and_the_mask():
    """Cut to the context length, "a cat left of a dog ..." and its swap can be the same tokens: no negative at all.
    Its row leaves the text batch (nothing to encode) and its sample leaves the mask; the count is reported."""
    from train.data import drop_identical_negatives, texts_with_negatives

    def first_word(texts):  # a context length of one word
        return {"input_ids": torch.tensor([[sum(map(ord, t.split()[0]))] for t in texts]), "n": torch.tensor(7)}

    captions = ["left cat", "dog on the right", "a bird", "cup left"]
    negatives = ["left dog", "cat on the left", None, "cup right"]  # rows 1 and 3 differ only past word one
    texts, mask = texts_with_negatives(captions, negatives, True)
    tokens, kept, identical = drop_identical_negatives(first_word(texts), mask)
    assert (
        identical == 2 and kept.tolist() == [False, True, False, False] and mask.tolist() == [True, True, False, True]
    )
    assert tokens["input_ids"].shape[0] == 4 + 1 and tokens["n"].item() == 7  # captions + the one real negative
    assert tokens["input_ids"][4].item() == sum(map(ord, "cat"))


@pytest.mark.parametrize("recipe", ["tiny_clip_neg", "tiny_siglip_neg", "tiny_clip_llm2vec_neg"])
def test_encoding_only_real_negatives_gives_the_loss_and_gradients_of_encoding_copies(recipe, tmp_path):
    """The old layout encoded a copy of the caption for every sample without a hard negative (2B texts) and the
    mask kept it out of the loss; now only the B captions and the k real negatives are encoded. Same loss, same
    gradients (float tolerance: the text batch has other rows), on a batch that mixes both kinds of samples."""
    from models import build_model
    from train.config import load_recipe
    from train.data import negatives_by_sample, texts_with_negatives
    from train.losses import build_loss

    cfg = load_recipe(recipe, [f"cache_dir={tmp_path}"])
    bundle = build_model(cfg.model, cache_dir=tmp_path)
    model = bundle.model.double().train()
    loss_fn = build_loss(cfg.loss.name)
    captions = ["a cat left of a dog", "a red cup", "the tree is to the right of the house", "two birds", "a car"]
    negatives = ["a cat right of a dog", None, "the tree is to the left of the house", None, None]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in captions]
    pixels = torch.stack([bundle.preprocess_eval(image) for image in images]).double()
    mask = torch.tensor([n is not None for n in negatives])

    def loss_and_grads(texts, negatives_from):
        model.zero_grad(set_to_none=True)
        out = model(pixels, bundle.tokenizer(texts))
        text = out["text_features"]
        loss = loss_fn(out["image_features"], text[:5], out["logit_scale"], out["logit_bias"],
                       negative_features=negatives_from(text[5:]), negative_mask=mask)  # fmt: skip
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, text.shape[0]

    copies = captions + [n if n is not None else c for c, n in zip(captions, negatives, strict=True)]
    old_loss, old_grads, old_rows = loss_and_grads(copies, lambda rows: rows)
    texts, _ = texts_with_negatives(captions, negatives, True)
    new_loss, new_grads, new_rows = loss_and_grads(texts, lambda rows: negatives_by_sample(rows, mask))
    assert (old_rows, new_rows) == (10, 7)
    assert torch.allclose(new_loss, old_loss, rtol=1e-10, atol=1e-12) and old_grads.keys() == new_grads.keys()
    for name, grad in old_grads.items():
        assert torch.allclose(new_grads[name], grad, rtol=1e-8, atol=1e-10), name
