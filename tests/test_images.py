"""Images are read by value (docs/design.md §13.16): 16-bit and float images are scaled to 8 bits,
not clipped; decompression bombs and too-small images are ImageErrors naming the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sd4match_sdk import ImageError
from sd4match_sdk.data import SPairDataset
from sd4match_sdk.errors import DatasetError
from sd4match_sdk.images import load_image


def gradient16(h: int = 8, w: int = 16) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 65535 // (h * w - 1)).astype(np.uint16)


class TestWideModes:
    def test_16_bit_png_is_scaled_not_clipped(self, tmp_path):
        values = gradient16()
        path = tmp_path / "g16.png"
        Image.fromarray(values).save(path)
        assert Image.open(path).mode == "I;16"
        rgb = load_image(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (8, 16, 3)
        np.testing.assert_array_equal(rgb[..., 0], (values >> 8).astype(np.uint8))
        assert (rgb == 255).mean() < 0.05  # PIL's own convert("RGB") clips: almost all white

    def test_8_bit_values_stored_in_16_bits_come_back_exactly(self, tmp_path):
        eight = np.random.default_rng(0).integers(0, 256, (6, 7), dtype=np.uint16)
        Image.fromarray(eight * 257).save(tmp_path / "x.png")  # the usual 8 -> 16 bit widening
        np.testing.assert_array_equal(load_image(tmp_path / "x.png")[..., 1], eight.astype(np.uint8))

    def test_float_image_in_0_1_is_scaled(self, tmp_path):
        values = np.linspace(0, 1, 8 * 16, dtype=np.float32).reshape(8, 16)
        path = tmp_path / "f.tiff"
        Image.fromarray(values).save(path)
        rgb = load_image(path)
        np.testing.assert_array_equal(rgb[..., 2], np.round(values.astype(np.float64) * 255).astype(np.uint8))
        assert rgb.max() == 255  # PIL's convert("RGB") gives an all-black image

    def test_32_bit_integer_pil_image(self):
        values = gradient16().astype(np.int32)
        np.testing.assert_array_equal(load_image(Image.fromarray(values))[..., 0], (values >> 8).astype(np.uint8))

    @pytest.mark.parametrize(
        "values, message",
        [
            (np.full((4, 4), 3.5, np.float32), r"float image with values in \[3\.5, 3\.5\].*scale it to \[0, 1\]"),
            (np.full((4, 4), np.nan, np.float32), r"float image .*NaN/inf.*must lie in \[0, 1\]"),
            (np.full((4, 4), -1, np.int32), r"32-bit integer image with values in \[-1, -1\].*save it as an 8-bit"),
            (np.full((4, 4), 70000, np.int32), r"only 0\.\.65535 \(16-bit\) is understood"),
        ],
    )
    def test_out_of_range_wide_images_are_refused(self, values, message):
        with pytest.raises(ImageError, match=message):
            load_image(Image.fromarray(values))


class TestSizes:
    @pytest.mark.parametrize("size", [(1, 1), (1, 5), (7, 1)])
    def test_files_and_pil_images_need_2x2(self, size, tmp_path):
        image = Image.new("RGB", size)
        with pytest.raises(ImageError, match=r"too small; need at least 2 x 2 pixels"):
            load_image(image)
        path = tmp_path / "tiny.png"
        image.save(path)
        with pytest.raises(ImageError, match=r"tiny\.png.* is \d+ x \d+ pixels, too small; need at least 2 x 2"):
            load_image(path)

    def test_2x2_is_enough(self):
        assert load_image(Image.new("L", (2, 2))).shape == (2, 2, 3)


class TestDecompressionBombs:
    @pytest.fixture()
    def small_limit(self, monkeypatch):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # bombs are > 2x the limit: 201+ pixels

    def test_bomb_is_an_image_error(self, small_limit, tmp_path):
        Image.new("RGB", (30, 30)).save(tmp_path / "bomb.png")
        with pytest.raises(ImageError, match=r"bomb\.png' is too large to decode safely .*downscale it, or raise PIL"):
            load_image(tmp_path / "bomb.png")

    def test_bomb_in_a_dataset_is_a_dataset_error(self, small_limit, trees, spair_root, tmp_path):
        root = trees.copy_spair_tree(spair_root, tmp_path)
        dataset = SPairDataset(root, "test")
        with pytest.raises(DatasetError, match=r"\.jpg.*too large to decode safely"):
            dataset[0]


def test_unconvertible_mode_is_an_image_error():
    with pytest.raises(ImageError, match=r"mode La.*save it as an 8-bit RGB PNG or JPEG"):
        load_image(Image.new("La", (4, 4)))  # PIL has no La -> RGB conversion

