"""Bad input to the C++ program: a clear message on stderr, exit status 2, no crash, no output.

Missing or modified engine files, manifests the program does not read, unreadable images,
points outside the image or NaN, bad noise files, categories, arguments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sd4match_sdk" / "assets" / "demo"
SOURCE, TARGET = DEMO / "dift_cat_src.png", DEMO / "dift_cat_trg.png"  # 1100x1099, 965x964


def run_cpp(program: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 (not a signal: no crash), nothing on stdout, every fragment in the message."""
    assert result.returncode == 2, f"status {result.returncode}\n{result.stderr}"
    assert result.stdout == ""
    assert result.stderr.startswith("sd4match_match: error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"


@pytest.fixture()
def engine_copy(cpp_class_engine, tmp_path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(cpp_class_engine, dst)
    return dst


def match(program, engine, *extra, source=SOURCE, target=TARGET, points="100,120"):
    return run_cpp(program, "--engine", engine, "--source", source, "--target", target, "--points", points,
                   "--category", "cat", "--seed", "0", *extra)  # fmt: skip


class TestEngineDirectory:
    def test_missing_graph_file(self, cpp_match, engine_copy):
        (engine_copy / "unet.onnx").unlink()
        assert_refused(match(cpp_match, engine_copy), f"engine file '{engine_copy / 'unet.onnx'}' is missing")

    def test_missing_external_data_file(self, cpp_match, engine_copy):
        (engine_copy / "vae_encoder.onnx.data").unlink()
        assert_refused(match(cpp_match, engine_copy), "vae_encoder.onnx.data' is missing")

    def test_modified_file_same_size(self, cpp_match, engine_copy):
        path = engine_copy / "unet.onnx.data"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        manifest = json.loads((engine_copy / "manifest.json").read_text())
        assert_refused(
            match(cpp_match, engine_copy), "unet.onnx.data' differs from its manifest (sha256 ",
            f"the manifest says {manifest['files']['unet.onnx.data']['sha256']}", "re-export",
        )  # fmt: skip

    def test_truncated_file(self, cpp_match, engine_copy):
        path = engine_copy / "vae_encoder.onnx"
        path.write_bytes(path.read_bytes()[:-7])
        assert_refused(
            match(cpp_match, engine_copy), "vae_encoder.onnx' differs from its manifest", "bytes, the manifest says"
        )

    def test_file_not_in_manifest(self, cpp_match, engine_copy):
        manifest = json.loads((engine_copy / "manifest.json").read_text())
        del manifest["files"]["unet.onnx"]
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(
            match(cpp_match, engine_copy), "'unet.onnx' is used by the engine but not listed in its manifest"
        )

    def test_unknown_format_version(self, cpp_match, engine_copy):
        manifest = json.loads((engine_copy / "manifest.json").read_text())
        manifest["format_version"] = 2
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(match(cpp_match, engine_copy), "has engine format version 2; this program reads version 1")

    def test_manifest_from_a_newer_sdk(self, cpp_match, engine_copy):
        manifest = json.loads((engine_copy / "manifest.json").read_text())
        manifest["sdk_version"] = "9.0.0"
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(match(cpp_match, engine_copy), "written by sd4match-sdk 9.0.0, newer than the SDK")
        manifest["sdk_version"] = "0.0.9"  # 0.x: another minor version is another release series
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(match(cpp_match, engine_copy), "written by sd4match-sdk 0.0.9, whose engine format")
        manifest["sdk_version"] = None
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(match(cpp_match, engine_copy), "unreadable version 'null'")

    def test_not_an_engine_directory(self, cpp_match, tmp_path):
        assert_refused(match(cpp_match, tmp_path), "manifest.json' not found", "is not an engine directory")
        assert_refused(match(cpp_match, tmp_path / "absent"), "engine directory", "not found")

    def test_malformed_manifest(self, cpp_match, engine_copy):
        (engine_copy / "manifest.json").write_text(
            '{"format": "sd4match-engine", "format_version": 1, "sdk_version": "0.1.0"'
        )
        assert_refused(match(cpp_match, engine_copy), "cannot read", "manifest.json")
        (engine_copy / "manifest.json").write_text(
            '{"format": "sd4match-engine", "format_version": 1, "sdk_version": "0.1.0"}'
        )
        assert_refused(match(cpp_match, engine_copy), "is incomplete or malformed")

    def test_graph_that_does_not_fit_its_manifest(self, cpp_match, engine_copy):
        manifest = json.loads((engine_copy / "manifest.json").read_text())
        manifest["ensemble"] = 3  # the graphs take E = 2 noise maps
        (engine_copy / "manifest.json").write_text(json.dumps(manifest))
        assert_refused(match(cpp_match, engine_copy), "input 'noise' of the unet graph has shape (batch, 2, 4, 32, 32)")


class TestInputs:
    def test_unreadable_images(self, cpp_match, cpp_class_engine, tmp_path):
        (tmp_path / "text.png").write_text("not an image")
        truncated = tmp_path / "truncated.png"
        truncated.write_bytes(SOURCE.read_bytes()[:4000])
        truncated_jpeg = tmp_path / "truncated.jpg"
        truncated_jpeg.write_bytes((DEMO / "ldmcorr_target_cat.jpeg").read_bytes()[:20000])
        assert_refused(
            match(cpp_match, cpp_class_engine, source=tmp_path / "absent.png"), "image file not found", "absent.png"
        )
        assert_refused(
            match(cpp_match, cpp_class_engine, target=tmp_path / "text.png"), "text.png': it is not a PNG or JPEG file"
        )
        assert_refused(match(cpp_match, cpp_class_engine, source=truncated), "cannot decode PNG image", "truncated.png")
        assert_refused(
            match(cpp_match, cpp_class_engine, target=truncated_jpeg), "cannot decode JPEG image", "Premature end"
        )

    def test_points_outside_or_nan_name_their_indices(self, cpp_match, cpp_class_engine):
        result = match(cpp_match, cpp_class_engine, points="10,10;1100,5;nan,4;-0.5,2;5,1099;inf,1")
        assert_refused(
            result, "5 source point(s) are NaN/inf or outside the image (0 <= x < 1100, 0 <= y < 1099)",
            "indices [1, 2, 3, 4, 5]", "1: (1100, 5)", "2: (nan, 4)",
        )  # fmt: skip
        # The last pixel is inside.
        assert match(cpp_match, cpp_class_engine, points="1099.9,1098.9").returncode == 0

    def test_malformed_points(self, cpp_match, cpp_class_engine):
        assert_refused(match(cpp_match, cpp_class_engine, points="10,10;abc"), "--points entry 1 ('abc') is not 'x,y'")
        assert_refused(match(cpp_match, cpp_class_engine, points="1,2,3"), "--points entry 0 ('1,2,3') is not 'x,y'")

    def test_category(self, cpp_match, cpp_class_engine):
        base = ["--engine", cpp_class_engine, "--source", SOURCE, "--target", TARGET, "--points", "1,1", "--seed", "0"]
        assert_refused(run_cpp(cpp_match, *base), "class prompt: pass --category (one of: bird, cat, dog)")
        assert_refused(run_cpp(cpp_match, *base, "--category", "horse"), "unknown category 'horse'")

    def test_noise_files(self, cpp_match, cpp_class_engine, tmp_path):
        from sd4match_sdk.noise import NOISE_FILES

        base = [
            "--engine",
            cpp_class_engine,
            "--source",
            SOURCE,
            "--target",
            TARGET,
            "--points",
            "1,1",
            "--category",
            "cat",
        ]
        assert_refused(run_cpp(cpp_match, *base, "--noise-dir", tmp_path / "absent"), "noise directory", "not found")
        for name in NOISE_FILES:
            np.save(tmp_path / name, np.zeros((1, 4, 32, 32), np.float32))
        np.save(tmp_path / NOISE_FILES[1], np.zeros((2, 4, 32, 32), np.float64))
        assert_refused(run_cpp(cpp_match, *base, "--noise-dir", tmp_path), "noise_source.npy' holds dtype '<f8'")
        np.save(tmp_path / NOISE_FILES[1], np.zeros((3, 4, 32, 32), np.float32))
        assert_refused(
            run_cpp(cpp_match, *base, "--noise-dir", tmp_path),
            "has shape (3, 4, 32, 32), this engine needs (2, 4, 32, 32)",
        )
        np.save(tmp_path / NOISE_FILES[1], np.full((2, 4, 32, 32), np.nan, np.float32))
        assert_refused(run_cpp(cpp_match, *base, "--noise-dir", tmp_path), "holds NaN or infinite values")
        np.save(tmp_path / NOISE_FILES[1], np.asfortranarray(np.zeros((2, 4, 32, 32), np.float32)))
        assert_refused(run_cpp(cpp_match, *base, "--noise-dir", tmp_path), "is in Fortran order")
        (tmp_path / NOISE_FILES[1]).write_bytes(b"\x93NUMPY garbage")
        assert_refused(run_cpp(cpp_match, *base, "--noise-dir", tmp_path), "noise_source.npy")

    def test_arguments(self, cpp_match, cpp_class_engine):
        base = ["--engine", cpp_class_engine, "--source", SOURCE, "--target", TARGET, "--category", "cat"]
        assert_refused(run_cpp(cpp_match, *base), "--points is required")
        assert_refused(
            run_cpp(cpp_match, *base, "--points", "1,1", "--seed", "1", "--noise-dir", "x"),
            "either --noise-dir or --seed",
        )
        assert_refused(run_cpp(cpp_match, *base, "--points", "1,1", "--threads", "-3"), "--threads expects an integer")
        assert_refused(run_cpp(cpp_match, *base, "--points", "1,1", "--bogus", "1"), "unknown option --bogus")
        assert_refused(run_cpp(cpp_match, *base, "--points", "1,1", "--runtime", "tensorrt"), "built without TensorRT")
        assert_refused(run_cpp(cpp_match, *base, "--points", "1,1", "--runtime", "cuda"), "unknown runtime 'cuda'")
        assert run_cpp(cpp_match, "--help").returncode == 0
