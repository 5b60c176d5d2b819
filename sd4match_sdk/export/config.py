"""The options of an export (:class:`ExportConfig`) and the exporter's own constants.

The vocabulary of the files an export writes (graph, file and axis names, kinds, precisions)
lives in :mod:`sd4match_sdk.engine.format`, shared with the runtime and the C++ consumer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FeatureConfig
from ..engine.format import EngineKind, Precision
from ..errors import ConfigError
from .attention import DEFAULT_QUERY_CHUNK

__all__ = ["DEFAULT_OPSET", "EXTERNAL_DATA_THRESHOLD", "ExportConfig"]

#: ONNX protobufs cannot exceed 2 GiB: larger graphs keep their weights in ``<graph>.onnx.data``.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # 2 GiB minus headroom for the graph itself
#: Opset of the exported graphs (ONNX Runtime >= 1.14 and TensorRT 10 read it).
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how (the options of ``sd4match-export``).

    Attributes:
        model: SD 2.1 diffusers directory or hub id.
        prompt: prompt file, a text, or ``None`` (empty text prompt).
        out: engine directory to write.
        engine: ``onnx`` or ``trt``.
        dtype: precision of the UNet graph.
        max_batch: largest image batch one UNet/VAE call takes (TensorRT profile maximum; the
            Python backends split larger requests into chunks of this size).
        opt_batch: the batch TensorRT tunes for (``None``: 2, one pair).
        opset: ONNX opset.
        dino: DINOv2 directory or hub id (CPM prompts).
        categories: categories of a ``{category}`` text prompt (baked as a context table).
        feature: image size, timestep and ensemble baked into the graphs.
        overwrite: replace an existing engine directory.
        external_data_threshold: graphs whose weights exceed this many bytes store them in
            ``<graph>.onnx.data`` (tests lower it to exercise the path on tiny models).
        workspace_gib: TensorRT builder workspace limit.
        attention_chunk: query rows per attention chunk in the UNet graph (0: no chunking);
            bounds the attention matrices ONNX Runtime materialises (see ``attention.py``).
    """

    model: str
    out: str
    prompt: str | None = None
    engine: EngineKind = EngineKind.ONNX
    dtype: Precision = Precision.FP32
    max_batch: int = 16
    opt_batch: int | None = None
    opset: int = DEFAULT_OPSET
    dino: str | None = None
    categories: tuple[str, ...] = ()
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    overwrite: bool = False
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
    workspace_gib: float = 8.0
    attention_chunk: int = DEFAULT_QUERY_CHUNK

    def __post_init__(self) -> None:
        for name, enum in (("engine", EngineKind), ("dtype", Precision)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                known = ", ".join(e.value for e in enum)
                raise ConfigError(f"unknown {name} {value!r}; choose one of: {known}") from None
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1 (got {self.max_batch})")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch must lie in [1, max_batch={self.max_batch}] (got {self.opt_batch})")
        if not 14 <= self.opset <= 23:
            raise ConfigError(f"opset must lie in [14, 23] (got {self.opset}); 18 is the tested default")
        if self.attention_chunk < 0:
            raise ConfigError(f"attention_chunk must be >= 0 (0 disables chunking; got {self.attention_chunk})")
        object.__setattr__(self, "categories", tuple(self.categories))
        if len(set(self.categories)) != len(self.categories):
            raise ConfigError(f"categories must be unique (got {list(self.categories)})")

    @property
    def tuned_batch(self) -> int:
        """The batch TensorRT optimises for: ``opt_batch``, else one pair (2), capped by max_batch."""
        return self.opt_batch or min(2, self.max_batch)
