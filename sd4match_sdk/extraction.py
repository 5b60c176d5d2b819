"""``sd4match features IMAGES... --out DIR``: raw feature maps of many images, one file per image.

For users who want the features themselves: Single, Class and text prompts (a CPM prompt depends
on both images of a pair, so it has no per-image features). Images are processed in batches
(:meth:`Matcher.features_batch`); each image draws its noise from its own generator seeded with
``(seed, "image", its name)``, so a file does not depend on the batch it was computed in or on
the order. Files already written with the same settings are skipped, so a killed run continues
where it stopped; every file is written atomically (docs/design.md §13.18).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import ConfigError, ImageError
from .features import ImageFeatures
from .matcher import Matcher
from .noise import derive_seed

__all__ = ["IMAGE_SUFFIXES", "SETTING_KEYS", "ExtractionReport", "FeatureJob", "extract_feature_files", "plan_jobs"]

#: Files a folder is searched for (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: The metadata that must match for an existing file to count as done.
SETTING_KEYS = ("model", "prompt", "category", "timestep", "ensemble", "image_size", "seed")


@dataclass(frozen=True)
class FeatureJob:
    """One image and its features file.

    Attributes:
        image: the image file.
        name: its name relative to the folder given (or its file name): the noise seed's label.
        out: the ``.safetensors`` file to write.
    """

    image: Path
    name: str
    out: Path


@dataclass(frozen=True)
class ExtractionReport:
    """What :func:`extract_feature_files` did: files written and files skipped (already done)."""

    written: list[Path]
    skipped: list[Path]


def plan_jobs(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[FeatureJob]:
    """The images of ``inputs`` (files, and folders searched recursively) and their output files:
    ``out_dir/<path relative to the folder>.safetensors`` (``<file name>.safetensors`` for files).

    Raises:
        ImageError: an input that does not exist, or a folder without images.
        ConfigError: two images that would write the same file.
    """
    jobs: list[FeatureJob] = []
    for given in map(Path, inputs):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{str(given)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            names = [p.relative_to(given) for p in found]
        elif given.is_file():
            found, names = [given], [Path(given.name)]
        else:
            raise ImageError(f"image or folder not found: {str(given)!r}")
        jobs += [FeatureJob(p, n.as_posix(), Path(out_dir) / n.with_suffix(".safetensors")) for p, n in zip(found, names)]
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.out in seen:
            raise ConfigError(f"{seen[job.out]} and {job.image} would both write {job.out}; rename one, or run them "
                              "with different --out directories")  # fmt: skip
        seen[job.out] = job.image
    return jobs


def _is_done(job: FeatureJob, settings: dict[str, str], overwrite: bool) -> bool:
    """Whether ``job.out`` already holds these settings' features.

    Raises:
        ConfigError: it holds features computed with other settings (and ``overwrite`` is off).
    """
    if overwrite or not job.out.is_file():
        return False
    try:
        existing = ImageFeatures.load(job.out).metadata
    except ConfigError:
        return False  # not a features file (e.g. written by something else): compute it again
    changed = [k for k in SETTING_KEYS if existing.get(k, "") != settings.get(k, "")]
    if changed:
        shown = ", ".join(f"{k} {existing.get(k, '')!r} (now {settings.get(k, '')!r})" for k in changed)
        raise ConfigError(f"{job.out} holds features computed with other settings: {shown}; use another --out, or "
                          "--overwrite to replace them")  # fmt: skip
    return True


def extract_feature_files(
    matcher: Matcher,
    jobs: Sequence[FeatureJob],
    settings: dict[str, str],
    category: str | None = None,
    seed: int | None = 0,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractionReport:
    """Compute and write the features of every job not done yet.

    Args:
        matcher: a Single, Class or text-prompt matcher.
        jobs: from :func:`plan_jobs`.
        settings: metadata written into every file (:data:`SETTING_KEYS` decide what is done).
        category: the category of every image (Class prompts, ``{category}`` texts).
        seed: base seed of the per-image noise (``None``: torch's global RNG, not reproducible).
        batch_size: images per UNet batch.
        overwrite: recompute files that exist.
        progress: show a progress bar.
    """
    # 1. Check the inputs and find what is done
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")
    matcher.backend.check_category(category)
    settings = {**{k: str(v) for k, v in settings.items()}, "seed": "" if seed is None else str(seed),
                "category": category or ""}  # fmt: skip
    done = [_is_done(job, settings, overwrite) for job in jobs]
    todo = [job for job, finished in zip(jobs, done) if not finished]
    skipped = [job.out for job, finished in zip(jobs, done) if finished]
    # 2. Extract in batches, each image with its own generator, and write each file
    written: list[Path] = []
    with tqdm(total=len(jobs), initial=len(skipped), unit="img", desc="features", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            generators = [None if seed is None else torch.Generator().manual_seed(derive_seed(seed, "image", j.name))
                          for j in batch]  # fmt: skip
            feats = matcher.features_batch([j.image for j in batch], [category] * len(batch), generators=generators)
            for job, image_features in zip(batch, feats):
                written.append(image_features.save(job.out, **settings, image=job.name))
            bar.update(len(batch))
    return ExtractionReport(written, skipped)
