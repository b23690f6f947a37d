"""Do encoders agree where CLIP is blind? Image-pair cosines for any encoder, and mining of "CLIP-blind" pairs.

    python -m eval.agreement --encoders clip-vit-l14-336 ViT-SO400M-14-SigLIP2=webli dinov2:facebook/dinov2-large \
        run:runs/clip_neg@epoch_5 --data-root data/whatsup --benchmarks whatsup_a whatsup_b mmvp_vlm --out agreement
    python -m eval.agreement --encoders tiny-clip dinov2:tiny-dinov2 --folder my_images --out agreement \
        --mine tiny-clip dinov2:tiny-dinov2 --high 0.95 --low 0.6

Encoders: a model preset or tiny stand-in (tiny-clip), any open_clip name with `=<pretrained>` (a tag, a weights
file or folder: SigLIP 2, EVA-CLIP, ...), `run:<run folder>[@<checkpoint>]` (its last checkpoint by default; the
pooled image embedding, also for a run with an alignment head), and `dinov2:<HF name or folder>` (the CLS token, as
MMVP; `dinov2:tiny-dinov2` is a random stand-in). Weights are read offline: local files or the Hugging Face cache.

Image pairs: the benchmarks' own (What'sUp: the two images of each axis pair of one object pair; MMVP-VLM: each
question pair), or for `--folder` the pairs of `--pairs CSV` (columns first, second) or else every pair, written per
pair and averaged per benchmark axis (the paper's Table 1 column "image-pair cosine",
for every encoder). With `--mine FIRST SECOND`, every pair of the image set (the benchmarks' images, or `--folder`'s)
is a candidate: pairs with cosine >= --high under FIRST and <= --low under SECOND (MMVP's rule: CLIP > 0.95,
DINOv2 < 0.6), disjoint (greedy by the cosine gap), at most --max-pairs. They are written as pairs.csv and, when every
image has a caption (the benchmark's own caption, or a `<image stem>.txt` beside a folder's image), as a benchmark in
MMVP-VLM's layout (`<out>/mined/MMVP_VLM/Questions.csv`, `MMVP_VLM_Images/<Type>/<id>.jpg`) that
`python -m eval.run --data-root <out>/mined --benchmarks mmvp_vlm` scores like MMVP-VLM.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from eval import mmvp_vlm, spatial_qa, whatsup
from eval.scoring import chunked_features

PAIR_BENCHMARKS = ("whatsup_a", "whatsup_b", "mmvp_vlm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MINED_TYPE = "CLIP-blind"


@dataclass(frozen=True)
class ImagePair:
    set: str  # benchmark/axis, or "mined"
    first: str  # image paths
    second: str


@dataclass
class ImageSet:
    images: list[str]  # every image, in a fixed order
    captions: dict[str, str]  # image -> its caption (what a mined benchmark states), where known
    pairs: list[ImagePair]  # the benchmarks' own pairs


# ---- encoders ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSpec:
    label: str  # as given on the command line
    kind: str  # "clip", "run" or "dinov2"
    name: str  # model name, run folder or DINOv2 source
    pretrained: str = ""
    checkpoint: str = ""


def parse_encoder(spec: str) -> EncoderSpec:
    if spec.startswith("dinov2:"):
        return EncoderSpec(spec, "dinov2", spec.removeprefix("dinov2:"))
    if spec.startswith("run:"):
        folder, _, checkpoint = spec.removeprefix("run:").partition("@")
        return EncoderSpec(spec, "run", folder, checkpoint=checkpoint)
    name, _, pretrained = spec.partition("=")
    return EncoderSpec(spec, "clip", name, pretrained)


def load_encoder(spec: EncoderSpec, device: torch.device) -> Callable[[list[str]], torch.Tensor]:
    """paths -> (N, D) L2-normalised image embeddings (float32, CPU), chunked and shared over eval processes."""
    if spec.kind == "dinov2":
        from models.dinov2 import load_dinov2

        encoder = load_dinov2(spec.name)
        encoder.model.to(device)

        def dinov2(paths: list[str]) -> torch.Tensor:
            return F.normalize(encoder.embed([_rgb(p) for p in paths]), dim=-1)

        return lambda paths: chunked_features(paths, dinov2, desc=f"{spec.label} images")
    bundle = _clip_bundle(spec)
    bundle.model.to(device).eval()
    from eval.scoring import ModelScorer

    scorer = ModelScorer(bundle, device=device)

    @torch.no_grad()
    def clip(paths: list[str]) -> torch.Tensor:  # the pooled embedding, also under an alignment head
        return F.normalize(bundle.model.image_tower(scorer.pixels(paths)).float(), dim=-1)

    return lambda paths: chunked_features(paths, clip, desc=f"{spec.label} images")


def _clip_bundle(spec: EncoderSpec) -> Any:
    from eval.run import _build_model, run_checkpoints
    from models.config import ModelConfig

    if spec.kind == "clip":
        return _build_model(ModelConfig(name=spec.name, pretrained=spec.pretrained))
    from train.checkpoints import load_weights
    from train.config import load_recipe

    run = Path(spec.name)
    cfg = load_recipe(run / "config.yaml")
    checkpoints = run_checkpoints(run)
    chosen = next((c for c in checkpoints if c.name == spec.checkpoint), None) if spec.checkpoint else checkpoints[-1]
    if chosen is None:
        raise ValueError(f"{spec.label}: no checkpoint {spec.checkpoint!r}; {run} has {[c.name for c in checkpoints]}")
    bundle = _build_model(cfg.model)
    if chosen.path is not None:
        load_weights(chosen.path, bundle.model)
    return bundle


def _rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


# ---- image sets -------------------------------------------------------------------------------------------------


def benchmark_images(data_root: Path, benchmarks: Sequence[str], label_fixes: str = "paper") -> ImageSet:
    """The images, captions and own pairs of the benchmarks (What'sUp axis pairs, MMVP-VLM question pairs; COCO- and
    GQA-spatial add images and captions, no pairs)."""
    images: dict[str, None] = {}
    captions: dict[str, str] = {}
    pairs: list[ImagePair] = []
    for name in benchmarks:
        if name in ("whatsup_a", "whatsup_b"):
            subset = whatsup.SUBSETS["A" if name == "whatsup_a" else "B"]
            rows, _ = whatsup.load_rows(data_root, subset)
            groups = whatsup.group_rows(rows, subset)
            rows, _ = whatsup.apply_label_fixes(rows, subset.name[-1].upper(), label_fixes)
            for row in rows:
                images[str(row.image)] = None
                captions.setdefault(str(row.image), row.options[0])
            for group in groups.values():
                for axis, first, second in subset.axes:
                    pairs.append(
                        ImagePair(f"{name}/{axis}", str(rows[group[first]].image), str(rows[group[second]].image))
                    )
        elif name == "mmvp_vlm":
            rows, _ = mmvp_vlm.load_rows(data_root)
            paths, _ = mmvp_vlm.image_paths(data_root, rows)
            for row, path in zip(rows, paths, strict=True):
                images[str(path)] = None
                captions.setdefault(str(path), row["Statement"].strip())
            pairs += [ImagePair(name, str(paths[i]), str(paths[i + 1])) for i in range(0, len(paths) - 1, 2)]
        elif name.startswith(("coco_spatial", "gqa_spatial")):
            source, _, objects = name.partition("_spatial_")
            rows, paths, _ = spatial_qa.load_rows(data_root, source, objects)
            for row, path in zip(rows, paths, strict=True):
                images[str(path)] = None
                captions.setdefault(str(path), row[1])
        else:
            raise ValueError(f"unknown benchmark {name!r} for eval.agreement; known: {', '.join(PAIR_BENCHMARKS)}, "
                             "coco_spatial_one/two, gqa_spatial_one/two")  # fmt: skip
    whatsup.require_images([Path(p) for p in images], "benchmark images")
    return ImageSet(list(images), captions, pairs)


def folder_images(folder: Path, pairs_file: Path | None = None) -> ImageSet:
    """Every image under `folder` (sorted), with the caption of a `<stem>.txt` beside it where there is one; the pairs
    of `pairs_file` (a CSV with columns first, second: image paths under `folder`), else every pair, as "all"."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    captions = {str(p): p.with_suffix(".txt").read_text().strip() for p in paths if p.with_suffix(".txt").is_file()}
    images = [str(p) for p in paths]
    if pairs_file is None:
        pairs = [ImagePair("all", a, b) for i, a in enumerate(images) for b in images[i + 1 :]]
        return ImageSet(images, captions, pairs)
    known, pairs, problems = set(images), [], []
    with open(pairs_file, newline="") as f:
        reader = csv.DictReader(f)
        if not {"first", "second"} <= set(reader.fieldnames or []):
            raise ValueError(f"{pairs_file}: expected columns first, second; found {reader.fieldnames}")
        for row in reader:
            first, second = (str(folder / row[k].strip()) for k in ("first", "second"))
            missing = [p for p in (first, second) if p not in known]
            if missing:
                problems.append(f"{pairs_file} line {reader.line_num}: no image {missing[0]}")
            else:
                pairs.append(ImagePair(pairs_file.stem, first, second))
    if problems:
        raise ValueError("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return ImageSet(images, captions, pairs)


# ---- cosines and mining -----------------------------------------------------------------------------------------


def pair_cosines(features: dict[str, torch.Tensor], index: dict[str, int], pairs: Sequence[ImagePair]) -> dict:
    """encoder -> one cosine per pair."""
    first = torch.tensor([index[p.first] for p in pairs], dtype=torch.long)
    second = torch.tensor([index[p.second] for p in pairs], dtype=torch.long)
    return {label: (f[first] * f[second]).sum(-1).tolist() for label, f in features.items()}


def mine_pairs(
    blind: torch.Tensor, seeing: torch.Tensor, high: float, low: float, max_pairs: int
) -> list[tuple[int, int, float, float]]:
    """Disjoint pairs (i, j, cos under `blind`, cos under `seeing`) with the first >= high and the second <= low,
    taken greedily by the gap between the two (largest first), at most `max_pairs` (0: no cap)."""
    blind_cos, seeing_cos = blind @ blind.T, seeing @ seeing.T
    upper = torch.triu(torch.ones_like(blind_cos, dtype=torch.bool), diagonal=1)
    chosen = upper & (blind_cos >= high) & (seeing_cos <= low)
    i, j = torch.nonzero(chosen, as_tuple=True)
    gap = blind_cos[i, j] - seeing_cos[i, j]
    used: set[int] = set()
    mined = []
    for k in torch.argsort(gap, descending=True, stable=True).tolist():
        a, b = int(i[k]), int(j[k])
        if a in used or b in used:
            continue
        used.update((a, b))
        mined.append((a, b, float(blind_cos[a, b]), float(seeing_cos[a, b])))
        if max_pairs and len(mined) == max_pairs:
            break
    return mined


def write_mmvp_layout(out: Path, mined: Sequence[tuple[str, str]], captions: dict[str, str]) -> Path:
    """Mined (first, second) image pairs as MMVP-VLM: Questions.csv (pairs of rows, odd then even Question ID) and
    MMVP_VLM_Images/<Type>/<id>.jpg. Returns the data root to give eval.run."""
    root = out / "MMVP_VLM"
    if root.exists():
        shutil.rmtree(root)
    images = root / "MMVP_VLM_Images" / MINED_TYPE
    images.mkdir(parents=True)
    rows = []
    for n, pair in enumerate(mined):
        for k, path in enumerate(pair):
            qid = 2 * n + k + 1
            target = images / f"{qid}.jpg"
            if Path(path).suffix.lower() in (".jpg", ".jpeg"):
                shutil.copyfile(path, target)  # the same bytes: the same pixels
            else:
                _rgb(path).save(target, quality=95)
            rows.append({"Question ID": qid, "Type": MINED_TYPE, "Statement": captions[path]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=mmvp_vlm.COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (root / "Questions.csv").write_text(text.getvalue())
    return out


# ---- the command --------------------------------------------------------------------------------------------------


def run_agreement(
    image_set: ImageSet,
    encoders: Sequence[EncoderSpec],
    out: Path,
    *,
    mine: Sequence[str] = (),
    high: float = 0.95,
    low: float = 0.6,
    max_pairs: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    device = torch.device(device)
    features = {spec.label: load_encoder(spec, device)(image_set.images) for spec in encoders}
    index = {p: i for i, p in enumerate(image_set.images)}
    cosines = pair_cosines(features, index, image_set.pairs)
    sets = sorted({p.set for p in image_set.pairs})
    table = {
        name: {label: _mean([c for p, c in zip(image_set.pairs, values, strict=True) if p.set == name])
               for label, values in cosines.items()}
        for name in sets
    }  # fmt: skip
    summary: dict[str, Any] = {"encoders": [s.label for s in encoders], "images": len(image_set.images),
                               "pairs": {name: sum(p.set == name for p in image_set.pairs) for name in sets},
                               "mean_pair_cosine": table}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["set", "first", "second", *(s.label for s in encoders)])
        for n, pair in enumerate(image_set.pairs):
            writer.writerow([pair.set, pair.first, pair.second, *(f"{cosines[s.label][n]:.6f}" for s in encoders)])
    if mine:
        blind, seeing = mine
        for label in mine:
            if label not in features:
                raise ValueError(f"--mine {label!r} is not one of --encoders ({', '.join(features)})")
        found = mine_pairs(features[blind], features[seeing], high, low, max_pairs)
        mined = [(image_set.images[a], image_set.images[b]) for a, b, _, _ in found]
        folder = out / "mined"
        folder.mkdir(exist_ok=True)
        with open(folder / "pairs.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["first", "second", f"cosine {blind}", f"cosine {seeing}"])
            for (first, second), (_, _, a, b) in zip(mined, found, strict=True):
                writer.writerow([first, second, f"{a:.6f}", f"{b:.6f}"])
        uncaptioned = [p for pair in mined for p in pair if p not in image_set.captions]
        summary["mined"] = {"blind": blind, "seeing": seeing, "high": high, "low": low, "pairs": len(mined),
                            "candidates": len(image_set.images) * (len(image_set.images) - 1) // 2}  # fmt: skip
        if mined and not uncaptioned:
            write_mmvp_layout(folder, mined, image_set.captions)
            summary["mined"]["benchmark"] = str(folder / "MMVP_VLM")
        elif uncaptioned:
            summary["mined"]["benchmark"] = None
            summary["mined"]["why_no_benchmark"] = (
                f"{len(uncaptioned)} mined images have no caption (e.g. {uncaptioned[0]}): put a <stem>.txt beside each"
            )
    (out / "agreement.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "agreement.md").write_text(markdown(summary))
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def markdown(summary: dict[str, Any]) -> str:
    encoders = summary["encoders"]
    lines = ["# Image-pair agreement", "", f"{summary['images']} images. Mean cosine similarity of the two images of "
             "each pair (Table 1's column), per encoder: near 1 = the encoder barely tells the pair apart.", "",
             "| pairs | n | " + " | ".join(encoders) + " |", "|---" * (len(encoders) + 2) + "|"]  # fmt: skip
    for name, values in summary["mean_pair_cosine"].items():
        shown = " | ".join("–" if values[e] is None else f"{values[e]:.3f}" for e in encoders)
        lines.append(f"| {name} | {summary['pairs'][name]} | {shown} |")
    if "mined" in summary:
        m = summary["mined"]
        lines += ["", "## Mined pairs", "", f"{m['pairs']} disjoint pairs of {m['candidates']:,} candidates with cosine "
                  f">= {m['high']} under {m['blind']} and <= {m['low']} under {m['seeing']} (mined/pairs.csv)."]  # fmt: skip
        if m.get("benchmark"):
            lines.append(f"Written in MMVP-VLM's layout: `python -m eval.run --data-root {Path(m['benchmark']).parent} "
                         "--benchmarks mmvp_vlm` scores it.")  # fmt: skip
        elif m.get("why_no_benchmark"):
            lines.append(f"Not written as a benchmark: {m['why_no_benchmark']}.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", required=True)
    parser.add_argument("--data-root", type=Path, help="benchmark root (with --benchmarks)")
    parser.add_argument("--benchmarks", nargs="+", default=list(PAIR_BENCHMARKS))
    parser.add_argument("--folder", type=Path, help="any folder of images, instead of the benchmarks")
    parser.add_argument("--pairs", type=Path, help="with --folder: a CSV of pairs (columns first, second; paths under "
                        "the folder); default every pair")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mine", nargs=2, metavar=("BLIND", "SEEING"), help="two of --encoders")
    parser.add_argument("--high", type=float, default=0.95)
    parser.add_argument("--low", type=float, default=0.6)
    parser.add_argument("--max-pairs", type=int, default=0)
    args = parser.parse_args(argv)
    if bool(args.folder) == bool(args.data_root):
        parser.error("give --data-root (the benchmarks' images) or --folder, one of them")
    try:
        encoders = [parse_encoder(e) for e in args.encoders]
        image_set = (
            folder_images(args.folder, args.pairs) if args.folder else benchmark_images(args.data_root, args.benchmarks)
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        summary = run_agreement(image_set, encoders, args.out, mine=args.mine or (), high=args.high, low=args.low,
                                max_pairs=args.max_pairs, device=device)  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"eval.agreement: {err}", file=sys.stderr)
        return 2
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
