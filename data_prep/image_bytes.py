"""Image file bytes -> JPEG bytes for a shard, decoding by content rather than by file name.

Real LLaVA folders hold PNG and GIF files named `.jpg`, CMYK JPEGs, truncated and empty files.
A valid RGB or greyscale JPEG that needs no resize is kept byte for byte; anything else that decodes
is converted to RGB and re-encoded.
"""

from __future__ import annotations

import io

from PIL import Image

JPEG_QUALITY = 95


class UndecodableImage(ValueError):
    pass


def to_shard_jpeg(data: bytes, max_side: int | None = None) -> tuple[bytes, bool]:
    """Returns (jpeg bytes, re_encoded). Raises UndecodableImage with the reason."""
    if not data:
        raise UndecodableImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt, mode, size = probe.format, probe.mode, probe.size
            needs_resize = max_side is not None and max(size) > max_side
            if fmt == "JPEG" and mode in ("RGB", "L") and not needs_resize:
                # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation is caught
                # at a fraction of the cost of a full decode.
                probe.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                probe.load()
                return data, False
            probe.load()
            image = probe.convert("RGB")
    except UndecodableImage:
        raise
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        raise UndecodableImage(f"{type(err).__name__}: {err}") from None
    if needs_resize:
        scale = max_side / max(size)
        image = image.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), True
