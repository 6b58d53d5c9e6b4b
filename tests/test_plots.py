"""Montages draw every box, however small after scaling."""

from PIL import Image

from ctx_core.plots import boxes_montage


def test_montage_draws_tiny_boxes_of_large_images():
    img = Image.new("RGB", (1024, 768), "white")
    sheet = boxes_montage([(img, [("car", (10, 10, 11, 11), True), ("car", (100, 200, 600, 700), False)])],
                          ["car"], cols=1, tile=192)
    assert sheet.size == (192, 192)
    # the large box's outline is drawn in the class colour
    assert sheet.getpixel((int(100 * 192 / 1024), int(400 * 192 / 1024))) != (255, 255, 255)
