"""The schema of ``manifest.json``: what an engine directory holds.

The manifest (docs/design.md §13.10) records the format version, the SDK version, the prompt (kind,
categories, how the context reaches the UNet), the feature settings baked into the graphs
(image size, timestep, ensemble), the precision, every graph's inputs and outputs (names,
dtypes, shapes with named dynamic axes), every file's sha256 and size, the library versions,
and for TensorRT the version and the GPU compute capability the plans were built for.

The schema is documented in ``docs/export.md``. Reading, writing and the checks made before an
engine runs are in :mod:`.directory`; this module holds only the dataclasses and their JSON
form (standard library only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .format import ENGINE_FORMAT, FORMAT_VERSION
from .schema import check_manifest_data

__all__ = [
    "EngineManifest",
    "FileEntry",
    "GraphEntry",
    "TensorRTInfo",
    "TensorSpec",
]


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
        """The manifest of parsed ``manifest.json`` content, checked field by field first.

        Raises:
            EngineError: a field of the wrong type or range, a path that leaves the directory,
                or graphs that do not fit the context mode (:func:`.schema.check_manifest_data`).
        """
        check_manifest_data(data)
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
