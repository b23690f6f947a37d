"""generate(): the whole toy world, file by file, into one output folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.toyworld.defects import DefectLog, inject_lcs_defects, inject_mix_defects
from data_prep.toyworld.llava import (
    LCS_FILE,
    LCS_IMAGE_ROOT,
    MIX_FILE,
    MIX_IMAGE_ROOT,
    LlavaBuilder,
    build_lcs,
    build_mix_image_items,
    build_mix_text_items,
    mix_repeats,
    write_llava_file,
)
from data_prep.toyworld.manifest import GENERATOR, build_manifest
from data_prep.toyworld.mmvp import MMVP_TYPES, write_mmvp, write_mmvp_mllm
from data_prep.toyworld.output import MANIFEST_FILE, SCENES_FILE, WorldWriter
from data_prep.toyworld.scales import SCALES, Scale
from data_prep.toyworld.spatial_qa import write_coco_spatial, write_gqa_spatial
from data_prep.toyworld.whatsup import write_subset

OWNED = ("llava", "bench", SCENES_FILE, MANIFEST_FILE)
DIRTY_EXTRA_IMAGES = 13  # images rendered for the --dirty extra items (3 LCS, 10 DataMix)


def expected_images(scale: Scale, dirty: bool) -> int:
    return (
        scale.lcs_items
        + scale.mix_image_items
        - mix_repeats(scale.mix_image_items)
        + 4 * (scale.whatsup_a_pairs + scale.whatsup_b_pairs)
        + scale.coco_one
        + scale.coco_two
        + scale.gqa_one
        + scale.gqa_two
        + 2 * 2 * len(MMVP_TYPES) * scale.mmvp_pairs_per_type  # MMVP-VLM and MMVP
        + (DIRTY_EXTRA_IMAGES if dirty else 0)
    )


def prepare_output(out: Path) -> None:
    """Clear a previous toy world in `out`; refuse to touch a non-empty folder that is not one."""
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    manifest = out / MANIFEST_FILE
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("generator")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != GENERATOR:
        raise FileExistsError(f"{out} is not empty and holds no toy world: refusing to overwrite it")
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate(out: Path, seed: int = 0, scale: str = "small", dirty: bool = False, progress: bool = False) -> dict:
    """Write the toy world into `out` and return its manifest (also written to out/manifest.json)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
    out = Path(out)
    prepare_output(out)
    sizes = SCALES[scale]
    bar = tqdm(total=expected_images(sizes, dirty), unit="img", desc="toyworld") if progress else None
    writer = WorldWriter(out, bar)
    defects = DefectLog()

    builder = LlavaBuilder(writer, seed, sizes)
    lcs = build_lcs(builder)
    if dirty:
        inject_lcs_defects(builder, lcs, defects)
    write_llava_file(writer, LCS_FILE, LCS_IMAGE_ROOT, lcs)

    mix = build_mix_image_items(builder)
    if dirty:
        inject_mix_defects(builder, mix, defects)
    mix += build_mix_text_items(builder)  # text-only items come last, as in the real file
    write_llava_file(writer, MIX_FILE, MIX_IMAGE_ROOT, mix)

    label_errors = write_subset(writer, seed, sizes, "A") + write_subset(writer, seed, sizes, "B")
    write_coco_spatial(writer, seed, sizes)
    write_gqa_spatial(writer, seed, sizes)
    write_mmvp(writer, seed, sizes)
    write_mmvp_mllm(writer, seed, sizes)
    writer.write_scenes()
    if bar is not None:
        bar.close()

    manifest = build_manifest(
        writer,
        seed,
        scale,
        dirty,
        {"lcs558k": (LCS_FILE, lcs), "mix665k": (MIX_FILE, mix)},
        label_errors,
        defects.entries,
    )
    writer.write_manifest(manifest)
    return manifest


def summary(manifest: dict[str, Any], out: Path) -> str:
    """A short human-readable account of a manifest."""
    lines = [
        f"{manifest['generator']} {manifest['version']}: seed {manifest['seed']}, scale {manifest['scale']}, "
        f"dirty {manifest['dirty']}, {manifest['images_total']} images"
    ]
    for rel, stats in manifest["files"].items():
        counts = ", ".join(f"{key} {value}" for key, value in stats.items() if isinstance(value, int))
        relations = manifest["relations"].get(rel)
        lines.append(f"  {rel}: {counts}")
        if relations:
            lines.append("      " + ", ".join(f"{name} {n}" for name, n in relations.items()))
    for name, stats in manifest["key_phrases"].items():
        if name != "phrases":
            lines.append(
                f"  key phrases in {name}: {stats['instances']} instances "
                f"({stats['instances_with_image']} with image), {stats['answers']} answers"
            )
    lines.append(f"  'left' as a verb: {manifest['left_as_verb_answers']} answers")
    lines.append(f"  known label errors: {len(manifest['known_label_errors'])}")
    defects = {kind: n for kind, n in manifest["defect_counts"].items() if n}
    lines.append("  defects: " + (", ".join(f"{kind} {n}" for kind, n in defects.items()) if defects else "none"))
    lines.append(f"written to {out.resolve()}")
    return "\n".join(lines)
