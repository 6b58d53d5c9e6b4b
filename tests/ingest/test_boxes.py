"""Box geometry against Pillow itself: EXIF orientation, clipping, scaling."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from ctx_core.ingest.boxes import clip_box, orient_box, scale_to_voc, to_continuous


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_box_follows_exif_transpose(orientation):
    w, h = 50, 30
    box = (7, 4, 19, 25)  # continuous, end-exclusive
    mask = np.zeros((h, w), np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    im = Image.fromarray(mask)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    upright = ImageOps.exif_transpose(im)
    assert upright.getbbox() == orient_box(box, orientation, w, h)


def test_clip_and_scale():
    assert to_continuous(1, 1, 10, 20) == (0, 0, 10, 20)
    assert clip_box((-5, 2, 30, 8), 20, 10) == (0, 2, 20, 8)
    assert clip_box((25, 2, 30, 8), 20, 10) is None
    # halving a 1-based inclusive box (11..20) gives pixels 6..10
    assert scale_to_voc((10, 10, 20, 20), 0.5, 0.5, 50, 50) == (6, 6, 10, 10)
    # a 1-px box never vanishes and never leaves the image
    assert scale_to_voc((49, 0, 50, 1), 0.1, 0.1, 5, 5) == (5, 1, 5, 1)
