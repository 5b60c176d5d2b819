"""Export SD4Match features with a baked prompt to ONNX graphs and TensorRT plans (docs/design.md §13.10).

``sd4match-export`` (:mod:`.cli`) and :func:`export_engine` write an engine directory;
``Matcher.from_pretrained(DIR)`` runs it with ONNX Runtime or TensorRT. The exporter depends on
the engine *format* (:mod:`sd4match_sdk.engine.format`, ``.manifest``, ``.directory``), never on
the engine runtime. Modules:

* :mod:`.config` -- :class:`ExportConfig`, the options of an export;
* :mod:`.graphs` -- the export-shaped modules (VAE encoder, UNet with baked context, CPM prompt net);
* :mod:`.attention`, :mod:`.precision` -- the chunked export attention and the float16 UNet with
  float32 attention softmax and normalisations;
* :mod:`.onnx` -- one graph to ONNX (+ external data over 2 GiB) and its tensor specs;
* :mod:`.exporters` -- one function per graph of an engine;
* :mod:`.describe` -- the tensor, preprocessing and library descriptions the manifest carries;
* :mod:`.plans` -- TensorRT 10+ plans: settings from the manifest, the build;
* :mod:`.writer` -- :func:`export_engine`, which puts it all together.

Importing this package loads neither onnx nor TensorRT; they are imported when used.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from ..engine.directory import read_manifest, verify_files
    from ..engine.format import ContextMode, EngineKind, GraphName, Precision
    from ..engine.manifest import EngineManifest
    from .config import ExportConfig
    from .plans import add_tensorrt_plans
    from .writer import export_engine

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "read_manifest": "..engine.directory",
        "verify_files": "..engine.directory",
        "ContextMode": "..engine.format",
        "EngineKind": "..engine.format",
        "GraphName": "..engine.format",
        "Precision": "..engine.format",
        "EngineManifest": "..engine.manifest",
        "ExportConfig": ".config",
        "add_tensorrt_plans": ".plans",
        "export_engine": ".writer",
    },
)

__all__ = [
    "ContextMode",
    "EngineKind",
    "EngineManifest",
    "ExportConfig",
    "GraphName",
    "Precision",
    "add_tensorrt_plans",
    "export_engine",
    "read_manifest",
    "verify_files",
]
