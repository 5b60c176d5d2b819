"""The `sd4match` command line: match, demo, download, compare; fast --help; cheap inputs first."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from prompt_archives import build_zip

from sd4match_sdk import __version__
from sd4match_sdk.cli import main, parse_points
from sd4match_sdk.errors import PointsError
from sd4match_sdk.viz import draw_matches

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPTS = {"sd4match": "sd4match_sdk.cli", "sd4match-eval": "sd4match_sdk.evaluation.cli",
                   "sd4match-train": "sd4match_sdk.training.cli", "sd4match-export": "sd4match_sdk.export.cli"}  # fmt: skip


def test_parse_points() -> None:
    assert parse_points("1,2;3.5, 4") == [[1.0, 2.0], [3.5, 4.0]]
    with pytest.raises(PointsError, match="entry 1"):
        parse_points("1,2;3")


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_help_and_version_import_no_torch(script: str) -> None:
    """Every console script answers --help and --version before importing torch (no 2 s wait)."""
    code = (f"import sys; from {CONSOLE_SCRIPTS[script]} import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("heavy: []"), result.stdout[-500:]
    assert f"sd4match-sdk {__version__}" in result.stdout and "usage:" in result.stdout


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_helps_state_defaults_and_what_each_flag_does(capsys) -> None:
    text = _help("match", capsys=capsys)
    for phrase in ("auto (CUDA when available; default)", "an engine directory from sd4match-export",
                   "Without it the noise comes from torch's global RNG and matches differ slightly run to run",
                   "the paper's Kernel-Soft-Argmax, default", "official:NAME", "--verbose"):  # fmt: skip
        assert phrase in text, phrase
    demo = _help("demo", capsys=capsys)
    assert "noise draws averaged per image (default 8)" in demo and "seed of the noise draws (default 0)" in demo
    from sd4match_sdk.export.cli import main as export_main

    with pytest.raises(SystemExit):
        export_main(["--help"])
    export = " ".join(capsys.readouterr().out.split())
    assert "onnx (default)" in export and "default fp16 for --engine trt, fp32 for --engine onnx" in export


def test_match_writes_json_with_its_settings_and_a_picture(tiny_sd: Path, demo_pair, tmp_path: Path, capsys) -> None:
    out, js = tmp_path / "m.png", tmp_path / "m.json"
    code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "100,200;500,500", "--model", str(tiny_sd),
                 "--seed", "0", "--ensemble", "1", "--out", str(out), "--json", str(js)])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "wrote " + str(js) in captured.err and "wrote " + str(out) in captured.err
    assert captured.out.count("->") == 2 and "{" not in captured.out  # a summary, not the JSON again
    payload = json.loads(js.read_text())
    assert len(payload["points"]) == 2 and payload["query"] == [[100.0, 200.0], [500.0, 500.0]]
    assert (payload["seed"], payload["model"], payload["prompt"]) == (0, str(tiny_sd), None)
    settings = payload["settings"]
    assert (settings["timestep"], settings["ensemble"], settings["method"], settings["device"]) == (50, 1, "kernel_softargmax", "cpu")
    assert settings["sdk_version"] == __version__ and "note" not in payload
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] == 480


def test_match_without_json_prints_one_json_document(tiny_sd: Path, demo_pair, capsys) -> None:
    assert main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "100,200", "--model", str(tiny_sd),
                 "--ensemble", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    payload = json.loads(out)
    assert payload["seed"] is None and "slightly different matches" in payload["note"]


def test_cheap_inputs_fail_before_the_model(demo_pair, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    no_model = "./no-such-dir"
    assert main(["match", str(tmp_path / "missing.jpg"), str(demo_pair[1]), "--points", "1,2", "--model", no_model]) == 2
    assert "image file not found" in capsys.readouterr().err
    assert main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "5000,2", "--model", no_model]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--model", no_model,
                 "--prompt", "missing.safetensors"]) == 2  # fmt: skip
    assert "prompt file not found" in capsys.readouterr().err
    assert main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--model", no_model]) == 2
    err = capsys.readouterr().err
    assert "'./no-such-dir': no such directory" in err and "sd4match download sd21" in err


def test_demo_runs_offline_with_progress_and_a_caption(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--ensemble", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "RANDOM weights" in text and "--model" in text
    steps = [line for line in text.splitlines() if line.startswith("[")]
    assert [s[:5] for s in steps] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for command in ("sd4match download sd21", "sd4match download prompts", "--prompt official:single_spair"):
        assert command in text, command
    picture = cv2.imread(str(out))
    assert picture.shape[0] > 480  # the caption band under the photos
    caption = picture[480:]
    assert (caption < 128).any() and (caption > 250).mean() > 0.8  # dark text on white


class TestUserErrors:
    """No traceback for a user error; outputs are checked before the model runs (docs/design.md §13.17)."""

    @pytest.mark.parametrize(
        "extra, message",
        [
            (["--json", "{file}/m.json"], r"--json '.*m\.json': '.*taken' is a file, not a folder; choose another path"),
            (["--out", "{file}/m.png"], r"--out '.*m\.png': '.*taken' is a file, not a folder"),
            (["--out", "{tmp}/m.xyz"], r"--out '.*m\.xyz': OpenCV cannot write \.xyz; use \.png or \.jpg"),
            (["--out", "{tmp}/matches"], r"OpenCV cannot write files without a suffix; use \.png or \.jpg"),
            (["--json", "{tmp}"], r"--json '.*' is a folder; give a file name"),
            (["--device", "gpu"], r"invalid device 'gpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'"),
            (["--seed", "-99999999999999999999"], r"--seed -99999999999999999999 is outside the generator's range"),
            (["--ensemble", "0"], r"ensemble must be >= 1 \(got 0\); 8 is the released test setting"),
        ],
        ids=["json-below-a-file", "out-below-a-file", "out-suffix", "out-no-suffix", "json-is-a-folder", "device", "seed", "ensemble"],
    )
    def test_exit_2_with_one_line(self, extra, message, demo_pair, tmp_path, capsys):
        (tmp_path / "taken").write_text("a regular file")
        extra = [e.format(file=tmp_path / "taken", tmp=tmp_path) for e in extra]
        model = str(tmp_path / "no-model")  # the model is never reached: the options fail first
        code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--model", model, *extra])
        err = capsys.readouterr().err
        assert code == 2 and re.search(message, err), err
        assert err.startswith("sd4match: error:") and "Traceback" not in err

    @pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
    def test_cuda_without_cuda(self, demo_pair, tiny_sd, capsys):
        code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--model", str(tiny_sd), "--device", "cuda"])
        err = capsys.readouterr().err
        assert code == 2 and "torch sees no CUDA device" in err and "use device='cpu'" in err and "Traceback" not in err

    def test_verbose_adds_the_traceback(self, demo_pair, tmp_path, capsys):
        code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--device", "gpu", "--verbose"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" in err and err.rstrip().endswith("'cuda:N' or 'auto'")

    def test_a_file_system_error_is_one_line(self, demo_pair, tmp_path, capsys, monkeypatch):
        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device", str(tmp_path / "m.json"))

        monkeypatch.setattr("sd4match_sdk.atomic.write_text", full_disk)
        monkeypatch.setattr("sd4match_sdk.images.load_image", full_disk)
        code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "1,2", "--json", str(tmp_path / "m.json")])
        err = capsys.readouterr().err
        assert code == 2 and "No space left on device" in err and "check the path, its permissions and the free space" in err

    def test_json_is_written_atomically_with_normal_permissions(self, tiny_sd, demo_pair, tmp_path):
        import os
        import stat

        js = tmp_path / "m.json"
        assert main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "100,200", "--model", str(tiny_sd),
                     "--ensemble", "1", "--seed", "0", "--json", str(js)]) == 0  # fmt: skip
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(js.stat().st_mode) == 0o666 & ~umask
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_libraries_are_quiet_unless_verbose_and_restored_afterwards() -> None:
    import logging
    import warnings

    import diffusers
    import transformers

    from sd4match_sdk.console import quiet_libraries

    before = transformers.utils.logging.get_verbosity(), diffusers.utils.logging.is_progress_bar_enabled()
    with quiet_libraries():
        assert transformers.utils.logging.get_verbosity() == logging.ERROR
        assert not diffusers.utils.logging.is_progress_bar_enabled()
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("library noise", UserWarning, "x.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("ours", UserWarning, "y.py", 1, module="sd4match_sdk.engine.onnxrt")
        assert [str(w.message) for w in caught] == ["ours"]
    assert (transformers.utils.logging.get_verbosity(), diffusers.utils.logging.is_progress_bar_enabled()) == before
    with quiet_libraries(verbose=True):
        assert transformers.utils.logging.get_verbosity() == before[0]


def test_the_demo_picture_numbers_points_and_leaves_a_gap() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (240, 200, 3), np.uint8), rng.integers(0, 255, (240, 300, 3), np.uint8)
    query, points = np.array([[50.0, 60.0]]), np.array([[100.0, 120.0]])
    labelled = draw_matches(a, b, query, points, height=240, gap=16)
    plain = draw_matches(a, b, query, points, height=240, gap=16, labels=False)
    assert labelled.shape == (240, 200 + 16 + 300, 3)
    gap = plain[:, 200:216]
    line = [(y, x) for y in range(240) for x in range(200, 216) if (gap[y, x - 200] != 255).any()]
    assert len(line) < 0.05 * gap.shape[0] * gap.shape[1]  # white but for the match line crossing it
    assert (labelled != plain).any(axis=2)[40:70, 50:80].sum() > 10  # the number beside the query point
    assert draw_matches(a, b, query, points, height=240, caption="hello").shape[0] > 240


def test_demo_with_weights_and_an_official_prompt(tiny_sd, server, cache, prompt_files, tmp_path, capsys) -> None:
    assert main(["demo", "--prompt", "official:single_spair"]) == 2
    assert "--prompt needs --model" in capsys.readouterr().err
    server.content = build_zip(prompt_files)
    assert main(["download", "prompts"]) == 0
    printed = capsys.readouterr().out
    assert "official:single_spair" in printed and "use them: --prompt official:" in printed
    assert main(["download", "prompts", "--force"]) == 0 and server.ranges == [None, None]  # fetched again, same archive
    capsys.readouterr()
    out = tmp_path / "real.png"
    assert main(["demo", "--model", str(tiny_sd), "--prompt", "official:class_spair", "--ensemble", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RANDOM" not in text and f"[1/4] using {tiny_sd}" in text and out.is_file()


def test_compare_a_results_file(tmp_path: Path, capsys) -> None:
    results = {"settings": {"prompt_kind": "cpm", "dataset": "pfpascal", "prompt": "x"}, "num_pairs": 299,
               "pck": {"0.05": {"all": 0.80, "per_category": {}}, "0.1": {"all": 0.9, "per_category": {}},
                       "0.15": {"all": 0.95, "per_category": {}}}}  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    assert main(["compare", str(path)]) == 2
    assert "pass --trained-on" in capsys.readouterr().err
    assert main(["compare", str(path), "--trained-on", "pfpascal", "--plot", str(tmp_path / "c.png")]) == 0
    printed = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1:] for line in printed.out.splitlines()[3:6]}
    assert rows == {"ours": ["80.0", "90.0", "95.0"], "paper": ["84.4", "95.2", "97.5"], "diff": ["-4.4", "-5.2", "-2.5"]}
    assert "CPM tuned on PF-Pascal" in printed.out and (tmp_path / "c.png").is_file()
    assert main(["compare", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_demo_picture_stays_out_of_git_status() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/sd4match_demo*.png" in ignored
