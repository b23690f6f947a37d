"""Two processes (a real gloo group) give bit-for-bit the results of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from eval.benchmarks import BENCHMARKS
from eval.scoring import chunked_features

pytestmark = pytest.mark.system  # the system tier (make test-all, CI): multi-process eval equality

CHUNK = 5  # small, so every benchmark has several chunks and both ranks encode some


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data_root: Path, out: Path) -> list[str]:
    args = ["--model", "tiny-clip", "--data-root", str(data_root), "--out", str(out)]
    return args + ["--chunk-size", str(CHUNK), "--cpu-threads", "1"]


def _worker(rank: int, world: int, port: int, data_root: str, out: str) -> None:
    """One rank as a launcher starts it: the process group comes from the environment."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from eval import run, scoring

    encoded = []
    encode = scoring.ModelScorer._encode_images

    def counted(self: scoring.ModelScorer, paths: list[str]) -> torch.Tensor:
        encoded.append(len(paths))
        return encode(self, paths)

    scoring.ModelScorer._encode_images = counted
    assert run.main(_args(Path(data_root), Path(out))) == 0
    Path(out, f"rank{rank}.images").write_text(str(sum(encoded)))


def _failing_worker(rank: int, world: int, port: int, data_root: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from eval import run

    Path(out, f"rank{rank}.rc").write_text(str(run.main(_args(Path(data_root), Path(out)))))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.scores.jsonl"))}


def _metrics(folder: Path) -> dict[str, object]:
    return {p.name: json.loads(p.read_text())["metrics"] for p in sorted(folder.glob("*.json"))}


def test_chunks_are_gathered_in_order_without_a_group() -> None:
    items = list(range(13))
    features = chunked_features(items, lambda chunk: torch.tensor([[float(i)] for i in chunk]), chunk_size=4)
    assert features.squeeze(1).tolist() == [float(i) for i in items]


def test_two_gloo_processes_equal_one_process_bitwise(world: Path, tmp_path: Path) -> None:
    """eval.run on tiny-clip: 2 ranks (gloo, set up from the launcher's environment variables) vs 1 process."""
    from eval import run

    threads = torch.get_num_threads()
    try:
        assert run.main(_args(world / "bench", tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "two").mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(world / "bench"), str(tmp_path / "two")), nprocs=2, join=True)
    # Both ranks encoded images (chunks are dealt round-robin), and rank 0 alone wrote.
    assert int((tmp_path / "two" / "rank0.images").read_text()) > 0
    assert int((tmp_path / "two" / "rank1.images").read_text()) > 0
    assert _files(tmp_path / "one").keys() == {f"{name}.scores.jsonl" for name in BENCHMARKS}
    assert _files(tmp_path / "one") == _files(tmp_path / "two")  # every score, byte for byte
    assert _metrics(tmp_path / "one") == _metrics(tmp_path / "two")
    record = json.loads((tmp_path / "two" / "whatsup_a.json").read_text())
    assert (record["processes"], record["chunk_size"], record["cpu_threads"]) == (2, CHUNK, 1)


def test_accelerate_launch_two_processes_tiny_clip(world: Path, tmp_path: Path) -> None:
    """The real path: `accelerate launch --multi_gpu --num_processes 2 -m eval.run` on CPU (gloo), tiny-clip."""
    common = ["--model", "tiny-clip", "--data-root", str(world / "bench"), "--chunk-size", str(CHUNK)]
    common += ["--benchmarks", "whatsup_a", "mmvp_vlm"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    config = Path(__file__).resolve().parents[1] / "launch" / "accelerate" / "cpu_2proc.yaml"
    launcher = [str(Path(sys.prefix, "bin", "accelerate")), "launch", "--config_file", str(config)]
    subprocess.run([*launcher, "-m", "eval.run", *common, "--out", str(tmp_path / "two")], check=True, env=env)
    subprocess.run([sys.executable, "-m", "eval.run", *common, "--out", str(tmp_path / "one")], check=True, env=env)
    assert len(_files(tmp_path / "one")) == 2
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert _metrics(tmp_path / "one") == _metrics(tmp_path / "two")


def test_an_error_found_on_rank_0_stops_every_rank(tmp_path: Path) -> None:
    """Rank 0 alone checks what results were computed from; its error must reach rank 1, not leave it waiting."""
    out = tmp_path / "out"
    out.mkdir()
    context = mp.spawn(
        _failing_worker, args=(2, _free_port(), str(tmp_path / "nowhere"), str(out)), nprocs=2, join=False
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a rank hung after rank 0 failed")
    assert [(out / f"rank{r}.rc").read_text() for r in (0, 1)] == ["2", "2"]
    assert not list(out.glob("*.json"))
