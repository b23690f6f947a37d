"""Every metric recomputed from `<benchmark>.scores.jsonl` alone, by independent code, gives the same numbers."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from eval_doubles import FakeBundle

from eval.benchmarks import BENCHMARKS, run_benchmark
from eval.report import read_scores, write_result
from eval.scoring import ModelScorer

AXES = {
    "whatsup_a": {"left_right": ("left_of", "right_of"), "on_under": ("on", "under")},
    "whatsup_b": {"left_right": ("left_of", "right_of"), "front_behind": ("in-front_of", "behind")},
}


def recompute_whatsup(lines: list[dict], axes: dict[str, tuple[str, str]]) -> dict[str, float]:
    """The official four-way code (groups keyed by file-name objects) plus the paper's two-way and relaxed pairs."""
    n = len(lines)
    correct = {}
    groups: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for line in lines:
        name = line["id"]
        key = (name.split("_")[0], name.split("_")[-1])
        relation = "_".join(name.split("_")[1:-1])
        correct[name] = int(np.argmax(line["scores"])) == 0
        groups[key][relation] = line
    out = {"indiv": 100 * sum(correct.values()) / n}
    pairs = sum(correct[g[a]["id"]] and correct[g[b]["id"]] for g in groups.values() for a, b in axes.values())
    out["pairs"] = 100 * pairs / (n / 2)
    out["set_of_4"] = 100 * sum(all(correct[e["id"]] for e in g.values()) for g in groups.values()) / (n / 4)
    for axis, (first, second) in axes.items():
        two_way = {}
        for g in groups.values():
            for relation, other in ((first, second), (second, first)):
                line = g[relation]
                scores = [line["scores"][0], line["scores"][line["option_relations"].index(other)]]
                two_way[line["id"]] = int(np.argmax(scores)) == 0
        out[f"{axis}/indiv"] = 100 * sum(two_way.values()) / (n / 2)
        out[f"{axis}/pairs"] = (
            100 * sum(two_way[g[first]["id"]] and two_way[g[second]["id"]] for g in groups.values()) / (n / 4)
        )

        def margin(line: dict, first: str = first, second: str = second) -> float:
            rel = line["option_relations"]
            return line["scores"][rel.index(first)] - line["scores"][rel.index(second)]

        relaxed = [margin(g[first]) > margin(g[second]) for g in groups.values()]
        out[f"{axis}/relaxed_pairs"] = 100 * sum(relaxed) / len(relaxed)
        cosines = [g[first]["pair"]["image_cosine"] for g in groups.values()]
        assert cosines == [g[second]["pair"]["image_cosine"] for g in groups.values()]
        out[f"{axis}/image_pair_cosine"] = sum(cosines) / len(cosines)
    return out


def recompute_two_way(lines: list[dict]) -> dict[str, float]:
    return {"indiv": 100 * sum(int(np.argmax(line["scores"])) == 0 for line in lines) / len(lines)}


def recompute_mmvp(lines: list[dict]) -> dict[str, float]:
    by_type: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for line in lines:
        (s11, s12), (s21, s22) = line["scores"]
        # The official script: each text picks image 1 iff it scores strictly higher, so a tie picks image 2.
        by_type[line["type"]].append((s11 > s21 and not s12 > s22, s11 - s12 > s21 - s22))
    out = {}
    for index, name in ((0, "pairs"), (1, "relaxed_pairs")):
        per_type = {t: 100 * sum(r[index] for r in rs) / len(rs) for t, rs in by_type.items()}
        out |= {f"{name}/{t.lower().replace(' ', '_')}": v for t, v in per_type.items()}
        out[f"{name}/mean"] = sum(per_type.values()) / len(per_type)
    out["image_pair_cosine"] = sum(line["image_cosine"] for line in lines) / len(lines)
    return out


@pytest.mark.parametrize("label_fixes", ["paper", "none"])
def test_metrics_recomputed_from_scores_files(world: Path, tmp_path: Path, label_fixes: str) -> None:
    scorer = ModelScorer(FakeBundle(), chunk_size=16)  # a real (tiny, random) encoder over the real images
    for name in BENCHMARKS:
        result = run_benchmark(name, scorer, world / "bench", label_fixes=label_fixes)
        record = json.loads(write_result(result, tmp_path).read_text())
        lines = read_scores(tmp_path, name)
        assert len(lines) == (record["counts"]["pairs"] if name.startswith("mmvp") else record["counts"]["rows"])
        if name.startswith("whatsup"):
            recomputed = recompute_whatsup(lines, AXES[name])
        elif name.startswith("mmvp"):  # mmvp_vlm, mmvp_clip
            recomputed = recompute_mmvp(lines)
        else:
            recomputed = recompute_two_way(lines)
        assert recomputed.keys() == record["metrics"].keys(), name
        for metric, value in record["metrics"].items():
            if metric.endswith("cosine"):  # a mean of stored floats: summation order may differ in the last bit
                assert recomputed[metric] == pytest.approx(value, rel=1e-12, abs=1e-12), (name, metric)
            else:
                assert recomputed[metric] == value, (name, metric)
        assert record["chance"].keys() == record["metrics"].keys()
        assert record["label_fixes"]["mode"] == label_fixes
        assert record["tie_rule"] and record["files"][0]["sha256"] and record["scores_sha256"]
        for line in lines:  # each line carries its own evidence
            assert {"id", "scores", "correct"} <= line.keys()
            assert ("image" in line or "images" in line) and ("options" in line or "texts" in line)
    accuracies = [v for k, v in record["metrics"].items() if not k.endswith("cosine")]
    assert len(set(accuracies)) > 1, "a random encoder should not score the same everywhere"
