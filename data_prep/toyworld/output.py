"""Everything that touches the output folder: images, JSON/CSV files, scenes.jsonl and file statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from data_prep.toyworld.scenes import Scene

JPEG_QUALITY = 92
SCENES_FILE = "scenes.jsonl"
MANIFEST_FILE = "manifest.json"


class WorldWriter:
    """Writes files under `root` and remembers what was written (for scenes.jsonl and the manifest)."""

    def __init__(self, root: Path, progress: tqdm | None = None) -> None:
        self.root = root
        self.progress = progress
        self.scene_records: dict[str, dict[str, Any]] = {}  # insertion order = write order
        self.files: dict[str, dict[str, Any]] = {}  # data file -> statistics
        self.relations: dict[str, dict[str, int]] = {}  # data file -> relation -> count

    def path(self, rel: str) -> Path:
        return self.root / rel

    def save_image(self, rel: str, scene: Scene) -> Image.Image:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = scene.image()
        image.save(path, format="JPEG", quality=JPEG_QUALITY)
        self.scene_records[rel] = scene.record(rel)
        if self.progress is not None:
            self.progress.update()
        return image

    def mark_defect(self, rel: str, kind: str) -> None:
        self.scene_records[rel]["defect"] = kind

    def forget_image(self, rel: str) -> None:
        """Delete a written image (a 'missing file' defect): no file, no scene record."""
        self.path(rel).unlink()
        del self.scene_records[rel]

    def scene_relation(self, rel: str) -> str | None:
        record = self.scene_records.get(rel)
        return None if record is None else record["relation"]

    def write_json(self, rel: str, data: Any, stats: dict[str, Any], relations: dict[str, int]) -> None:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        # json's default \u escapes keep every file ASCII: non-ASCII text survives parsing, and readers
        # that open files with the locale's encoding still work.
        path.write_text(json.dumps(data), encoding="utf-8")
        self._register(rel, stats, relations)

    def write_csv(
        self, rel: str, header: list[str], rows: list[list[Any]], stats: dict[str, Any], relations: dict[str, int]
    ) -> None:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        self._register(rel, stats, relations)

    def write_scenes(self) -> None:
        lines = [json.dumps(record) for record in self.scene_records.values()]
        self.path(SCENES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.files[SCENES_FILE] = {"format": "toyworld-scenes", "rows": len(lines)}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2) + "\n"
        self.path(MANIFEST_FILE).write_text(text, encoding="utf-8")

    def _register(self, rel: str, stats: dict[str, Any], relations: dict[str, int]) -> None:
        self.files[rel] = stats
        self.relations[rel] = dict(sorted(relations.items()))
