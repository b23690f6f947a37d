"""Damaged shards stop training before it starts, with one error naming every damaged shard and what is wrong.

Every test damages a real copy of the world's shards the way disks and copies do: zeros written into a shard,
a zeroed tar header, a truncated file, a deleted shard, bytes changed in place, a member that no longer decodes.
"""

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from torch.utils.data import DataLoader
from torchvision import transforms

from data_prep import build_shards, inspect_shards
from train.data import ShardError, ShardIntegrityError, ShardReadError, ShardSamples, index_shards

ROOT = Path(__file__).resolve().parents[1]
DAMAGED = "llava-000002.tar"


@pytest.fixture
def shards(world_shards, tmp_path) -> Path:
    """A private copy of the world's shard folder, to damage."""
    return Path(shutil.copytree(world_shards, tmp_path / "shards"))


def members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return tar.getmembers()


def middle_member(tar_path: Path) -> tarfile.TarInfo:
    infos = members(tar_path)
    return next(m for m in infos[len(infos) // 2 :] if m.name.endswith(".jpg"))


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def sizes(folder: Path) -> dict[str, int]:
    return json.loads((folder / "sizes.json").read_text())


def damage_of(folder: Path, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(ShardIntegrityError) as caught:
        index_shards([folder], **kwargs)
    err = caught.value
    assert isinstance(err, ShardError) and isinstance(err, ValueError)  # what finetune's CLI catches
    for path, problems in err.damage.items():
        assert path in str(err) and all(p in str(err) for p in problems[:6])
    return err.damage


def verify_cli(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep.inspect_shards", str(folder), "--verify"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
    )


def test_intact_shards_pass_every_check_and_verify_says_so(shards):
    index = index_shards([shards], verify_sha256=True)
    assert len(index) == sum(sizes(shards).values())
    manifest = json.loads((shards / "manifest.json").read_text())
    per_shard = manifest["shards"]["per_shard"]
    assert list(per_shard) == list(sizes(shards))
    for name, record in per_shard.items():
        data = (shards / name).read_bytes()
        assert record == {
            "samples": sizes(shards)[name],
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    result = verify_cli(shards)
    assert result.returncode == 0, result.stderr
    assert f"verified {len(per_shard)} shards, {len(index)} samples" in result.stdout


def test_four_kb_of_zeros_in_the_middle_of_a_shard_stops_indexing_naming_shard_and_offset(shards):
    header = middle_member(shards / DAMAGED).offset
    overwrite(shards / DAMAGED, header - 1024, bytes(4096))  # covers the end of one member and the next header
    damage = damage_of(shards)
    assert list(damage) == [str(shards / DAMAGED)]  # the other shards are fine and not named
    problems = damage[str(shards / DAMAGED)]
    assert problems[0].startswith(f"sizes.json says {sizes(shards)[DAMAGED]} samples, found ")
    # The header before the zeros is intact: tarfile stopped at the block-aligned end of the member before.
    assert any(f"zeroed tar header at byte {header - 1024}" in p or f"at byte {header}" in p for p in problems)
    result = verify_cli(shards)
    assert result.returncode == 1
    assert DAMAGED in result.stderr and "zeroed tar header" in result.stderr and "verified" not in result.stdout


def test_a_zeroed_tar_header_is_an_error_not_a_smaller_epoch(shards):
    header = middle_member(shards / DAMAGED).offset
    overwrite(shards / DAMAGED, header, bytes(512))
    problems = damage_of(shards)[str(shards / DAMAGED)]
    assert f"zeroed tar header at byte {header}" in " ".join(problems)
    assert "sizes.json says" in problems[0]


@pytest.mark.parametrize(
    ("at", "data", "reason"),
    [(0, b"garbage!" * 64, "invalid header"), (0, b"X", "bad checksum")],  # the whole block / one name byte
    ids=["garbage", "one-byte"],
)
def test_a_damaged_header_is_reported_with_tarfiles_reason(shards, at, data, reason):
    header = middle_member(shards / DAMAGED).offset
    overwrite(shards / DAMAGED, header + at, data)
    problems = " ".join(damage_of(shards)[str(shards / DAMAGED)])
    assert f"unreadable tar header at byte {header} ({reason})" in problems


def test_a_truncated_shard_is_named_with_where_it_ends(shards):
    path = shards / DAMAGED
    size = path.stat().st_size
    os.truncate(path, size // 2 + 100)  # mid-member
    problems = " ".join(damage_of(shards)[str(path)])
    assert "truncated" in problems and f"manifest.json records {size}" in problems
    assert f"the file ends at byte {size // 2 + 100}" in problems


def test_a_shard_cut_at_a_member_boundary_is_truncated_too(shards):
    path = shards / DAMAGED
    os.truncate(path, middle_member(path).offset)  # every remaining member complete: only the end marker says so
    (shards / "manifest.json").unlink()  # no recorded size to compare with either
    problems = " ".join(damage_of(shards)[str(path)])
    assert "without the end-of-archive blocks" in problems and "sizes.json says" in problems


def test_a_deleted_shard_and_a_stray_one_are_both_named(shards, tmp_path):
    (shards / DAMAGED).unlink()
    shutil.copy(shards / "llava-000000.tar", shards / "extra.tar")
    damage = damage_of(shards)
    assert damage[str(shards / DAMAGED)] == [f"missing (sizes.json lists it with {sizes(shards)[DAMAGED]} samples)"]
    assert "not listed in sizes.json" in damage[str(shards / "extra.tar")][0]
    assert len(damage) == 2


def test_without_sizes_json_damage_is_still_an_error_but_intact_shards_index(shards):
    """A folder from another tool: no counts to compare, but a tar read error anywhere is still an error."""
    (shards / "sizes.json").unlink()
    (shards / "manifest.json").unlink()
    with pytest.raises(ShardIntegrityError, match="no sizes.json"):  # a deleted shard would go unnoticed
        index_shards([shards])
    intact = index_shards([shards], unrecorded="index")
    assert len(intact) == sum(len(m) for m in (members(t) for t in shards.glob("*.tar"))) // 3  # jpg, json, txt
    header = middle_member(shards / DAMAGED).offset
    overwrite(shards / DAMAGED, header, bytes(512))
    damage = damage_of(shards, unrecorded="index")
    assert list(damage) == [str(shards / DAMAGED)]
    assert damage[str(shards / DAMAGED)] == [
        f"zeroed tar header at byte {header} (512 zero bytes where a header was expected, then data): "
        f"reading stopped there, {(shards / DAMAGED).stat().st_size - header} bytes not indexed"
    ]


def test_bytes_changed_in_place_are_found_by_sha256_on_demand(shards, capsys):
    path = shards / DAMAGED
    txt = next(m for m in members(path) if m.name.endswith(".txt"))
    original = path.read_bytes()[txt.offset_data : txt.offset_data + txt.size]
    overwrite(path, txt.offset_data, original.swapcase())  # same size, same structure, still valid text
    assert len(index_shards([shards])) == sum(sizes(shards).values())  # the default check reads headers only
    problems = damage_of(shards, verify_sha256=True)[str(path)]
    assert len(problems) == 1 and problems[0].startswith("sha256 ") and "differs from manifest.json's" in problems[0]
    assert inspect_shards.main([str(shards), "--verify", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert f"{DAMAGED}: sha256 " in err and "1 damaged file(s) among 6 shards" in err


def test_verify_workers_leave_under_a_flag_only_sigterm_handler(shards, monkeypatch):
    """A caller whose SIGTERM handler only sets a flag (a trainer run in-process) once left --verify's fork pool
    hanging in terminate(): its workers inherited the handler. They now reset it and leave on close()."""
    import multiprocessing as mp
    import signal

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        for _ in range(3):
            assert inspect_shards.verify(shards, workers=2)["shards"] == 6
            assert mp.active_children() == []
    finally:
        signal.signal(signal.SIGTERM, previous)


def json_member(index, i: int) -> tuple[Path, int, int]:
    offset, size = (int(v) for v in index.meta[i])
    return Path(index.shard_paths[int(index.shard[i])]), offset, size


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda raw: b"\xff" + raw[1:], "'utf-8' codec can't decode byte 0xff in position 0"),
        (lambda raw: b"[" + raw[1:], "Expecting"),
        (lambda raw: json.dumps({"captions": []}).encode().ljust(len(raw)), "field 'captions' is list []"),
    ],
    ids=["not-utf8", "not-json", "no-captions"],
)
def test_a_json_member_that_does_not_decode_names_shard_and_key_even_from_a_worker(shards, corrupt, expected):
    index = index_shards([shards])
    i = len(index) // 2
    path, offset, size = json_member(index, i)
    raw = path.read_bytes()[offset : offset + size]
    overwrite(path, offset, corrupt(raw))
    samples = ShardSamples(index_shards([shards]), transforms.ToTensor(), "first", seed=0)
    with pytest.raises(ShardReadError) as caught:
        samples[i]
    message = str(caught.value)
    assert f"{path}: sample {index.keys[i]!r}: json member (byte {offset}): " in message and expected in message
    # spawn, not fork: forking this pytest process, whose other threads (torch, gloo, tqdm) may hold locks after a
    # long test run, left the worker waiting on a futex forever in a full-suite run.
    loader = DataLoader(samples, batch_sampler=[[i]], num_workers=1, collate_fn=list, multiprocessing_context="spawn")
    with pytest.raises(ShardReadError, match=index.keys[i]):  # re-raised in the main process with its type
        next(iter(loader))
    result = verify_cli(shards)
    assert result.returncode == 1 and f"sample {index.keys[i]!r}: json member" in result.stderr


def test_an_image_member_that_does_not_decode_names_shard_and_key(shards):
    index = index_shards([shards])
    i = 3
    offset, size = (int(v) for v in index.jpg[i])
    path = Path(index.shard_paths[int(index.shard[i])])
    overwrite(path, offset, b"x" * size)
    with pytest.raises(ShardReadError) as caught:
        ShardSamples(index, transforms.ToTensor(), "first", seed=0)[i]
    assert f"{path}: sample {index.keys[i]!r}: jpg member (byte {offset}, {size} bytes): does not decode" in str(
        caught.value
    )


def test_a_shard_truncated_after_indexing_gives_a_named_short_read(shards):
    index = index_shards([shards])
    last = max(range(len(index)), key=lambda i: (int(index.shard[i]), int(index.jpg[i][0])))
    path = Path(index.shard_paths[int(index.shard[last])])
    os.truncate(path, int(index.jpg[last][0]) + 10)
    with pytest.raises(ShardReadError, match=r"jpg member: only 10 of \d+ bytes") as caught:
        ShardSamples(index, transforms.ToTensor(), "first", seed=0).pixels(last, seed=0)
    assert str(path) in str(caught.value) and repr(index.keys[last]) in str(caught.value)


def test_the_error_lists_every_damaged_shard_once_and_survives_pickling(shards):
    (shards / "llava-000000.tar").unlink()
    overwrite(shards / DAMAGED, middle_member(shards / DAMAGED).offset, bytes(512))
    err = pytest.raises(ShardIntegrityError, index_shards, [shards]).value
    assert str(err).startswith("2 damaged shard file(s); nothing was trained")
    assert "inspect_shards FOLDER --verify" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ShardIntegrityError and again.damage == err.damage and str(again) == str(err)


def test_a_rerun_of_build_shards_repairs_deleted_and_resized_shards(world, shards, world_shards):
    """What the error advises: delete the damaged shards, rerun with the same arguments."""
    llava = world / "llava"
    args = ["--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json")]
    args += ["--image-root", str(llava / "images")]
    args += ["--dataset", "mix665k", "--json", str(llava / "llava_v1_5_mix665k.json"), "--image-root", str(llava)]
    (shards / "llava-000000.tar").unlink()
    os.truncate(shards / DAMAGED, 5000)  # a kept shard whose size no longer matches its record is rewritten
    assert build_shards.main([*args, "--out", str(shards), "--shard-size", "128"]) == 0
    for tar in world_shards.glob("*.tar"):
        assert (shards / tar.name).read_bytes() == tar.read_bytes()
    assert len(index_shards([shards], verify_sha256=True)) == sum(sizes(shards).values())
