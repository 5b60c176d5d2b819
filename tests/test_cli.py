"""The `sd4match` command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sd4match_sdk.cli import main, parse_points
from sd4match_sdk.errors import PointsError


def test_parse_points() -> None:
    assert parse_points("1,2;3.5, 4") == [[1.0, 2.0], [3.5, 4.0]]
    with pytest.raises(PointsError, match="entry 1"):
        parse_points("1,2;3")


def test_match_writes_json_and_picture(tiny_sd: Path, demo_pair, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, js = tmp_path / "m.png", tmp_path / "m.json"
    code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "100,200;500,500", "--model", str(tiny_sd),
                 "--seed", "0", "--ensemble", "1", "--out", str(out), "--json", str(js)])
    assert code == 0
    payload = json.loads(js.read_text())
    assert len(payload["points"]) == 2 and payload["query"] == [[100.0, 200.0], [500.0, 500.0]]
    import cv2

    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] == 480


def test_errors_exit_2_with_message(tiny_sd: Path, demo_pair, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["match", str(tmp_path / "missing.jpg"), str(demo_pair[1]), "--points", "1,2", "--model", str(tiny_sd)])
    assert code == 2
    assert "image file not found" in capsys.readouterr().err
    code = main(["match", str(demo_pair[0]), str(demo_pair[1]), "--points", "5000,2", "--model", str(tiny_sd)])
    assert code == 2
    assert "outside the image" in capsys.readouterr().err


def test_demo_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out), "--ensemble", "1"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "RANDOM weights" in text and "--model" in text


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
