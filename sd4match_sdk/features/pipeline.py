"""Host work overlapped with device work: the next batch is prepared while the current one runs (docs/design.md §13.22).

Preparing a batch is host work (decoding and resizing images, drawing noise, copying into pinned
memory); running it is device work. :func:`prefetched` runs the preparations in order on one
worker thread, one batch ahead of the caller, so on a GPU the host work hides behind the device.
One worker keeps the order of every draw: a generator shared by several pairs draws for them in
pair order, as one call at a time would. :func:`prepare_pairs` and :func:`prepare_images` are the
host work of one device batch of a ``match_batch`` or ``features_batch`` request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..images import load_image
from ..noise import ImageNoise
from ..points import check_points
from .batch import PreparedBatch

__all__ = ["PreparedRequests", "batch_tasks", "chunks", "overlaps_host", "prefetched", "prepare_images", "prepare_pairs", "prepares_ahead"]

T = TypeVar("T")


def chunks(total: int, size: int) -> list[range]:
    """``range(total)`` in consecutive pieces of at most ``size`` (``size >= 1``)."""
    size = max(1, int(size))
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


def prefetched(tasks: Sequence[Callable[[], T]], ahead: bool = True) -> Iterator[T]:
    """The results of ``tasks``, in order; with ``ahead``, task ``k + 1`` runs on a worker thread
    while the caller uses result ``k``. One task, or ``ahead=False``, runs inline. An exception is
    raised where its result is taken.

    Overlap pays where the caller's work runs on another device: on a CPU the worker competes with
    the model for the same cores (measured on 2 cores: a ``match_batch`` of one pair per batch took
    about 20 % longer with the worker than inline; docs/design.md §13.22), so callers pass
    :func:`overlaps_host` of their device.
    """
    if len(tasks) <= 1 or not ahead:
        yield from (task() for task in tasks)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sd4match-prepare") as pool:
        pending = pool.submit(tasks[0])
        for task in tasks[1:]:
            ready = pending.result()
            pending = pool.submit(task)
            yield ready
        yield pending.result()


def overlaps_host(device: torch.device) -> bool:
    """Whether host preparation can run beside the model: on an accelerator, not on the CPU."""
    return device.type != "cpu"


def prepares_ahead(device: torch.device, generators: Sequence[torch.Generator | None]) -> bool:
    """Whether a request's next batch is prepared on a worker thread: where the host work overlaps
    ``device``, and only when every draw has its own generator. Draws from the global RNG stay on
    the caller's thread: torch.compile restores that RNG after each compilation, rewinding draws
    another thread made meanwhile (docs/design.md §13.22)."""
    return overlaps_host(device) and all(g is not None for g in generators)


@dataclass(frozen=True)
class PreparedRequests:
    """One device batch of a request after the host work.

    Attributes:
        indices: positions in the request of what the batch answers (pairs without query points
            are left out: they need no model run).
        sizes: ``(W, H)`` of each image (images), or of each pair's source and target (pairs).
        queries: the checked query points of each pair (pairs only).
        inputs: the backend's prepared batch; ``None`` when nothing needs a model run.
    """

    indices: list[int]
    sizes: list[Any]
    queries: list[Tensor]
    inputs: PreparedBatch | None


def _size(image: np.ndarray) -> tuple[int, int]:
    return (image.shape[1], image.shape[0])


def prepare_images(
    backend: Any, draw: Callable[[Any], ImageNoise], images: Sequence, categories: Sequence, generators: Sequence, chunk: range
) -> PreparedRequests:
    """Host work of a batch of images: decode, then one noise draw per image in request order."""
    rgbs = [load_image(images[i]) for i in chunk]
    noises = [draw(generators[i]) for i in chunk]
    inputs = backend.prepare_images(rgbs, [categories[i] for i in chunk], noises)
    return PreparedRequests(list(chunk), [_size(rgb) for rgb in rgbs], [], inputs)


def prepare_pairs(
    backend: Any,
    draw: Callable[[Any], tuple[ImageNoise, ImageNoise]],
    pairs: Sequence,
    categories: Sequence,
    generators: Sequence,
    chunk: range,
) -> PreparedRequests:
    """Host work of a batch of ``(source, target, points, category)`` pairs: decode, point checks,
    then each pair's noise (source, then target) in pair order; pairs without points draw none."""
    active = []
    for i in chunk:
        rgb0, rgb1 = load_image(pairs[i][0]), load_image(pairs[i][1])
        query = check_points(pairs[i][2], _size(rgb0))
        if query.shape[0] > 0:
            active.append((i, rgb0, rgb1, query))
    if not active:
        return PreparedRequests([], [], [], None)
    noises = [draw(generators[i]) for i, *_ in active]
    sources, targets = [a[1] for a in active], [a[2] for a in active]
    inputs = backend.prepare_pairs(sources, targets, [categories[a[0]] for a in active], noises)
    sizes = [(_size(a[1]), _size(a[2])) for a in active]
    return PreparedRequests([a[0] for a in active], sizes, [a[3] for a in active], inputs)


def batch_tasks(
    prepare: Callable[..., PreparedRequests],
    backend: Any,
    draw: Callable[[Any], Any],
    requests: Sequence,
    categories: Sequence,
    generators: Sequence,
) -> list[Callable[[], PreparedRequests]]:
    """One host-preparation task per device batch of ``requests`` (pairs for :func:`prepare_pairs`,
    images for :func:`prepare_images`), each as large as the backend's memory budget allows."""
    per_request = 2 if prepare is prepare_pairs else 1
    size = max(1, backend.max_batch_images() // per_request)
    return [partial(prepare, backend, draw, requests, categories, generators, c) for c in chunks(len(requests), size)]
