"""The hard-negative recipes' step at real width: encoding a copy of the caption for every sample without a
negative (2B texts, what training did before) against only the real negatives (B + k, train/data.py).

    python bench/negative_rows_speed.py [--batch 8] [--steps 3]

clip_neg (CLIP ViT-L/14-336's text tower, 12 x 768, 77 tokens) and siglip_neg (SigLIP ViT-L/16-384's, 24 x 1024,
64 tokens), random weights at their real sizes, fp32 on CPU, trained from the image-feature cache as those recipes
are (the locked image tower's outputs given; here random). A micro-batch of B captions, k of them with a hard
negative at LLaVA's rate (13,218 of 1,182,738 samples: about 1%; the batch holds at least one so the loss has one).
Each step: the text tower forward, the recipe's loss, backward. Both layouts give the same loss and gradients
(tests/test_train_data.py); only the rows differ. Alternating rounds, median seconds per step.
`bench_negative_rows()` returns a table in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from models import build_model  # noqa: E402
from train.config import load_recipe  # noqa: E402
from train.data import negatives_by_sample, texts_with_negatives  # noqa: E402
from train.losses import build_loss  # noqa: E402

LLAVA_NEGATIVE_RATE = 13_218 / 1_182_738  # samples with a hard negative (Appendix B.2's counts)


def _captions(batch: int) -> tuple[list[str], list[str | None]]:
    """B LLaVA-like captions; ceil(B x rate) of them (at least one) with their left/right swap."""
    with_negative = max(1, round(batch * LLAVA_NEGATIVE_RATE))
    captions = [f"a photo of a red cup number {i} next to a small plant on a wooden table" for i in range(batch)]
    negatives: list[str | None] = [None] * batch
    for i in range(with_negative):
        captions[i] = f"a dog to the left of a cat on a sofa, photo {i}"
        negatives[i] = f"a dog to the right of a cat on a sofa, photo {i}"
    return captions, negatives


def _step_seconds(model, tokenizer, loss_fn, captions, negatives, image, copies: bool) -> float:
    n = len(captions)
    if copies:  # before: a copy of the caption where a sample has no negative; the mask keeps it out of the loss
        texts = captions + [neg if neg is not None else cap for cap, neg in zip(captions, negatives, strict=True)]
        mask = torch.tensor([neg is not None for neg in negatives])
    else:
        texts, mask = texts_with_negatives(captions, negatives, True)
    started = time.perf_counter()
    model.zero_grad(set_to_none=True)
    out = model(None, tokenizer(texts), image_frozen=image)
    text = out["text_features"]
    rest = text[n:] if copies else negatives_by_sample(text[n:], mask)
    loss = loss_fn(out["image_features"], text[:n], out["logit_scale"], out["logit_bias"],
                   negative_features=rest, negative_mask=mask)  # fmt: skip
    loss.backward()
    return time.perf_counter() - started


def bench_negative_rows(batch: int = 8, steps: int = 3, rounds: int = 2) -> dict:
    rows: dict[str, dict] = {}
    captions, negatives = _captions(batch)
    k = sum(n is not None for n in negatives)
    for recipe in ("clip_neg", "siglip_neg"):
        cfg = load_recipe(recipe, ["model.pretrained=random", "train.precision=fp32"])
        bundle = build_model(cfg.model)
        model = bundle.model.train()
        model.image_tower = torch.nn.Identity()  # its outputs come from the cache in these recipes
        with torch.no_grad():
            width = model.encode_text(bundle.tokenizer(["x"])).shape[-1]
        image = torch.randn(batch, width)
        loss_fn = build_loss(cfg.loss.name)
        times: dict[bool, list[float]] = {True: [], False: []}
        _step_seconds(model, bundle.tokenizer, loss_fn, captions, negatives, image, False)  # warm-up
        for round_index in range(rounds):
            for copies in (True, False) if round_index % 2 == 0 else (False, True):
                for _ in range(steps):
                    times[copies].append(
                        _step_seconds(model, bundle.tokenizer, loss_fn, captions, negatives, image, copies)
                    )
        before, after = statistics.median(times[True]), statistics.median(times[False])
        rows[f"{recipe}: 2B texts, copies of the caption (before, baseline)"] = {
            "texts": 2 * batch, "seconds_per_step": round(before, 3), "ratio_vs_baseline": 1.0,
        }  # fmt: skip
        rows[f"{recipe}: B + k texts, real negatives only (now)"] = {
            "texts": batch + k, "seconds_per_step": round(after, 3), "ratio_vs_baseline": round(before / after, 2),
        }  # fmt: skip
        del model, bundle
    return {
        "how": f"real-size text towers, random weights, fp32 on CPU; micro-batch B={batch} with k={k} hard negative "
        f"(LLaVA's rate, at least one); text forward + loss + backward per step, image features given (the cache); "
        f"median of {steps * rounds} steps per layout in alternating rounds. ratio: before / now.",
        "columns": {"texts": "texts encoded", "seconds_per_step": "s / step"},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/negative_rows_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(bench_negative_rows(args.batch, args.steps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
