"""``sd4match-export``: the CLI writes an engine (the ``engine_single`` fixture runs it) and maps errors."""

from __future__ import annotations

import json

import pytest

from sd4match_sdk.export.cli import build_parser, default_dtype, main


def test_cli_writes_an_engine(engine_single):
    data = json.loads((engine_single / "manifest.json").read_text())
    assert data["prompt_kind"] == "single" and data["max_batch"] == 4 and data["image_size"] == 256
    assert (engine_single / "unet.onnx").is_file() and (engine_single / "vae_encoder.onnx").is_file()


def test_non_empty_output_needs_overwrite(engine_single, export_tiny_sd, capsys):
    code = main(["--model", str(export_tiny_sd), "--out", str(engine_single), "--quiet"])
    assert code == 2
    assert "is not empty" in capsys.readouterr().err
    assert (engine_single / "manifest.json").is_file()  # untouched


def test_missing_model(tmp_path, capsys):
    code = main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e"), "--quiet"])
    assert code == 2
    assert "could not load Stable Diffusion 2.1" in capsys.readouterr().err


def test_bad_options(tmp_path, export_tiny_sd, capsys):
    assert main(["--model", str(export_tiny_sd), "--out", str(tmp_path / "e"), "--max-batch", "0"]) == 2
    assert "max_batch must be >= 1" in capsys.readouterr().err
    assert main(["--model", str(export_tiny_sd), "--out", str(tmp_path / "e"), "--categories", "cat,dog"]) == 2
    assert "--categories applies only" in capsys.readouterr().err
    assert (
        main(["--model", str(export_tiny_sd), "--prompt", "a photo of a {category}", "--out", str(tmp_path / "e")]) == 2
    )
    assert "pass the categories" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "e"), "--plans-only"]) == 2
    assert "pass --engine trt" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_parser_choices():
    parser = build_parser()
    args = parser.parse_args(["--out", "d"])
    assert (args.engine, default_dtype(args.engine), args.max_batch, args.opset, args.image_size, args.timestep, args.ensemble) == (
        "onnx",
        "fp32",
        16,
        18,
        768,
        50,
        8,
    )
    assert args.dtype is None and default_dtype("trt") == "fp16"  # TensorRT plans default to fp16
    assert parser.parse_args(["--out", "d", "--engine", "trt", "--dtype", "fp32"]).dtype == "fp32"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "d", "--engine", "openvino"])


class TestOverwrite:
    """--overwrite replaces only a directory that holds an engine (docs/design.md §13.15)."""

    def _export(self, model, out, *extra):
        return main(["--model", str(model), "--out", str(out), "--image-size", "128", "--ensemble", "1", "--quiet", *extra])

    def test_a_directory_of_other_files_is_never_deleted(self, export_tiny_sd, tmp_path, capsys):
        out = tmp_path / "photos"
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"precious")
        assert self._export(export_tiny_sd, out, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "does not hold only an engine (holiday.jpg); --overwrite replaces engine directories only" in err
        assert (out / "holiday.jpg").read_bytes() == b"precious"

    def test_an_engine_with_foreign_files_is_refused_untouched(self, engine_single, copy_engine, export_tiny_sd, capsys):
        engine = copy_engine(engine_single)
        (engine / "notes.txt").write_text("mine")
        before = sorted(p.name for p in engine.iterdir())
        assert self._export(export_tiny_sd, engine, "--overwrite") == 2
        assert "does not hold only an engine (notes.txt)" in capsys.readouterr().err
        assert sorted(p.name for p in engine.iterdir()) == before

    @pytest.mark.parametrize("where", ["{file}/engine", "{file}"], ids=["below-a-file", "is-a-file"])
    def test_out_that_cannot_be_a_directory(self, where, export_tiny_sd, tmp_path, capsys):
        (tmp_path / "taken").write_text("a regular file")
        assert self._export(export_tiny_sd, where.format(file=tmp_path / "taken")) == 2
        err = capsys.readouterr().err
        assert "is a file, not a folder; choose another directory" in err and "Traceback" not in err

    def test_overwriting_a_killed_export_hashes_only_what_the_export_wrote(self, engine_euler):
        data = json.loads((engine_euler / "manifest.json").read_text())  # the fixture overwrote a killed export
        assert sorted(data["files"]) == ["unet.onnx", "vae_encoder.onnx"] and data["image_size"] == 128
        assert (engine_euler / "timing.cache").is_file()  # kept, and not listed
