"""The C++ example (examples/cpp/sd4match_match) against the Python Matcher on the same engine.

Acceptance (issue 6): with identical noise (the .npy files examples/cpp/write_noise.py writes for a
seed), the C++ matches are within 0.05 px of ``Matcher.match(..., seed=s)``. The raw features are
compared too: both sides run the same ONNX graphs on bit-identical inputs (the C++ resize is
Pillow's, test_cpp_preprocess.py), so they agree to float32 rounding (observed: exactly).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sd4match_sdk import Matcher
from sd4match_sdk.images import load_image
from sd4match_sdk.noise import load_pair_noise

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sd4match_sdk" / "assets" / "demo"
SOURCE, TARGET = DEMO / "dift_cat_src.png", DEMO / "dift_cat_trg.png"  # 1100x1099 and 965x964 PNGs
# Interior points, off-grid points, the first pixel and points next to the last row/column.
POINTS = [[100.0, 120.0], [200.5, 80.25], [33.3, 250.0], [400.0, 300.0], [0.0, 0.0], [1099.5, 1098.9], [550.0, 1.0]]
MATCH_ATOL_PX = 0.05
FEATURE_ATOL = 1e-5


def write_noise(engine: Path, seed: int, out: Path) -> Path:
    """The noise of ``match(..., seed=seed)``, through the documented script."""
    script = ROOT / "examples" / "cpp" / "write_noise.py"
    cmd = [sys.executable, str(script), "--engine", str(engine), "--seed", str(seed), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return out


def run_cpp(program: Path, engine: Path, points, *extra: str, source=SOURCE, target=TARGET) -> dict:
    cmd = [str(program), "--engine", str(engine), "--source", str(source), "--target", str(target),
           "--points", ";".join(f"{x!r},{y!r}" for x, y in points), "--threads", "2", *extra]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    return json.loads(result.stdout)


def assert_parity(program: Path, engine: Path, tmp_path: Path, seed: int, category: str | None = None) -> None:
    noise = write_noise(engine, seed, tmp_path / f"noise{seed}")
    extra = ["--noise-dir", str(noise), "--features-out", str(tmp_path / "features.npy")]
    got = run_cpp(program, engine, POINTS, *extra, *(["--category", category] if category else []))

    matcher = Matcher.from_pretrained(str(engine), device="cpu")
    expected = matcher.match(SOURCE, TARGET, POINTS, category=category, seed=seed)
    # JSON holds each float32 as its shortest decimal: it reads back to the same float32.
    np.testing.assert_array_equal(np.asarray(got["query"], dtype=np.float32), expected.query)
    np.testing.assert_allclose(np.asarray(got["points"]), expected.points, rtol=0, atol=MATCH_ATOL_PX)
    np.testing.assert_allclose(np.asarray(got["scores"]), expected.scores, rtol=0, atol=1e-3)
    assert got["runtime"] == "onnxruntime" and got["noise"].startswith("npy:")

    # The same features: the Python engine backend on the noise files the C++ program read.
    source_noise, target_noise = load_pair_noise(noise)
    features = matcher.backend.extract_pairs(
        [load_image(SOURCE)], [load_image(TARGET)], [category], [(source_noise, target_noise)]
    ).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "features.npy"), features, rtol=0, atol=FEATURE_ATOL)


def test_class_engine_matches_python(cpp_match, cpp_class_engine, tmp_path):
    """class_index input, chunked calls (max_batch 1), external .onnx.data files."""
    assert_parity(cpp_match, cpp_class_engine, tmp_path, seed=0, category="cat")


def test_class_engine_other_category_and_seed(cpp_match, cpp_class_engine, tmp_path):
    assert_parity(cpp_match, cpp_class_engine, tmp_path, seed=11, category="bird")


def test_cpm_engine_matches_python(cpp_match, cpp_cpm_engine, tmp_path):
    """prompt_net on the DINOv2 inputs (shortest edge 256 bicubic, centre crop 224), context input."""
    assert_parity(cpp_match, cpp_cpm_engine, tmp_path, seed=3)


def test_text_engine_at_768_matches_python(cpp_match, cpp_text768_engine, tmp_path):
    """The faithful 768 px frame (48x48 grid), fixed context."""
    assert_parity(cpp_match, cpp_text768_engine, tmp_path, seed=5)


def test_noise_files_are_what_match_draws(cpp_match, cpp_class_engine, tmp_path):
    """Other noise gives other matches: the parity above depends on reading the right draws."""
    same = run_cpp(
        cpp_match,
        cpp_class_engine,
        POINTS,
        "--category",
        "cat",
        "--noise-dir",
        str(write_noise(cpp_class_engine, 0, tmp_path / "a")),
    )
    other = run_cpp(
        cpp_match,
        cpp_class_engine,
        POINTS,
        "--category",
        "cat",
        "--noise-dir",
        str(write_noise(cpp_class_engine, 1, tmp_path / "b")),
    )
    assert np.abs(np.asarray(same["points"]) - np.asarray(other["points"])).max() > 10 * MATCH_ATOL_PX


def test_own_seed_is_deterministic_and_valid(cpp_match, cpp_class_engine):
    """--seed draws the noise in C++: a valid run (not Python's numbers), the same for the same seed."""
    a = run_cpp(cpp_match, cpp_class_engine, POINTS, "--category", "dog", "--seed", "42")
    b = run_cpp(cpp_match, cpp_class_engine, POINTS, "--category", "dog", "--seed", "42")
    c = run_cpp(cpp_match, cpp_class_engine, POINTS, "--category", "dog", "--seed", "43")
    assert a["points"] == b["points"] and a["scores"] == b["scores"]
    assert a["points"] != c["points"]
    points, scores = np.asarray(a["points"]), np.asarray(a["scores"])
    w, h = 965, 964  # the target's size: matches are expectations over its grid cells
    assert points.shape == (len(POINTS), 2) and np.isfinite(points).all()
    assert (points >= 0).all() and (points[:, 0] <= w).all() and (points[:, 1] <= h).all()
    assert ((scores > 0) & (scores <= 1)).all()
    assert a["noise"].startswith("seed:42")


def test_no_points_gives_an_empty_result(cpp_match, cpp_class_engine):
    out = run_cpp(cpp_match, cpp_class_engine, [], "--category", "dog", "--seed", "1")
    assert out["query"] == [] and out["points"] == [] and out["scores"] == []


def test_jpeg_source(cpp_match, cpp_class_engine, tmp_path, fixtures_dir):
    """A real JPEG (SPair-71k) as the source: decoded as PIL does, so the matches agree too."""
    jpeg = sorted((fixtures_dir / "SPair-71k" / "JPEGImages").rglob("*.jpg"))[0]
    w, h = load_image(jpeg).shape[1], load_image(jpeg).shape[0]
    points = [[w * 0.25, h * 0.5], [w - 1.0, h - 1.0]]
    noise = write_noise(cpp_class_engine, 2, tmp_path / "noise")
    got = run_cpp(cpp_match, cpp_class_engine, points, "--category", "cat", "--noise-dir", str(noise), source=jpeg)
    expected = Matcher.from_pretrained(str(cpp_class_engine)).match(jpeg, TARGET, points, category="cat", seed=2)
    np.testing.assert_allclose(np.asarray(got["points"]), expected.points, rtol=0, atol=MATCH_ATOL_PX)
