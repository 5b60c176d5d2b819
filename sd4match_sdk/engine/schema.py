"""The checks a ``manifest.json`` passes before any of its values is used (docs/design.md §13.15).

An engine directory is a file from someone else. :func:`check_manifest_data` checks the parsed
JSON field by field (type and range), that every path it names stays inside the directory
(relative, no ``..``: :func:`check_relative_path`), that the prompt kind, the context mode and the
categories agree, that the graphs a context mode needs are present with exactly the inputs the
runtime feeds and the outputs it reads, and that their shapes agree with the manifest's image
size, ensemble, latent and feature shapes. :func:`compare_graph_io` then compares the manifest
with the inputs and outputs a graph file really declares. Both raise
:class:`~sd4match_sdk.errors.EngineError`; the caller adds the file name. Standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import EngineError
from .format import BATCH_DIM, FORMAT_VERSION, PAIRS_DIM, PROMPT_KINDS, ContextMode, EngineKind, GraphName, Precision

__all__ = ["REQUIRED_TENSORS", "TensorTuple", "check_manifest_data", "check_relative_path", "compare_graph_io"]

#: ``(name, numpy dtype name, shape)``; a string in the shape is a dynamic axis (``None``: unnamed).
TensorTuple = tuple[str, str, tuple[Any, ...]]

#: Per graph: the inputs the runtime feeds, with their dtypes, and the outputs it reads. The UNet
#: also takes ``class_index`` (table) or ``context`` (input), see :func:`_required_inputs`.
REQUIRED_TENSORS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    GraphName.VAE_ENCODER: ({"pixels": "float32", "eps_vae": "float32"}, {"latents": "float32"}),
    GraphName.UNET: ({"latents": "float32", "noise": "float32"}, {"features": "float32"}),
    GraphName.PROMPT_NET: ({"dino_source": "float32", "dino_target": "float32"}, {"context": "float32"}),
}
_MODE_INPUT = {ContextMode.TABLE: ("class_index", "int64"), ContextMode.INPUT: ("context", "float32")}
_DTYPES = ("float32", "float16", "int64", "int32")
_REQUIRED_FIELDS = (
    "format_version", "sdk_version", "engine", "precision", "prompt_kind", "context_mode", "image_size", "timestep",
    "ensemble", "max_batch", "opset", "latent_shape", "feature_shape", "scaling_factor", "noise_coefficients",
    "graphs", "files",
)  # fmt: skip
_MODES_OF_KIND = {"text": ("fixed", "table"), "single": ("fixed",), "class": ("table",), "cpm": ("input",)}


def _fail(field: str, problem: str) -> EngineError:
    return EngineError(f"field {field!r} {problem}; the manifest was edited or damaged: re-export the engine with sd4match-export")


def _int(data: dict, field: str, minimum: int, maximum: int | None = None) -> int:
    value = data.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise _fail(field, f"must be an integer {bound} (got {value!r})")
    return value


def _str(data: dict, field: str, choices: Sequence[str] | None = None, optional: bool = False) -> str | None:
    value = data.get(field)
    if optional and value is None:
        return None
    if not isinstance(value, str) or (choices is not None and value not in choices):
        allowed = f" (one of {', '.join(choices)})" if choices is not None else ""
        raise _fail(field, f"must be a string{allowed} (got {value!r})")
    return value


def _float(data: dict, field: str, low: float, high: float) -> float:
    value = data.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not low <= value <= high:
        raise _fail(field, f"must be a finite number in [{low}, {high}] (got {value!r})")
    return float(value)


def _dict(data: dict, field: str, optional: bool = False) -> dict:
    value = data.get(field, {} if optional else None)
    if not isinstance(value, dict):
        raise _fail(field, f"must be a JSON object (got {type(value).__name__})")
    return value


def _shape(data: dict, field: str, length: int) -> tuple[int, ...]:
    value = data.get(field)
    ok = isinstance(value, list) and len(value) == length and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise _fail(field, f"must be a list of {length} positive integers (got {value!r})")
    return tuple(value)


def check_relative_path(name: Any, field: str = "files") -> str:
    """``name`` when it is a relative POSIX path that stays inside the engine directory.

    Raises:
        EngineError: not a string, empty, absolute (``/etc/passwd``, ``C:\\x``), with a backslash,
            a NUL, or a ``.``/``..``/empty component (``../x``, ``a//b``). Nothing is read.
    """
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise _fail(field, f"names the path {name!r}; engine paths are non-empty relative POSIX paths")
    posix = PurePosixPath(name)
    if posix.is_absolute() or PureWindowsPath(name).drive or any(p in ("", ".", "..") for p in name.split("/")):
        raise _fail(field, f"names the path {name!r}, which leaves the engine directory; engine paths are relative, without '..'")
    return name


def _check_files(data: dict) -> dict:
    files = _dict(data, "files")
    for name, entry in files.items():
        check_relative_path(name, "files")
        if not isinstance(entry, dict) or set(entry) != {"sha256", "bytes"}:
            raise _fail(f"files.{name}", f"must be {{'sha256': hex, 'bytes': int}} (got {entry!r})")
        if not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            raise _fail(f"files.{name}.sha256", f"must be 64 lowercase hex digits (got {entry['sha256']!r})")
        _int(entry, "bytes", 0)
    return files


def _check_spec(spec: Any, field: str) -> TensorTuple:
    if not isinstance(spec, dict):
        raise _fail(field, f"must be a tensor spec object (got {type(spec).__name__})")
    name = _str(spec, "name")
    dtype = _str(spec, "dtype", _DTYPES)
    shape = spec.get("shape")
    dims_ok = isinstance(shape, list) and all(
        (isinstance(d, int) and not isinstance(d, bool) and d > 0) or d in (BATCH_DIM, PAIRS_DIM) for d in shape
    )
    if not dims_ok:
        raise _fail(f"{field}.shape", f"must list positive integers or the axes '{BATCH_DIM}'/'{PAIRS_DIM}' (got {shape!r})")
    _str(spec, "description", optional=True)
    return name, dtype, tuple(shape)  # type: ignore[return-value]


def _required_inputs(graph: str, mode: str) -> dict[str, str]:
    inputs = dict(REQUIRED_TENSORS[graph][0])
    if graph == GraphName.UNET and mode in _MODE_INPUT:
        name, dtype = _MODE_INPUT[ContextMode(mode)]
        inputs[name] = dtype
    return inputs


def _check_graph(name: str, entry: Any, mode: str, files: dict) -> dict[str, TensorTuple]:
    """One graph entry: precision, file names (listed in ``files``), exactly the required inputs."""
    field = f"graphs.{name}"
    if not isinstance(entry, dict):
        raise _fail(field, f"must be a JSON object (got {type(entry).__name__})")
    _str(entry, "precision", tuple(Precision))
    for key, optional in (("onnx", False), ("onnx_data", True), ("plan", True)):
        path = _str(entry, key, optional=optional)
        if path is not None and check_relative_path(path, f"{field}.{key}") not in files:
            raise _fail(f"{field}.{key}", f"names {path!r}, which 'files' does not list (so it could not be verified)")
    specs: dict[str, TensorTuple] = {}
    for side in ("inputs", "outputs"):
        items = entry.get(side)
        if not isinstance(items, list):
            raise _fail(f"{field}.{side}", f"must be a list of tensor specs (got {type(items).__name__})")
        for i, item in enumerate(items):
            spec = _check_spec(item, f"{field}.{side}[{i}]")
            if f"{side}:{spec[0]}" in specs:
                raise _fail(f"{field}.{side}", f"lists {spec[0]!r} twice")
            specs[f"{side}:{spec[0]}"] = spec
    inputs = {k.split(":", 1)[1]: v for k, v in specs.items() if k.startswith("inputs:")}
    required, outputs = _required_inputs(name, mode), REQUIRED_TENSORS[name][1]
    found_outputs = {k.split(":", 1)[1]: v for k, v in specs.items() if k.startswith("outputs:")}
    if set(inputs) != set(required) or not set(outputs) <= set(found_outputs):
        raise _fail(
            field,
            f"has inputs {sorted(inputs)} and outputs {sorted(found_outputs)}; a '{mode}' engine's {name} takes "
            f"exactly {sorted(required)} and gives {sorted(outputs)}",
        )
    for tensor, dtype in {**required, **outputs}.items():
        spec = inputs.get(tensor) or found_outputs[tensor]
        if spec[1] != dtype:
            raise _fail(f"{field}.{tensor}", f"has dtype {spec[1]}; the runtime exchanges {dtype}")
    return {**{f"in:{k}": v for k, v in inputs.items()}, **{f"out:{k}": v for k, v in found_outputs.items()}}


def _expect_shape(field: str, spec: TensorTuple, expected: tuple[Any, ...]) -> None:
    if tuple(spec[2]) != expected:
        raise _fail(field, f"has shape {list(spec[2])}, but the manifest's sizes give {list(expected)}")


def _check_shapes(data: dict, graphs: dict[str, dict[str, TensorTuple]], mode: str) -> None:
    """Graph tensor shapes against image_size, ensemble, latent_shape, feature_shape (and each other)."""
    size, ensemble = data["image_size"], data["ensemble"]
    latent, feature = tuple(data["latent_shape"]), tuple(data["feature_shape"])
    if latent[1:] != (size // 8, size // 8) or feature[1:] != (size // 16, size // 16):
        raise _fail("latent_shape/feature_shape", f"{list(latent)}/{list(feature)} do not fit image_size {size} (S/8, S/16)")
    vae, unet = graphs[GraphName.VAE_ENCODER], graphs[GraphName.UNET]
    b = BATCH_DIM
    _expect_shape("graphs.vae_encoder.pixels", vae["in:pixels"], (b, 3, size, size))
    _expect_shape("graphs.vae_encoder.eps_vae", vae["in:eps_vae"], (b, *latent))
    _expect_shape("graphs.vae_encoder.latents", vae["out:latents"], (b, *latent))
    _expect_shape("graphs.unet.latents", unet["in:latents"], (b, *latent))
    _expect_shape("graphs.unet.noise", unet["in:noise"], (b, ensemble, *latent))
    _expect_shape("graphs.unet.features", unet["out:features"], (b, *feature))
    if mode == ContextMode.TABLE:
        _expect_shape("graphs.unet.class_index", unet["in:class_index"], (b,))
    if mode == ContextMode.INPUT:
        context = unet["in:context"][2]
        if len(context) != 3 or context[0] != b:
            raise _fail("graphs.unet.context", f"has shape {list(context)}; expected ['{b}', L, D]")
        _expect_shape("graphs.prompt_net.context", graphs[GraphName.PROMPT_NET]["out:context"], (PAIRS_DIM, *context[1:]))


def _check_prompt(data: dict) -> str:
    kind = _str(data, "prompt_kind", PROMPT_KINDS)
    mode = _str(data, "context_mode", tuple(ContextMode))
    if mode not in _MODES_OF_KIND[kind]:  # type: ignore[index]
        raise _fail("context_mode", f"is {mode!r}, which a {kind} prompt cannot have (it has {', '.join(_MODES_OF_KIND[kind])})")  # type: ignore[index]
    categories = data.get("categories", [])
    ok = isinstance(categories, list) and all(isinstance(c, str) and c for c in categories) and len(set(categories)) == len(categories)
    if not ok or (mode == ContextMode.TABLE) != bool(categories):
        need = "a non-empty list of unique names" if mode == ContextMode.TABLE else "empty"
        raise _fail("categories", f"must be {need} for context_mode {mode!r} (got {categories!r})")
    return mode  # type: ignore[return-value]


def _check_tensorrt(data: dict) -> None:
    info = data.get("tensorrt")
    if info is None:
        return
    if not isinstance(info, dict):
        raise _fail("tensorrt", f"must be a JSON object (got {type(info).__name__})")
    _str(info, "version")
    capability = _str(info, "compute_capability")
    if not re.fullmatch(r"\d+\.\d+", capability or ""):
        raise _fail("tensorrt.compute_capability", f"must look like '8.9' (got {capability!r})")
    _str(info, "device_name", optional=True)
    if not isinstance(info.get("strongly_typed", True), bool) or not isinstance(info.get("profiles", {}), dict):
        raise _fail("tensorrt", "has a strongly_typed that is not true/false or profiles that are not an object")
    unknown = set(info) - {"version", "compute_capability", "device_name", "strongly_typed", "profiles"}
    if unknown:
        raise _fail("tensorrt", f"has unknown keys {sorted(unknown)}")


def check_manifest_data(data: Any) -> None:
    """Check a parsed ``manifest.json`` before any value is used (see the module docstring).

    Raises:
        EngineError: the first problem found, naming the field, what it must be and the fix.
    """
    if not isinstance(data, dict):
        raise EngineError(f"the manifest must be a JSON object (got {type(data).__name__}); re-export the engine")
    # 1. Scalars: kinds, sizes, settings
    missing = [field for field in _REQUIRED_FIELDS if field not in data]
    if missing:
        raise EngineError(
            f"field(s) {', '.join(missing)} missing: the manifest is incomplete or malformed; re-export the engine "
            "with sd4match-export"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise _fail("format_version", f"is {data.get('format_version')!r}; this SDK reads version {FORMAT_VERSION}")
    _str(data, "sdk_version")
    _str(data, "engine", tuple(EngineKind))
    _str(data, "precision", tuple(Precision))
    mode = _check_prompt(data)
    _int(data, "image_size", 64)
    if data["image_size"] % 64:
        raise _fail("image_size", f"must be a multiple of 64 (got {data['image_size']})")
    _int(data, "timestep", 0, 999)
    _int(data, "ensemble", 1)
    _int(data, "max_batch", 1)
    _int(data, "opset", 1)
    if "attention_query_chunk" in data:
        _int(data, "attention_query_chunk", 0)
    _shape(data, "latent_shape", 3)
    _shape(data, "feature_shape", 3)
    _float(data, "scaling_factor", 1e-6, 1e6)
    coefficients = data.get("noise_coefficients")
    if not (isinstance(coefficients, list) and len(coefficients) == 2):
        raise _fail("noise_coefficients", f"must be [sqrt(abar_t), sqrt(1 - abar_t)] (got {coefficients!r})")
    a, b = (_float({"c": c}, "c", 0.0, 1.0) for c in coefficients)
    if abs(a * a + b * b - 1) > 1e-4:
        raise _fail("noise_coefficients", f"{coefficients} are not sqrt(abar_t), sqrt(1 - abar_t) (squares sum to {a * a + b * b:.6f}, not 1)")
    # 2. Files, graphs, shapes, the TensorRT section, free-form sections
    files = _check_files(data)
    graphs = _dict(data, "graphs")
    needed = {GraphName.VAE_ENCODER, GraphName.UNET} | ({GraphName.PROMPT_NET} if mode == ContextMode.INPUT else set())
    if set(graphs) != {str(g) for g in needed}:
        raise _fail("graphs", f"lists {sorted(graphs)}; a '{mode}' engine has exactly {sorted(str(g) for g in needed)}")
    checked = {name: _check_graph(name, entry, mode, files) for name, entry in graphs.items()}
    _check_shapes(data, checked, mode)
    _check_tensorrt(data)
    for field in ("libraries", "preprocessing", "prompt"):
        _dict(data, field, optional=True)
    for field in ("model", "created"):
        if field in data:
            _str(data, field)


def _same_dim(declared: Any, actual: Any) -> bool:
    if isinstance(declared, str):  # a dynamic axis: the file must leave it dynamic too
        return actual is None or isinstance(actual, str) or actual == -1
    return declared == actual


def compare_graph_io(
    graph: str, declared: Sequence[TensorTuple], actual: Sequence[TensorTuple], side: str = "inputs"
) -> None:
    """Refuse a graph file whose inputs (or outputs) differ from the manifest's.

    Args:
        graph: the graph name, for the message.
        declared: the manifest's tensors.
        actual: the file's tensors (an ONNX graph's, a TensorRT plan's); ``None`` or ``-1`` is an
            unnamed dynamic axis.
        side: ``"inputs"`` (names must match exactly) or ``"outputs"`` (the declared ones must exist).

    Raises:
        EngineError: a name, dtype or shape differs (the caller adds the file name).
    """
    mine, theirs = {t[0]: t for t in declared}, {t[0]: t for t in actual}
    names_differ = set(mine) != set(theirs) if side == "inputs" else not set(mine) <= set(theirs)
    if names_differ:
        raise EngineError(
            f"its {graph} {side} are {sorted(theirs)} but the manifest says {sorted(mine)}: the manifest was edited "
            "or belongs to another export. Re-export the engine with sd4match-export"
        )
    for name, (_, dtype, shape) in mine.items():
        _, real_dtype, real_shape = theirs[name]
        if real_dtype != dtype or len(real_shape) != len(shape) or not all(map(_same_dim, shape, real_shape)):
            raise EngineError(
                f"its {graph} {side[:-1]} {name!r} is {real_dtype} {list(real_shape)} but the manifest says {dtype} "
                f"{list(shape)} (e.g. an edited ensemble or image_size): re-export the engine with sd4match-export"
            )
