"""Engine directories: their format and the runtime that runs them.

The format (standard library only; the exporter depends on it): :mod:`.format` (names, kinds),
:mod:`.manifest` (the schema of ``manifest.json``), :mod:`.directory` (reading, writing and
verifying a directory). The runtime: :mod:`.runtime` (the feature backend over an engine's
graphs, :func:`~.runtime.open_engine`) with its runners :mod:`.onnxrt` and :mod:`.tensorrt`.
Importing this package loads only the format.
"""

from .directory import is_engine_directory, read_manifest, verify_files, write_manifest
from .format import ContextMode, EngineKind, EngineRuntime, GraphName, Precision
from .manifest import EngineManifest, FileEntry, GraphEntry, TensorRTInfo, TensorSpec

__all__ = [
    "ContextMode",
    "EngineKind",
    "EngineManifest",
    "EngineRuntime",
    "FileEntry",
    "GraphEntry",
    "GraphName",
    "Precision",
    "TensorRTInfo",
    "TensorSpec",
    "is_engine_directory",
    "read_manifest",
    "verify_files",
    "write_manifest",
]
