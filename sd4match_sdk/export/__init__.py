"""Export SD4Match features with a baked prompt to ONNX graphs and TensorRT plans (SPEC 13).

``sd4match-export`` (:mod:`.cli`) and :func:`export_engine` write an engine directory;
``Matcher.from_pretrained(DIR)`` runs it with ONNX Runtime or TensorRT. Modules:

* :mod:`.config` -- engine kinds, precisions, graph/file names, :class:`ExportConfig`;
* :mod:`.graphs` -- the export-shaped modules (VAE encoder, UNet with baked context, CPM prompt net);
* :mod:`.precision` -- the float16 UNet with float32 attention softmax and normalisations;
* :mod:`.onnx` -- one graph to ONNX (+ external data over 2 GiB) and its tensor specs;
* :mod:`.tensorrt` -- TensorRT 10+ plans, optimization profiles, plan compatibility checks;
* :mod:`.manifest` -- ``manifest.json``: schema, read/write, sha256 and version checks;
* :mod:`.engine` -- :func:`export_engine`, which puts it all together.

Importing this package loads neither onnx nor TensorRT; they are imported when used.
"""

from .config import ContextMode, EngineKind, ExportConfig, GraphName, Precision
from .manifest import EngineManifest, read_manifest, verify_files

__all__ = [
    "ContextMode",
    "EngineKind",
    "EngineManifest",
    "ExportConfig",
    "GraphName",
    "Precision",
    "export_engine",
    "read_manifest",
    "verify_files",
]


def export_engine(config: ExportConfig, log=print, components=None) -> EngineManifest:
    """Write an engine directory; see :func:`sd4match_sdk.export.engine.export_engine`."""
    from .engine import export_engine as _export_engine

    return _export_engine(config, log, components)
