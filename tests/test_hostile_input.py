"""build_shards on hostile and broken input: every bad item is skipped with a counted reason, nothing outside
the image root is read, and an input JSON that does not parse stops the run with one line naming the file."""

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from data_prep import build_shards, inspect_shards
from data_prep.image_bytes import TooManyPixels, UndecodableImage, to_shard_jpeg
from data_prep.llava_items import SKIP_REASONS
from train.data import index_shards

MAX_PIXELS = 1000  # 20x20 images pass, 40x40 do not: the limit is exercised without big files


def jpeg(side: int, colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="JPEG")
    return out.getvalue()


def png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), "green").save(out, format="PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and then holds almost no data: decoding it could only fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def item(item_id: str, image: str | None, caption: str = "A red square on the left.") -> dict:
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]
    return {"id": item_id, "conversations": turns} | ({} if image is None else {"image": image})


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """(json file, image root given as a symlink to the real folder, expected reason or "ok" per item id)."""
    real_root = tmp_path / "data" / "images"
    (real_root / "sub").mkdir(parents=True)
    outside = tmp_path / "data" / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(jpeg(20, "blue"))  # a valid image: only the path check keeps it out
    (real_root / "good.jpg").write_bytes(jpeg(20))
    (real_root / "sub" / "good2.jpg").write_bytes(jpeg(20, "white"))
    (real_root / "inside_link.jpg").symlink_to(real_root / "sub" / "good2.jpg")
    (real_root / "escape.jpg").symlink_to(outside / "x.jpg")
    (real_root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (real_root / "loop.jpg").symlink_to("loop.jpg")
    (real_root / "big.png").write_bytes(png(40))  # 1600 pixels
    (real_root / "huge_header.png").write_bytes(png_header_only(100_000, 100_000))  # 10^10 pixels declared
    with open(real_root / "sparse_3gb.jpg", "wb") as f:  # sparse: 3 GB to stat, nothing on disk; reading it: 3 GB
        f.truncate(3 << 30)
    os.mkfifo(real_root / "fifo.jpg")  # exists, is not a regular file; reading it would block
    (real_root / "truncated.jpg").write_bytes(jpeg(20)[:200])
    root_link = tmp_path / "root_link"
    root_link.symlink_to(real_root, target_is_directory=True)

    cases = {
        "good": ("good.jpg", "ok"),
        "good-sub": ("sub/good2.jpg", "ok"),
        "inside-link": ("inside_link.jpg", "ok"),
        "inside-dotdot": ("sub/../good.jpg", "ok"),
        "dotdot": ("../outside/x.jpg", "outside_image_root"),
        "absolute": (str(outside / "x.jpg"), "outside_image_root"),
        "symlink-out": ("escape.jpg", "outside_image_root"),
        "symlinked-dir-out": ("escape_dir/x.jpg", "outside_image_root"),
        "nul": ("good.jpg\0.png", "bad_image_path"),
        "long-name": ("a" * 300 + ".jpg", "bad_image_path"),
        "loop": ("loop.jpg", "bad_image_path"),
        "fifo": ("fifo.jpg", "unreadable_image"),
        "big": ("big.png", "too_many_pixels"),
        "huge-header": ("huge_header.png", "too_many_pixels"),
        "huge-file": ("sparse_3gb.jpg", "too_large_file"),
        "missing": ("nope.jpg", "missing_file"),
        "folder": ("sub", "missing_file"),
        "truncated": ("truncated.jpg", "undecodable_image"),
    }
    items = [item(item_id, image) for item_id, (image, _) in cases.items()]
    items.append(item("surrogate", "good.jpg", caption="left \ud800 right"))  # valid JSON, not encodable UTF-8
    items.append(item("x" * 300, "good.jpg", caption="A hostile id."))  # would overflow a ustar member name
    expected = {k: reason for k, (_, reason) in cases.items()} | {"surrogate": "malformed_item", "x" * 300: "ok"}
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))  # json.dumps escapes NUL and the lone surrogate as \u sequences
    return path, root_link, expected


def run(json_path: Path, root: Path, out: Path, *extra: str) -> int:
    args = ["--dataset", "lcs558k", "--json", str(json_path), "--image-root", str(root), "--out", str(out)]
    return build_shards.main([*args, "--max-pixels", str(MAX_PIXELS), "--shard-size", "3", *extra])


def test_hostile_items_are_skipped_with_their_reason_and_nothing_outside_the_root_is_read(hostile, tmp_path):
    json_path, root, expected = hostile
    out = tmp_path / "out"
    assert run(json_path, root, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = {s["id"]: s for s in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert {i: s["reason"] for i, s in skipped.items()} == {i: r for i, r in expected.items() if r != "ok"}
    wanted = {r: sum(v == r for v in expected.values()) for r in SKIP_REASONS}
    assert manifest["counts"]["skipped"] == wanted
    assert manifest["counts"]["samples_written"] == sum(v == "ok" for v in expected.values())
    assert "outside the image root" in skipped["symlink-out"]["detail"] and "x.jpg" in skipped["dotdot"]["detail"]
    assert "NUL byte" in skipped["nul"]["detail"] and "File name too long" in skipped["long-name"]["detail"]
    assert "not a regular file" in skipped["fifo"]["detail"]
    assert "100000x100000" in skipped["huge-header"]["detail"] and "not decoded" in skipped["huge-header"]["detail"]
    assert "40x40 = 1,600 pixels" in skipped["big"]["detail"]
    assert "3,221,225,472 bytes, over --max-image-bytes 67,108,864; not read" in skipped["huge-file"]["detail"]

    outside_bytes = (root.parent / "data" / "outside" / "x.jpg").read_bytes()
    assert len(index_shards([out], verify_sha256=True)) == manifest["counts"]["samples_written"]
    scans, damage = inspect_shards.scan_folder(out)
    written = [(key, data) for scan in scans for key, data in inspect_shards.read_members(scan)]
    assert not damage
    assert sorted(json.loads(d["json"])["id"] for _, d in written) == sorted(
        i for i, r in expected.items() if r == "ok"
    )
    assert all(d["jpg"] != outside_bytes for _, d in written)
    assert all(len(key) < 80 for key, _ in written)  # the 300-character id got a short key


def test_the_hostile_output_is_the_same_for_any_worker_count_and_resumes(hostile, tmp_path):
    json_path, root, _ = hostile

    def digests(out: Path) -> dict[str, str]:
        names = [p.name for p in sorted(out.glob("*.tar"))] + ["sizes.json", "skipped.jsonl"]
        return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}

    assert run(json_path, root, tmp_path / "one") == 0
    assert run(json_path, root, tmp_path / "two", "--workers", "3") == 0
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    (tmp_path / "two" / "llava-000001.tar").unlink()
    assert run(json_path, root, tmp_path / "two", "--workers", "2") == 0
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_strict_stops_at_the_first_hostile_item(hostile, tmp_path, capsys):
    _, root, _ = hostile
    json_path = tmp_path / "one.json"
    json_path.write_text(json.dumps([item("good", "good.jpg"), item("dotdot", "../outside/x.jpg")]))
    assert run(json_path, root, tmp_path / "out", "--strict") == 1
    err = capsys.readouterr().err
    assert "--strict:" in err and "item 1 (id 'dotdot'): outside_image_root: '../outside/x.jpg' resolves to" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file (0 bytes)"),
        (b"  \n", "empty file (3 bytes)"),
        (json.dumps([item("1", "a.jpg")] * 3).encode()[:-20], "invalid JSON at line 1, column "),
        (b'[{"id": "1", "image": "caf\xe9.jpg"}]', "not UTF-8 at byte 26 (line 1, column 27)"),
        (b'[{"id": "1"},\n {"id": "\xff"}]', "not UTF-8 at byte 23 (line 2, column 10)"),
        (b'{"id": "1"}', "expected a JSON list of items, got a JSON object"),
        (b"[" * 100_000, "JSON nested too deeply"),
    ],
    ids=["zero-bytes", "whitespace", "truncated", "latin1", "bad-byte-line-2", "not-a-list", "deep"],
)
def test_an_unusable_json_file_is_one_line_naming_file_and_position(tmp_path, capsys, content, message):
    json_path = tmp_path / "broken.json"
    json_path.write_bytes(content)
    out = tmp_path / "out"
    assert run(json_path, tmp_path, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"build_shards: {json_path}: ") and message in err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_a_truncated_json_says_where_it_ends(tmp_path, capsys):
    json_path = tmp_path / "cut.json"
    json_path.write_text('[{"id": "1", "image": "a.jpg", "conversations": [')
    assert run(json_path, tmp_path, tmp_path / "out") == 2
    assert "(the file ends there: truncated?)" in capsys.readouterr().err


def test_a_utf8_bom_is_tolerated(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg(20))
    json_path = tmp_path / "bom.json"
    json_path.write_bytes(b"\xef\xbb\xbf" + json.dumps([item("1", "a.jpg")]).encode())
    assert run(json_path, tmp_path, tmp_path / "out") == 0


def test_the_pixel_limit_is_decided_from_the_header_before_decoding():
    huge = png_header_only(100_000, 100_000)
    saved = Image.MAX_IMAGE_PIXELS
    # Decoding this file can only fail (its data is 64 bytes): TooManyPixels, not UndecodableImage, shows that
    # the header decided; PIL's own bomb check (which would raise at twice its limit) did not interfere.
    with pytest.raises(TooManyPixels, match="10,000,000,000 pixels"):
        to_shard_jpeg(huge)
    assert Image.MAX_IMAGE_PIXELS == saved
    with pytest.raises(UndecodableImage):
        to_shard_jpeg(png_header_only(30, 30))  # under the limit: decoded, and found broken
    with pytest.raises(TooManyPixels):
        to_shard_jpeg(png(40), max_pixels=1599)
    assert to_shard_jpeg(png(40), max_pixels=1600)[1] is True
    assert to_shard_jpeg(png(40), max_pixels=None)[1] is True
