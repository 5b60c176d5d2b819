"""The SDK's exception hierarchy.

Every error the SDK raises on purpose derives from :class:`SD4MatchError`, so callers can catch
one type. Subclasses also derive from the matching built-in (``ValueError``, ``FileNotFoundError``,
``ImportError``) so that generic handlers keep working. Messages name the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "SD4MatchError",
    "ConfigError",
    "ImageError",
    "PointsError",
    "ShapeError",
    "WeightsError",
    "ModelNotFoundError",
    "PromptError",
    "UnknownCategoryError",
    "BackendUnavailableError",
    "EngineError",
    "DatasetError",
    "DistributedError",
    "DownloadError",
]


class SD4MatchError(Exception):
    """Base class of every error raised by sd4match_sdk."""


class ConfigError(SD4MatchError, ValueError):
    """An argument or configuration value is invalid."""


class ImageError(SD4MatchError, ValueError):
    """An image cannot be read or has an unsupported type, shape or dtype."""


class PointsError(SD4MatchError, ValueError):
    """Query points are malformed, non-finite or outside their image.

    Attributes:
        indices: indices of the offending points (may be empty for shape errors).
    """

    def __init__(self, message: str, indices: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.indices = list(indices)


class ShapeError(SD4MatchError, ValueError):
    """A tensor or array has the wrong shape.

    Attributes:
        actual: the shape received.
        expected: a human-readable description of the expected shape.
    """

    def __init__(self, message: str, actual: tuple[int, ...] | None = None, expected: str | None = None) -> None:
        super().__init__(message)
        self.actual = actual
        self.expected = expected


class WeightsError(SD4MatchError):
    """Model weights are missing, incomplete or do not fit the architecture."""


class ModelNotFoundError(WeightsError, FileNotFoundError):
    """A model directory or hub id could not be resolved to weights on disk."""


class PromptError(SD4MatchError, ValueError):
    """A prompt file has an unknown format or does not fit the text encoder."""


class UnknownCategoryError(PromptError):
    """A class prompt was asked for a category it does not hold (or for none).

    Attributes:
        category: the category asked for (``None`` when missing).
        known: the categories the prompt holds.
    """

    def __init__(self, category: str | None, known: Sequence[str]) -> None:
        known = sorted(known)
        if category is None:
            message = (
                "this is a Class prompt: pass category=... (one of: " + ", ".join(known) + ")"
            )
        else:
            message = f"unknown category {category!r}; the prompt knows: " + ", ".join(known)
        super().__init__(message)
        self.category = category
        self.known = known


class BackendUnavailableError(SD4MatchError, ImportError):
    """An optional runtime (compiled kernel, onnxruntime, TensorRT, CUDA) is not available."""


class EngineError(SD4MatchError):
    """An exported engine directory is invalid, tampered with, or built for another setup."""


class DatasetError(SD4MatchError, ValueError):
    """A dataset file is missing or malformed."""


class DistributedError(SD4MatchError):
    """Another process of a multi-process run (torchrun) failed, or the processes could not meet."""


class DownloadError(SD4MatchError, OSError):
    """A download failed, or what arrived is not what the SDK expects (size, sha256, layout)."""
