"""LLaVA item parsing and image normalisation: the pieces every shard sample passes through."""

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from data_prep.image_bytes import UndecodableImage, to_shard_jpeg
from data_prep.llava_items import KeyPhraseStats, Sample, SampleBuilder, Skip, clean_caption

ROOT = Path(__file__).resolve().parents[1]


def item(item_id="1", image="a/b.jpg", answers=("A red ball.",), human="<image>\nDescribe."):
    turns = []
    for answer in answers:
        turns += [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
        human = "And?"
    out = {"id": item_id, "conversations": turns}
    if image is not None:
        out["image"] = image
    return out


def test_captions_are_every_answer_cleaned_in_order():
    sample = SampleBuilder().add("mix665k", 0, item(answers=(" <image>\nThe  ball\tis left. ", "Two.")))
    assert isinstance(sample, Sample)
    assert sample.captions == ("The ball is left.", "Two.")
    assert clean_caption("<image> a\n\n b <IMAGE>") == "a b"


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (item(image=None), "no_image", "text-only item: no image key"),
        (item(answers=("  <image> ",)), "empty_caption", "every gpt answer is empty"),
        ({"id": "1", "image": "x.jpg", "conversations": []}, "malformed_item", "conversations is list [], expected"),
        ({"id": "1", "image": "x.jpg"}, "malformed_item", "conversations is missing"),
        (item(answers=(7,)), "malformed_item", "conversations[1].value is int 7, expected a string"),
        ({"id": None, "conversations": []}, "malformed_item", "id is missing"),
        (item(image=3), "malformed_item", "image is int 3"),
        ("not an item", "malformed_item", "item is str"),
        (item(answers=("left \ud800",)), "malformed_item", "conversations[1].value is not valid Unicode"),
        (item(image="a\udc80.jpg"), "malformed_item", "image is not valid Unicode: surrogates not allowed"),
    ],
)
def test_unusable_items_get_a_reason_naming_the_field(raw, reason, detail):
    result = SampleBuilder().add("mix665k", 5, raw)
    assert isinstance(result, Skip)
    assert (result.reason, result.index) == (reason, 5)
    assert detail in result.detail


def test_keys_are_unique_dot_free_and_stable_while_repeated_ids_stay_samples():
    builder = SampleBuilder()
    results = [
        builder.add("mix665k", 0, item("000.1/x", answers=("a",))),
        builder.add("mix665k", 1, item("000.1/x", answers=("b",))),  # same id, other conversation: a sample
        builder.add("mix665k", 2, item("000-1-x", answers=("c",))),  # sanitises to the same text
        builder.add("lcs558k", 0, item("000.1/x", answers=("a",))),  # same id in the other dataset
        builder.add("mix665k", 3, item("000.1/x", answers=("a",))),  # the very same item again
    ]
    keys = [r.key for r in results[:4]]
    assert keys == ["mix665k_000-1-x", "mix665k_000-1-x_1", "mix665k_000-1-x_2", "lcs558k_000-1-x"]
    assert all("." not in k and "/" not in k for k in keys)
    assert isinstance(results[4], Skip) and results[4].reason == "duplicate_key"
    long_ids = [builder.add("mix665k", 10 + n, item("9" * 300 + str(n), answers=("a",))).key for n in range(2)]
    assert long_ids[0] != long_ids[1] and all(len(k) == 64 and k.startswith("mix665k_999") for k in long_ids)
    assert "item 0" in results[4].detail


def test_key_phrase_statistics_count_answers_and_instances():
    stats = KeyPhraseStats()
    stats.add(item(answers=("It is on the left.", "Also At The Right.", "No.")))
    stats.add(item(image=None, answers=("to the left of it",)))
    stats.add(item(answers=("He left the room.",), human="Is it on the left?"))
    assert (stats.instances, stats.instances_with_image, stats.captions, stats.instances_any_turn) == (2, 1, 3, 3)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def test_valid_rgb_jpeg_is_kept_byte_for_byte():
    data = encode(Image.new("RGB", (40, 30), (200, 10, 10)), "JPEG")
    assert to_shard_jpeg(data) == (data, False)


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("RGB", (40, 30), "blue"), "PNG"),
        encode(Image.new("P", (40, 30)), "GIF"),
        encode(Image.new("CMYK", (40, 30), (0, 255, 0, 0)), "JPEG"),
    ],
    ids=["png", "gif", "cmyk-jpeg"],
)
def test_other_images_are_decoded_by_content_and_re_encoded_as_rgb_jpeg(data):
    jpeg, re_encoded = to_shard_jpeg(data)
    assert re_encoded
    with Image.open(io.BytesIO(jpeg)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (40, 30))


def test_resize_keeps_aspect_and_reencodes():
    data = encode(Image.new("RGB", (400, 100), "red"), "JPEG")
    jpeg, re_encoded = to_shard_jpeg(data, max_side=200)
    with Image.open(io.BytesIO(jpeg)) as image:
        assert re_encoded and image.size == (200, 50)
    assert to_shard_jpeg(data, max_side=400) == (data, False)


def test_broken_files_raise_with_the_reason():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(UndecodableImage, match="empty file"):
        to_shard_jpeg(b"")
    with pytest.raises(UndecodableImage):
        to_shard_jpeg(data[: len(data) // 2])
    with pytest.raises(UndecodableImage):
        to_shard_jpeg(b"not an image at all")


def big_flat_png(side: int) -> bytes:
    """A valid side x side RGB PNG of one colour: a few hundred KB on disk, side*side*3 bytes decoded."""
    compressor, row = zlib.compressobj(9), b"\0" * (1 + 3 * side)  # filter byte + black pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_running_out_of_memory_is_not_an_undecodable_image(tmp_path):
    """A real allocation failure (address space capped in a child process) must propagate, not become a skip."""
    image = tmp_path / "big.png"
    image.write_bytes(big_flat_png(6000))  # 108 MB decoded
    script = textwrap.dedent(
        f"""
        import resource, sys
        from data_prep.image_bytes import UndecodableImage, to_shard_jpeg
        data = open({str(image)!r}, "rb").read()
        with open("/proc/self/status") as f:
            used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (used + 48 * 2**20, resource.RLIM_INFINITY))
        try:
            to_shard_jpeg(data, max_pixels=None)
        except UndecodableImage as err:
            sys.exit(f"turned into a skip: {{err}}")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.rstrip().splitlines()[-1] == "MemoryError", result.stderr
    with Image.open(image) as decodable:  # the file itself is fine: the limit, not the image, made it fail
        assert decodable.size == (6000, 6000)
