"""Feature backends: what turns images + noise + prompt into raw SD feature maps.

:mod:`.base` holds the protocol every backend fulfils, :mod:`.batch` the one batch assembly
they all use, :mod:`.torch_backend` the PyTorch reference, :mod:`.image` one image's features
and their file. Engine directories (ONNX Runtime,
TensorRT) are run by :mod:`sd4match_sdk.engine.runtime`, behind the same protocol.
"""

from .base import FeatureBackend
from .batch import ImageBatch
from .image import ImageFeatures
from .torch_backend import TorchFeatureBackend

__all__ = ["FeatureBackend", "ImageBatch", "ImageFeatures", "TorchFeatureBackend"]
