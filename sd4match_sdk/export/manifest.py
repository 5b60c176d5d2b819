"""``manifest.json``: what an engine directory holds, and the checks made before it runs.

The manifest (SPEC 13, "Engines") is written last by the exporter, so a directory without one is
an unfinished export. It records the format version, the SDK version, the prompt (kind,
categories, how the context reaches the UNet), the feature settings baked into the graphs
(image size, timestep, ensemble), the precision, every graph's inputs and outputs (names,
dtypes, shapes with named dynamic axes), every file's sha256 and size, the library versions,
and for TensorRT the version and the GPU compute capability the plans were built for.

Readers refuse, with an :class:`~sd4match_sdk.errors.EngineError` that says what to rebuild:
an unknown format version, a manifest written by a newer or incompatible SDK, and a file whose
sha256 differs from the manifest. The schema is documented in ``docs/export.md``; this module
reads only the standard library, so the checks cost nothing beyond hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import EngineError

__all__ = [
    "ENGINE_FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "EngineManifest",
    "FileEntry",
    "GraphEntry",
    "TensorRTInfo",
    "TensorSpec",
    "check_sdk_compatible",
    "file_sha256",
    "parse_version",
    "read_manifest",
    "verify_files",
    "write_manifest",
]

MANIFEST_FILE = "manifest.json"
#: Marker that tells an engine manifest from any other JSON file.
ENGINE_FORMAT = "sd4match-engine"
#: The manifest schema this SDK writes and reads. Bump it when a reader of the old schema would
#: misread the new one (renamed tensors, new required inputs, changed semantics).
FORMAT_VERSION = 1
_REEXPORT = "re-export it with this SDK: sd4match-export --model ... --prompt ... --out DIR"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: the tensor name in the ONNX graph / TensorRT plan.
        dtype: ``float32``, ``float16`` or ``int64`` (numpy names).
        shape: sizes; a string is a dynamic axis (``"batch"``, ``"pairs"``).
        description: layout, meaning and value range, for humans and the C++ consumer.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    description: str = ""

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """``{axis: name}`` of the dynamic axes."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every dynamic axis replaced from ``sizes``."""
        return tuple(sizes[d] if isinstance(d, str) else int(d) for d in self.shape)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("description", ""))


@dataclass(frozen=True)
class GraphEntry:
    """One graph of the engine and the files that hold it.

    Attributes:
        precision: ``fp32`` or ``fp16`` (the compute precision; inputs/outputs are float32 or int64).
        onnx: the ONNX file.
        onnx_data: its external weights file (graphs over 2 GiB), else ``None``.
        plan: the TensorRT plan built from it, else ``None``.
        inputs, outputs: tensor specs, in graph order.
    """

    precision: str
    onnx: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_data: str | None = None
    plan: str | None = None

    def files(self, runtime: str) -> list[str]:
        """The files a runtime opens: ``onnxruntime`` -> ONNX (+ data), ``tensorrt`` -> the plan."""
        if runtime == "tensorrt":
            return [self.plan] if self.plan else []
        return [self.onnx] + ([self.onnx_data] if self.onnx_data else [])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphEntry:
        return cls(
            precision=data["precision"],
            onnx=data["onnx"],
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            onnx_data=data.get("onnx_data"),
            plan=data.get("plan"),
        )


@dataclass(frozen=True)
class FileEntry:
    """A file of the engine directory: its sha256 (hex) and size in bytes."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class TensorRTInfo:
    """Where TensorRT plans were built; a plan runs only with the same TensorRT and GPU.

    Attributes:
        version: ``tensorrt.__version__`` at build time.
        compute_capability: ``"major.minor"`` of the GPU the plans were built on.
        device_name: that GPU's name (informational).
        strongly_typed: the network followed the ONNX types (fp16 graphs keep their fp32 islands).
        profiles: ``{graph: {input: {"min": shape, "opt": shape, "max": shape}}}``.
    """

    version: str
    compute_capability: str
    device_name: str = ""
    strongly_typed: bool = True
    profiles: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineManifest:
    """The content of ``manifest.json`` (schema version :data:`FORMAT_VERSION`).

    Attributes:
        sdk_version: the SDK that wrote it.
        engine: ``onnx`` or ``trt``.
        precision: precision of the UNet graph.
        prompt_kind: ``text``, ``single``, ``class`` or ``cpm``.
        context_mode: ``fixed``, ``table`` or ``input`` (see ``ContextMode``).
        categories: the class-index order of a context table (else empty).
        image_size, timestep, ensemble: feature settings baked into the graphs.
        max_batch: largest image batch per call (TensorRT profile maximum).
        opset: ONNX opset.
        attention_query_chunk: query rows per attention chunk in the UNet graph (0: none).
        latent_shape: ``[4, S/8, S/8]``: one image's VAE/diffusion noise draw.
        feature_shape: ``[C, S/16, S/16]``: one image's feature map.
        scaling_factor: VAE latent scaling (0.18215).
        noise_coefficients: ``[sqrt(abar_t), sqrt(1 - abar_t)]`` used by ``add_noise`` in the graph.
        graphs: ``{name: GraphEntry}``.
        files: ``{relative path: FileEntry}`` for every file of the directory but the manifest.
        libraries: versions of the libraries that wrote the files.
        preprocessing: how the SDK turns images into graph inputs (documented for C++ callers).
        prompt: free-form prompt provenance (source file, text, model id, trained timestep).
        model: the SD model the graphs came from.
        created: UTC time of the export (ISO 8601).
        tensorrt: where the plans were built (``trt`` engines only).
        format_version: the schema version.
    """

    sdk_version: str
    engine: str
    precision: str
    prompt_kind: str
    context_mode: str
    categories: tuple[str, ...]
    image_size: int
    timestep: int
    ensemble: int
    max_batch: int
    opset: int
    latent_shape: tuple[int, int, int]
    feature_shape: tuple[int, int, int]
    scaling_factor: float
    noise_coefficients: tuple[float, float]
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    libraries: dict[str, str]
    attention_query_chunk: int = 0
    preprocessing: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    created: str = ""
    tensorrt: TensorRTInfo | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {"format": ENGINE_FORMAT, **asdict(self)}
        if self.tensorrt is None:
            data.pop("tensorrt")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineManifest:
        trt = data.get("tensorrt")
        return cls(
            sdk_version=data["sdk_version"],
            engine=data["engine"],
            precision=data["precision"],
            prompt_kind=data["prompt_kind"],
            context_mode=data["context_mode"],
            categories=tuple(data.get("categories", ())),
            image_size=int(data["image_size"]),
            timestep=int(data["timestep"]),
            ensemble=int(data["ensemble"]),
            max_batch=int(data["max_batch"]),
            opset=int(data["opset"]),
            latent_shape=tuple(data["latent_shape"]),  # type: ignore[arg-type]
            feature_shape=tuple(data["feature_shape"]),  # type: ignore[arg-type]
            scaling_factor=float(data["scaling_factor"]),
            noise_coefficients=tuple(data["noise_coefficients"]),  # type: ignore[arg-type]
            graphs={k: GraphEntry.from_dict(v) for k, v in data["graphs"].items()},
            files={k: FileEntry(**v) for k, v in data["files"].items()},
            libraries=dict(data.get("libraries", {})),
            attention_query_chunk=int(data.get("attention_query_chunk", 0)),
            preprocessing=dict(data.get("preprocessing", {})),
            prompt=dict(data.get("prompt", {})),
            model=data.get("model", ""),
            created=data.get("created", ""),
            tensorrt=TensorRTInfo(**trt) if trt else None,
            format_version=int(data["format_version"]),
        )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (engine files reach several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` (or ``"1.2.3.dev0"``, ``"2.0.0rc1"``, ``"1.2"``) -> ``(1, 2, 3)``: leading digits only."""
    parts = []
    for piece in str(version).split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() < len(piece):  # "0rc1": a pre-release suffix ends the numeric part
            break
    if not parts:
        raise EngineError(f"unreadable version {version!r} in the engine manifest; {_REEXPORT}")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def check_sdk_compatible(written: str, running: str = __version__) -> None:
    """Refuse engines from a newer SDK or from another release series.

    Rules (semantic versioning): the writer must not be newer than the reader, and both must
    share the major version (for ``0.x``, the minor version too: 0.x releases may break).

    Raises:
        EngineError: the versions are incompatible.
    """
    w, r = parse_version(written), parse_version(running)
    if w > r:
        raise EngineError(
            f"the engine was written by sd4match-sdk {written}, newer than this SDK ({running}); "
            f"upgrade sd4match-sdk to {written} or newer, or {_REEXPORT}"
        )
    same_series = w[0] == r[0] and (r[0] > 0 or w[1] == r[1])
    if not same_series:
        raise EngineError(
            f"the engine was written by sd4match-sdk {written}, whose engine format this SDK ({running}) "
            f"does not read; {_REEXPORT}"
        )


def read_manifest(engine_dir: str | os.PathLike) -> EngineManifest:
    """Read and check ``manifest.json`` (format marker, format version, SDK version).

    File hashes are checked separately by :func:`verify_files`.

    Raises:
        EngineError: missing or unreadable manifest, unknown format version, incompatible SDK.
    """
    path = Path(engine_dir) / MANIFEST_FILE
    if not path.is_file():
        raise EngineError(
            f"{str(path)!r} not found: {str(engine_dir)!r} is not an engine directory (or the export did not finish)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EngineError(f"cannot read {str(path)!r} ({err}); {_REEXPORT}") from None
    marker = data.get("format") if isinstance(data, dict) else None
    if marker != ENGINE_FORMAT:
        raise EngineError(f"{str(path)!r} is not an sd4match engine manifest (format={marker!r})")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise EngineError(
            f"{str(path)!r} has engine format version {version!r}; this SDK ({__version__}) reads version "
            f"{FORMAT_VERSION}. Use the SDK that wrote it, or {_REEXPORT}"
        )
    check_sdk_compatible(str(data.get("sdk_version", "")))
    try:
        return EngineManifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise EngineError(
            f"{str(path)!r} is incomplete or malformed ({type(err).__name__}: {err}); {_REEXPORT}"
        ) from None


def write_manifest(engine_dir: str | os.PathLike, manifest: EngineManifest) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename): it marks a finished export."""
    engine_dir = Path(engine_dir)
    path = engine_dir / MANIFEST_FILE
    fd, tmp = tempfile.mkstemp(prefix=MANIFEST_FILE, suffix=".tmp", dir=engine_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest.to_dict(), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the manifest is read by other users/tools
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def verify_files(engine_dir: str | os.PathLike, manifest: EngineManifest, names: list[str] | None = None) -> None:
    """Check that files exist with the manifest's size and sha256.

    Args:
        engine_dir: the engine directory.
        manifest: its manifest.
        names: the files to check (default: every file the manifest lists).

    Raises:
        EngineError: a file is missing, not listed in the manifest, or differs from it.
    """
    engine_dir = Path(engine_dir)
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files.get(name)
        path = engine_dir / name
        if entry is None:
            raise EngineError(f"{name!r} is used by the engine but not listed in its manifest; {_REEXPORT}")
        if not path.is_file():
            raise EngineError(f"engine file {str(path)!r} is missing; copy the whole engine directory or {_REEXPORT}")
        size = path.stat().st_size
        if size != entry.bytes:
            found = f"{size} bytes, the manifest says {entry.bytes}"
        else:
            digest = file_sha256(path)
            if digest == entry.sha256:
                continue
            found = f"sha256 {digest}, the manifest says {entry.sha256}"
        raise EngineError(
            f"engine file {str(path)!r} differs from its manifest ({found}): it was modified, truncated "
            f"or belongs to another export. Rebuild the engine directory: {_REEXPORT}"
        )
