"""Image file bytes -> JPEG bytes for a shard, decoding by content rather than by file name.

Real LLaVA folders hold PNG and GIF files named `.jpg`, CMYK JPEGs, truncated and empty files.
A valid RGB or greyscale JPEG that needs no resize is kept byte for byte; anything else that decodes
is converted to RGB and re-encoded. An image with more pixels than `max_pixels` is refused from its
header, before any pixel is decoded (a 99-megapixel PNG of one colour is a few KB on disk and 1 GB decoded).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95
DEFAULT_MAX_PIXELS = 50_000_000

# What PIL raises for a broken or hostile file. Deliberately not `Exception`: a MemoryError (or a bug of ours)
# must stop the conversion, not turn a good image into an "undecodable" one.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class UndecodableImage(ValueError):
    pass


class TooManyPixels(ValueError):
    """The header declares more pixels than allowed; nothing was decoded."""


def warm_up_image_codecs() -> None:
    """Imports PIL's format plugins now, so that processes forked afterwards share them instead of each
    importing them at its first image."""
    Image.init()


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice that, at open time. Our limit is checked from the
    # header right after open, so PIL's own check is switched off here: it would decide with another threshold.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def to_shard_jpeg(
    data: bytes, max_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[bytes, bool]:
    """Returns (jpeg bytes, re_encoded). Raises TooManyPixels or UndecodableImage with the reason."""
    if not data:
        raise UndecodableImage("empty file (0 bytes)")
    try:
        with _own_pixel_limit(), Image.open(io.BytesIO(data)) as probe:
            fmt, mode, size = probe.format, probe.mode, probe.size
            if max_pixels is not None and size[0] * size[1] > max_pixels:
                raise TooManyPixels(
                    f"{fmt} header declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, "
                    f"over --max-pixels {max_pixels:,} (not decoded)"
                )
            needs_resize = max_side is not None and max(size) > max_side
            if fmt == "JPEG" and mode in ("RGB", "L") and not needs_resize:
                # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation is caught
                # at a fraction of the cost of a full decode.
                probe.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                probe.load()
                return data, False
            probe.load()
            image = probe.convert("RGB")
    except Image.DecompressionBombError as err:  # only if a plugin checks again after open; same verdict
        raise TooManyPixels(str(err)) from None
    except (TooManyPixels, UndecodableImage):
        raise
    except DECODE_ERRORS as err:
        raise UndecodableImage(f"{type(err).__name__}: {err}") from None
    if needs_resize:
        scale = max_side / max(size)
        image = image.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), True
