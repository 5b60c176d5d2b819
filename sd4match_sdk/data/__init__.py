"""Benchmark loaders in the datasets' native layouts: SPair-71k, PF-Pascal, PF-Willow (docs/design.md §10).

>>> ds = load_dataset("pfwillow", "path/to/pf-willow", split="test")  # doctest: +SKIP
>>> s = ds[0]; s.source_kps, s.target_kps, s.threshold, s.category  # 768-frame values  # doctest: +SKIP
"""

from __future__ import annotations

import os

from ..errors import DatasetError
from ..ops.pck import ThresholdKind
from .base import PairDataset, PairRecord, PairSample, read_rgb
from .pfpascal import PFPASCAL_CATEGORIES, PFPascalDataset
from .pfwillow import PFWILLOW_CATEGORIES, PFWillowDataset
from .spair import SPAIR_CATEGORIES, SPairDataset

__all__ = [
    "DATASETS",
    "load_dataset",
    "PairDataset",
    "PairRecord",
    "PairSample",
    "ThresholdKind",
    "SPairDataset",
    "PFPascalDataset",
    "PFWillowDataset",
    "SPAIR_CATEGORIES",
    "PFPASCAL_CATEGORIES",
    "PFWILLOW_CATEGORIES",
    "read_rgb",
]

#: Loader of each benchmark, by the names the CLIs take.
DATASETS: dict[str, type[PairDataset]] = {
    "spair": SPairDataset,
    "pfpascal": PFPascalDataset,
    "pfwillow": PFWillowDataset,
}


def load_dataset(name: str, root: str | os.PathLike, split: str = "test", frame: int = 768, **kwargs) -> PairDataset:
    """Open a benchmark by name (``spair``, ``pfpascal``, ``pfwillow``).

    Raises:
        DatasetError: unknown name, or missing/malformed files.
    """
    try:
        cls = DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None
    return cls(root, split=split, frame=frame, **kwargs)
