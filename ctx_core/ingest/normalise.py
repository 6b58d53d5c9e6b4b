"""Decode one image and write it to the store as an 8-bit RGB JPEG.

Runs in worker processes. The decompression-bomb guard is on (Pillow refuses
any image whose header claims more than ``max_decode_pixels`` before
allocating it), EXIF orientation is applied, every mode becomes 8-bit RGB, and
images above the pixel budget are downscaled. A JPEG that needs none of this
is copied byte for byte, so re-ingesting a JPEG dataset loses nothing.
"""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ctx_core.fsutil import file_digest
from ctx_core.ingest import quarantine as q
from ctx_core.ingest.quarantine import Rejected

_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class NormaliseJob:
    """One image to decode: where it is, what to call it, where it goes, and the budget."""

    path: str
    source: str
    sha256: str
    dest: str
    min_pixels: int
    max_pixels: int
    max_decode_pixels: int
    min_side: int
    alpha: str
    jpeg_quality: int


@dataclass(frozen=True)
class Normalised:
    """A stored image. ``raw_*``: the file's pixel grid; ``orig_*``: after EXIF
    orientation; ``width``/``height``: as stored (px)."""

    source: str
    sha256: str
    orientation: int
    raw_width: int
    raw_height: int
    orig_width: int
    orig_height: int
    width: int
    height: int
    copied: bool


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def target_size(width: int, height: int, sha256: str, min_pixels: int, max_pixels: int, min_side: int) -> tuple[int, int] | None:
    """Stored size (px) for an image of ``width`` x ``height``, or None to keep it.

    Images above ``max_pixels`` get a target area drawn uniformly in
    [``min_pixels``, ``max_pixels``] from their sha256 (same file, same size);
    the shorter side never drops below ``min_side`` so the patch grid still fits.
    """
    if width * height <= max_pixels:
        return None
    u = int(sha256[:16], 16) / 2**64
    area = min_pixels + u * (max_pixels - min_pixels)
    scale = max(math.sqrt(area / (width * height)), min_side / min(width, height))
    if scale >= 1:
        return None
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if w <= h:
        w = max(w, min_side)
    else:
        h = max(h, min_side)
    return w, h


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not cost the image; treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def to_rgb(im: Image.Image, alpha: str) -> Image.Image:
    """Any Pillow mode as 8-bit RGB.

    16-bit and 32-bit integer images are scaled from 0..65535 to 0..255 (a plain
    ``convert`` would clip them). Transparent pixels are composited on white
    (``alpha='white'``) or the alpha channel is dropped (``'drop'``).
    """
    if im.mode.startswith("I"):
        arr = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        if alpha == "drop":
            return rgba.convert("RGB")
        base = Image.new("RGB", rgba.size, _WHITE)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return im if im.mode == "RGB" else im.convert("RGB")


def _reject(job: NormaliseJob, kind: str, reason: str) -> Rejected:
    return Rejected(job.source, kind, reason)


def _normalise_open(im: Image.Image, job: NormaliseJob) -> Normalised | Rejected:
    raw_w, raw_h = im.size
    if min(raw_w, raw_h) < job.min_side:
        return _reject(job, q.TOO_SMALL, f"too small for the patch grid ({raw_w}x{raw_h} < {job.min_side} px)")
    # the target only depends on area and shorter side, so it is computed on the raw grid
    target = target_size(raw_w, raw_h, job.sha256, job.min_pixels, job.max_pixels, job.min_side)
    if target is not None and im.format == "JPEG":
        # decode at 1/2, 1/4 or 1/8 scale straight from the DCT when that still covers the target
        im.draft(None, (min(target), min(target)))
    im.load()  # before reading EXIF: a PNG's EXIF may follow its pixels, and decode errors must surface here
    orientation = _exif_orientation(im)
    turned = orientation in (5, 6, 7, 8)
    orig_w, orig_h = (raw_h, raw_w) if turned else (raw_w, raw_h)
    if target is not None and turned:
        target = (target[1], target[0])
    if im.format == "JPEG" and im.mode == "RGB" and orientation == 1 and target is None:
        shutil.copyfile(job.path, job.dest)
        return Normalised(job.source, job.sha256, 1, raw_w, raw_h, orig_w, orig_h, raw_w, raw_h, copied=True)
    upright = ImageOps.exif_transpose(im) if orientation != 1 else im
    rgb = to_rgb(upright, job.alpha)
    if target is not None:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS)
    rgb.save(job.dest, "JPEG", quality=job.jpeg_quality)
    return Normalised(job.source, job.sha256, orientation, raw_w, raw_h, orig_w, orig_h, rgb.width, rgb.height, copied=False)


def normalise_image(job: NormaliseJob) -> Normalised | Rejected:
    """Decode ``job.path`` and write ``job.dest``; any failure becomes a :class:`Rejected`, never an exception."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = job.max_decode_pixels
    try:
        result = _decode(job)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if isinstance(result, Rejected):
        Path(job.dest).unlink(missing_ok=True)  # no half-written image without a manifest row
    return result


def _decode(job: NormaliseJob) -> Normalised | Rejected:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between the limit and twice the limit; refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(job.path) as im:
                return _normalise_open(im, job)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _reject(job, q.BOMB, f"decompression bomb: {str(exc).split(',')[0]}")
    except UnidentifiedImageError:
        size = Path(job.path).stat().st_size
        what = "empty file" if size == 0 else f"{size} bytes in no image format Pillow reads"
        return _reject(job, q.NOT_AN_IMAGE, f"not an image ({what})")
    except OSError as exc:
        if "truncated" in str(exc).lower():
            return _reject(job, q.TRUNCATED, f"truncated image file ({exc})")
        return _reject(job, q.UNREADABLE, f"unreadable image ({exc})")
    except Exception as exc:  # decoders raise SyntaxError, ValueError, EOFError...; one bad file never stops the run
        return _reject(job, q.UNREADABLE, f"unreadable image ({type(exc).__name__}: {exc})")
