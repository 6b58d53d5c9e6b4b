"""Image files good and broken, written by the tests, and small params files for ingestion."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctx_core.config import Settings, load_params
from tests.conftest import write_params

# a 3x16 + 2x8 + 2x1 = 66 px patch grid keeps the test images small
SMALL_GRID = {"patch_size": 16, "gap": 8, "jitter": 1}
GRID = 66


def ingest_settings(tmp_path: Path, source: str | Path, name: str = "p", **ingest) -> Settings:
    """Params in ``tmp_path/name`` for ingesting ``source`` into ``tmp_path/store-<name>``."""
    cfg = {"source": str(source), "out": str(tmp_path / f"store-{name}"), "reports": str(tmp_path / f"reports-{name}"),
           "workers": 1, **ingest}
    return load_params(write_params(tmp_path / name, data={"ingest": cfg}, pretrain=SMALL_GRID))


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth-ish random picture (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **{"quality": 90, **kw})
    return buf.getvalue()


def with_exif_orientation(im: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(im, exif=exif.tobytes())


# expected quarantine kind of each broken file in make_mixed_folder
BROKEN = {
    "empty.jpg": "not an image",
    "notes-as-image.jpg": "not an image",
    "cut.jpg": "truncated",
    "corrupt.png": "unreadable",
    "bomb.png": "decompression bomb",
    "tiny.png": "too small for the patch grid",
    "dangling.jpg": "broken link",
    "rgb_copy.jpg": "duplicate",
}
# stored size of each good file (the EXIF-rotated one is turned upright)
GOOD = {
    "rgb.jpg": (96, 80),
    "gray.png": (90, 70),
    "palette.png": (90, 70),
    "rgba.png": (90, 70),
    "cmyk.jpg": (90, 70),
    "deep16.png": (90, 70),
    "rotated.jpg": (80, 100),
    "nested/deeper/picture.webp": (90, 70),
    "UPPER.JPEG": (90, 70),
    "scan.TIF": (90, 70),
    "Paint.BMP": (90, 70),
}


def make_mixed_folder(root: Path) -> Path:
    """Every good mode and every broken file the ingestion stage must tell apart."""
    (root / "nested" / "deeper").mkdir(parents=True)
    rgb = noise(96, 80, 1)
    (root / "rgb.jpg").write_bytes(jpeg_bytes(rgb))
    (root / "rgb_copy.jpg").write_bytes((root / "rgb.jpg").read_bytes())
    noise(90, 70, 2, "L").save(root / "gray.png")
    noise(90, 70, 3).quantize(16).save(root / "palette.png")
    rgba = noise(90, 70, 4).convert("RGBA")
    alpha = np.zeros((70, 90), np.uint8)
    alpha[:, 45:] = 255  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / "rgba.png")
    noise(90, 70, 5).convert("CMYK").save(root / "cmyk.jpg", quality=90)
    ramp = (np.arange(90, dtype=np.uint32)[None, :] * 700 + np.zeros((70, 1), np.uint32)).astype(np.uint16)
    Image.fromarray(ramp).save(root / "deep16.png")  # 16-bit grey, values 0..62300
    (root / "rotated.jpg").write_bytes(with_exif_orientation(noise(100, 80, 6), 6))
    noise(90, 70, 7).save(root / "nested" / "deeper" / "picture.webp")
    (root / "UPPER.JPEG").write_bytes(jpeg_bytes(noise(90, 70, 8)))
    noise(90, 70, 9).save(root / "scan.TIF")
    noise(90, 70, 10).save(root / "Paint.BMP")

    (root / "empty.jpg").write_bytes(b"")
    (root / "notes-as-image.jpg").write_text("this is a shopping list, not a photo\n")
    whole = jpeg_bytes(noise(90, 70, 11))
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    good_png = io.BytesIO()
    noise(90, 70, 12).save(good_png, "PNG")
    data = bytearray(good_png.getvalue())
    mid = data.index(b"IDAT") + 40
    data[mid:mid + 200] = bytes(200)  # zeroed compressed stream: zlib and CRC both fail
    (root / "corrupt.png").write_bytes(bytes(data))
    (root / "bomb.png").write_bytes(png_bomb_header())
    noise(8, 8, 13).save(root / "tiny.png")
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    (root / "README.txt").write_text("not an image name: ignored\n")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of the bytes (or the link target for links), for every entry."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    return make_mixed_folder(tmp_path / "photos")
