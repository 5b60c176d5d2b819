"""The C++ preprocessing (examples/cpp/tools/sd4match_preprocess) against PIL and the Python SDK,
bit for bit: image decoding (PNG via libpng, JPEG via libjpeg), Pillow's BILINEAR/BICUBIC resize,
the SD ``pixels`` input and the DINOv2 input of CPM engines.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sd4match_sdk.images import load_image, sd_pixels

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sd4match_sdk" / "assets" / "demo"
DEMO_IMAGES = sorted(p for p in DEMO.iterdir() if p.suffix in (".png", ".jpeg", ".jpg"))
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def run_tool(program: Path, *args, expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(program), *map(str, args)], capture_output=True, text=True)
    if expect_ok:
        assert result.returncode == 0, result.stderr
    return result


def cpp_decode(program: Path, image: Path, tmp_path: Path) -> np.ndarray:
    run_tool(program, "decode", image, tmp_path / "decoded.npy")
    return np.load(tmp_path / "decoded.npy")


def cpp_resize(program: Path, image: Path, size: tuple[int, int], filt: str, tmp_path: Path, order: str = "pillow13"):
    run_tool(program, "resize", image, size[0], size[1], filt, tmp_path / "resized.npy", order)
    return np.load(tmp_path / "resized.npy")


@pytest.fixture(scope="module")
def noise_image(tmp_path_factory) -> Path:
    """Random pixels: any error in a tap, weight or rounding shows up somewhere."""
    path = tmp_path_factory.mktemp("images") / "noise_137x91.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (91, 137, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def format_zoo(tmp_path_factory) -> list[Path]:
    """PNG and JPEG variants PIL reads in different modes (L, LA, RGBA, 1, P with tRNS, 16 bit, ...)."""
    import cv2

    d = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (33, 41, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (33, 41), dtype=np.uint8)
    images = {
        "rgba.png": Image.fromarray(rng.integers(0, 256, (33, 41, 4), dtype=np.uint8), "RGBA"),
        "la.png": Image.fromarray(rng.integers(0, 256, (33, 41, 2), dtype=np.uint8), "LA"),
        "gray.png": Image.fromarray(gray),
        "bilevel.png": Image.fromarray(gray > 128),
        "gray_4bit_palette.png": Image.fromarray(gray).convert("P"),
    }
    for name, image in images.items():
        image.save(d / name, bits=4) if "4bit" in name else image.save(d / name)
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(d / "palette_trns.png", transparency=3)
    Image.fromarray(gray).save(d / "gray_trns.png", transparency=5)
    Image.fromarray(rgb).save(d / "rgb_trns.png", transparency=(1, 2, 3))
    cv2.imwrite(str(d / "rgb16.png"), rng.integers(0, 65536, (33, 41, 3), dtype=np.uint16))
    gray16 = rng.integers(0, 65536, (33, 41), dtype=np.uint16)
    gray16[0, :3] = (3, 255, 256)  # PIL clips 16-bit gray to 255 when converting to RGB
    cv2.imwrite(str(d / "gray16.png"), gray16)
    cv2.imwrite(str(d / "rgba16.png"), rng.integers(0, 65536, (33, 41, 4), dtype=np.uint16))
    Image.fromarray(gray).save(d / "gray.jpg", quality=90)
    Image.fromarray(rgb).save(d / "progressive.jpg", quality=85, progressive=True)
    Image.fromarray(rgb).save(d / "yuv444.jpg", quality=95, subsampling=0)
    Image.fromarray(rgb).save(d / "yuv422.jpg", quality=75, subsampling=1)
    Image.fromarray(rgb).save(d / "yuv420.jpg", quality=75, subsampling=2)
    return sorted(d.iterdir())


class TestDecode:
    def test_demo_and_spair_images_decode_like_pil(self, cpp_preprocess, fixtures_dir, tmp_path):
        jpegs = sorted((fixtures_dir / "SPair-71k" / "JPEGImages").rglob("*.jpg"))[:3]
        assert jpegs
        for image in DEMO_IMAGES + jpegs:
            expected = np.asarray(Image.open(image).convert("RGB"))
            np.testing.assert_array_equal(cpp_decode(cpp_preprocess, image, tmp_path), expected, err_msg=str(image))

    def test_png_and_jpeg_modes_decode_like_pil(self, cpp_preprocess, format_zoo, tmp_path):
        assert len(format_zoo) == 16
        for image in format_zoo:
            expected = np.asarray(Image.open(image).convert("RGB"))
            np.testing.assert_array_equal(cpp_decode(cpp_preprocess, image, tmp_path), expected, err_msg=image.name)

    def test_cmyk_jpeg_is_refused(self, cpp_preprocess, tmp_path):
        Image.new("CMYK", (8, 8), (1, 2, 3, 4)).save(tmp_path / "cmyk.jpg")
        result = run_tool(cpp_preprocess, "decode", tmp_path / "cmyk.jpg", tmp_path / "x.npy", expect_ok=False)
        assert result.returncode == 2 and "CMYK JPEGs are not supported" in result.stderr


class TestResize:
    # Down- and upscaling, one axis only, tall/wide targets (both pass orders of Pillow 13), 1x1.
    SIZES = ((256, 256), (768, 768), (100, 37), (37, 100), (137, 40), (20, 91), (300, 200), (500, 60), (1, 1), (64, 90))

    def test_random_pixels_like_pil(self, cpp_preprocess, noise_image, tmp_path):
        source = Image.open(noise_image)
        for size in self.SIZES:
            for name, filt in FILTERS.items():
                expected = np.asarray(source.resize(size, filt))
                got = cpp_resize(cpp_preprocess, noise_image, size, name, tmp_path)
                np.testing.assert_array_equal(got, expected, err_msg=f"{size} {name}")

    def test_photos_like_pil(self, cpp_preprocess, fixtures_dir, tmp_path):
        # 333x500 -> 256x256 makes Pillow 13 run the vertical pass first (the height shrinks by
        # more than twice as many pixels as the width): this image caught the first port.
        portrait = next((fixtures_dir / "SPair-71k" / "JPEGImages").rglob("2008_007604.jpg"))
        for image in [DEMO / "dift_cat_src.png", DEMO / "ldmcorr_source_cat.png", portrait]:
            source = Image.open(image).convert("RGB")
            for size in [(256, 256), (768, 768), (source.width // 3, source.height // 2)]:
                for name, filt in FILTERS.items():
                    got = cpp_resize(cpp_preprocess, image, size, name, tmp_path)
                    np.testing.assert_array_equal(
                        got, np.asarray(source.resize(size, filt)), err_msg=f"{image.name} {size}"
                    )

    def test_horizontal_first_order_is_two_pil_passes(self, cpp_preprocess, noise_image, tmp_path):
        """Pillow <= 12 always resized horizontally first: the same as two one-axis PIL resizes."""
        source = Image.open(noise_image)
        for w, h in [(100, 20), (60, 30), (256, 256)]:
            for name, filt in FILTERS.items():
                expected = np.asarray(source.resize((w, source.height), filt).resize((w, h), filt))
                got = cpp_resize(cpp_preprocess, noise_image, (w, h), name, tmp_path, order="horizontal-first")
                np.testing.assert_array_equal(got, expected, err_msg=f"{(w, h)} {name}")


class TestModelInputs:
    def test_sd_pixels_equal_python(self, cpp_preprocess, tmp_path):
        for image in DEMO_IMAGES:
            for size in (256, 768):
                run_tool(cpp_preprocess, "sd", image, size, tmp_path / "sd.npy")
                expected = sd_pixels(load_image(image), size).numpy()
                np.testing.assert_array_equal(np.load(tmp_path / "sd.npy"), expected, err_msg=f"{image.name} {size}")

    def test_dino_pixels_equal_python(self, cpp_preprocess, cpp_cpm_engine, noise_image, tmp_path):
        from sd4match_sdk.engine.directory import read_manifest
        from sd4match_sdk.engine.runtime import load_dino_processor
        from sd4match_sdk.models.dino import dino_pixels

        processor = load_dino_processor(cpp_cpm_engine, read_manifest(cpp_cpm_engine))
        config = cpp_cpm_engine / "dino_processor" / "preprocessor_config.json"
        for image in DEMO_IMAGES + [noise_image]:  # landscape, portrait, near-square, upscaled
            run_tool(cpp_preprocess, "dino", image, config, tmp_path / "dino.npy")
            expected = dino_pixels(processor, [load_image(image)]).numpy()
            np.testing.assert_array_equal(np.load(tmp_path / "dino.npy"), expected, err_msg=image.name)
