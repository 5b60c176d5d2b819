"""Which files of a hub repository the SDK loads: pure functions over the repository's file list.

SD 2.1 repositories hold much more than the SDK reads: single-file checkpoints at the root
(``v2-1_768-ema-pruned.ckpt``/``.safetensors``, several GB each), ``.bin`` copies of every weight,
fp16 variants, the ``feature_extractor/`` of the safety checker, original-repository yaml configs.
``load_sd_components`` reads ``model_index.json`` and five subfolders, and weights only as
safetensors (docs/design.md §12.5), so the allow-list names exactly those files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from ..errors import DownloadError

__all__ = ["SD_WEIGHT_COMPONENTS", "SD_OTHER_COMPONENTS", "dino_allow_patterns", "sd_allow_patterns"]

#: Subfolders whose weights the SDK loads (``diffusion_pytorch_model``/``model`` safetensors).
SD_WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
#: Subfolders without weights the SDK loads whole.
SD_OTHER_COMPONENTS = ("tokenizer", "scheduler")


def _weight_variant(name: str) -> tuple[bool, str | None]:
    """``(True, variant)`` for a safetensors weight file or shard index, ``(False, None)`` otherwise.

    Variants are infixes: ``model.fp16.safetensors``, ``model-00001-of-00002.fp16.safetensors``,
    ``model.safetensors.index.fp16.json``; ``model.safetensors`` has none.
    """
    if name.endswith(".safetensors"):
        _, dot, infix = name[: -len(".safetensors")].rpartition(".")
        return True, infix if dot else None
    if name.endswith(".json") and ".safetensors.index" in name:
        tail = name.split(".safetensors.index", 1)[1]  # ".json" or ".fp16.json"
        return True, tail[1 : -len(".json")] if tail != ".json" else None
    return False, None


def _component_files(files: list[str], component: str, variant: str | None) -> list[str]:
    """Config files plus the safetensors weights of one variant (``variant`` when offered, else
    the full-precision files) of one subfolder.

    Raises:
        DownloadError: the subfolder has no safetensors weights at all.
    """
    inside = [f for f in files if PurePosixPath(f).parent.as_posix() == component]
    configs, weights = [], {}
    for path in inside:
        name = PurePosixPath(path).name
        is_weight, weight_variant = _weight_variant(name)
        if is_weight:
            weights.setdefault(weight_variant, []).append(path)
        elif name.endswith(".json"):
            configs.append(path)
    chosen = variant if variant in weights else None
    if chosen not in weights:
        found = ", ".join(sorted(inside)) or "nothing"
        where = "at its root" if component == "." else f"in {component}/"
        raise DownloadError(
            f"the repository has no safetensors weights {where} (found: {found}); the SDK loads "
            "diffusers-layout safetensors only: use a repository or --revision that has them"
        )
    return sorted(configs) + sorted(weights[chosen])


def sd_allow_patterns(files: Iterable[str], variant: str | None = None) -> list[str]:
    """The files of an SD 2.1 diffusers repository that :func:`~sd4match_sdk.models.loading.load_sd_components` reads.

    Args:
        files: every path of the repository (``HfApi.list_repo_files``).
        variant: ``"fp16"`` to take ``*.fp16.safetensors`` weights where a subfolder offers them
            (the full-precision files elsewhere); ``None`` for full precision.

    Returns:
        sorted exact paths, for ``snapshot_download(allow_patterns=...)``: ``model_index.json``,
        the configs and safetensors weights of ``unet/``, ``vae/``, ``text_encoder/``, and every
        ``.json``/``.txt`` file of ``tokenizer/`` and ``scheduler/``.

    Raises:
        DownloadError: a part the SDK needs is missing (naming it and what was found).
    """
    files = sorted(set(files))
    if "model_index.json" not in files:
        raise DownloadError(
            "the repository has no model_index.json at its root: it is not a diffusers pipeline "
            f"(found at the root: {', '.join(f for f in files if '/' not in f) or 'nothing'}); "
            "pass a diffusers repository of SD 2.1 with --model"
        )
    chosen = ["model_index.json"]
    for component in SD_WEIGHT_COMPONENTS:
        chosen += _component_files(files, component, variant)
    for component in SD_OTHER_COMPONENTS:
        inside = [f for f in files if f.startswith(component + "/") and f.endswith((".json", ".txt"))]
        if not inside:
            raise DownloadError(f"the repository has no {component}/ configuration; pass a diffusers repository of SD 2.1")
        chosen += inside
    return sorted(chosen)


def dino_allow_patterns(files: Iterable[str]) -> list[str]:
    """The files of a DINOv2 transformers repository that :func:`~sd4match_sdk.models.loading.load_dino` reads:
    ``config.json``, ``preprocessor_config.json`` and the safetensors weights (no ``.bin``).

    Raises:
        DownloadError: one of them is missing.
    """
    files = sorted(set(files))
    root = [f for f in files if "/" not in f]
    missing = [name for name in ("config.json", "preprocessor_config.json") if name not in root]
    if missing:
        raise DownloadError(f"the DINOv2 repository lacks {', '.join(missing)} (found: {', '.join(root)})")
    weights = _component_files(files, ".", None)
    return sorted(set(weights) | {"config.json", "preprocessor_config.json"})
