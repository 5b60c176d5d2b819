"""Feature backends: what turns images + noise + prompt into raw SD feature maps.

:mod:`.base` holds the protocol every backend fulfils, :mod:`.batch` the one batch assembly
they all use, :mod:`.torch_backend` the PyTorch reference. Engine directories (ONNX Runtime,
TensorRT) are run by :mod:`sd4match_sdk.engine.runtime`, behind the same protocol.
"""

from .base import FeatureBackend
from .batch import ImageBatch
from .torch_backend import TorchFeatureBackend

__all__ = ["FeatureBackend", "ImageBatch", "TorchFeatureBackend"]
