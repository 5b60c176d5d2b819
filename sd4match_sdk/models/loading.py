"""Loading Stable Diffusion 2.1 and DINOv2 with the libraries' own ``from_pretrained``.

Weights load completely or not at all (docs/design.md §13.2). Real SD 2.1 checkpoints store the text encoder
with transformers-4 key names (``text_model.*``) while transformers 5 saves them without the
prefix; a mismatch either way can leave layers randomly initialised with only a log line. Every
load here asks for the loading report and raises :class:`WeightsError` unless every parameter
was read from the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import DEFAULT_DINO_MODEL, DEFAULT_SD_MODEL, SD_MODEL_ENV
from ..errors import ModelNotFoundError, WeightsError
from .dino import load_pil_processor

__all__ = ["SDComponents", "load_sd_components", "load_dino", "check_loading_info", "check_text_width"]


@dataclass
class SDComponents:
    """The frozen SD 2.1 parts the SDK uses (the decoder half of the VAE is never run)."""

    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler: Any  # diffusers scheduler; only its alphas_cumprod is used (docs/design.md §3.7)
    source: str  # the directory or hub id they came from


def _looks_local(model: str) -> bool:
    """A path, not a hub id: it exists, starts like a path (``./``, ``../``, ``/``, ``~``), or has
    more than one ``/`` (hub ids are ``owner/name``)."""
    return model.startswith((".", "/", "~")) or Path(model).exists() or model.count("/") > 1


def _resolve_source(model: str) -> tuple[str, bool]:
    """``(model, is_local)``: a local path expanded (decided before expanding, so ``./no-such-dir``
    stays a path and fails at once instead of reaching for the hub)."""
    local = _looks_local(model)
    return (os.path.expanduser(model) if local else model), local


def _weights_variant(model: str, local: bool, subfolder: str) -> str | None:
    """``"fp16"`` for a local component that holds only ``*.fp16.safetensors`` weights
    (``sd4match download sd21 --variant fp16``), else ``None`` (the full-precision files)."""
    folder = Path(model) / subfolder
    if not local or not folder.is_dir() or any(p.name.count(".") == 1 for p in folder.glob("*.safetensors")):
        return None
    return "fp16" if any(folder.glob("*.fp16.safetensors")) else None


def check_loading_info(info: dict[str, Any], what: str, source: str) -> None:
    """Raise unless a ``from_pretrained(..., output_loading_info=True)`` report is clean."""
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        items = list(info.get(key) or [])
        if items:
            shown = ", ".join(str(k) for k in items[:5]) + (" ..." if len(items) > 5 else "")
            problems.append(f"{len(items)} {key.replace('_', ' ')} ({shown})")
    errors = list(info.get("error_msgs") or [])
    if errors:
        problems.append("errors: " + "; ".join(map(str, errors[:3])))
    if problems:
        raise WeightsError(
            f"{what} from {source!r} did not load completely: " + "; ".join(problems) + ". "
            "The checkpoint does not match the architecture (wrong model, or key names this "
            "diffusers/transformers version cannot map); refusing to run with random layers."
        )


def check_text_width(text_encoder: Any, unet: Any, source: str) -> None:
    """Raise unless the text encoder's width equals the UNet's cross-attention width.

    Raises:
        WeightsError: the two come from different models (e.g. an SD 1.5 text encoder, width 768,
            with the SD 2.1 UNet, 1024); the mismatch would otherwise fail at the first match.
    """
    width = int(text_encoder.config.hidden_size)
    cross = unet.config.cross_attention_dim
    widths = set(cross) if isinstance(cross, (list, tuple)) else {cross}
    if widths != {width}:
        raise WeightsError(
            f"the text encoder in {source!r} is {width} wide but the UNet's cross-attention takes "
            f"{', '.join(map(str, sorted(widths)))}: the components come from different models. Use one "
            "SD 2.1 directory (text_encoder/ and unet/ of the same pipeline)"
        )


def _not_found(what: str, model: str, err: BaseException, default: str, env: str | None, command: str) -> ModelNotFoundError:
    hint = (
        f"Provide a local directory in the diffusers/transformers layout or a hub id you can "
        f"download (default {default!r}"
        + (f", or set ${env}" if env else "")
        + f"), e.g. `{command}` (or `hf download {default} --local-dir ./weights`)."
    )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() not in ("1", "ON", "YES", "TRUE"):
        hint += " Set HF_HUB_OFFLINE=1 to load only from local files."
    return ModelNotFoundError(f"could not load {what} from {model!r}: {err}. {hint}")


def load_sd_components(model: str, dtype: torch.dtype = torch.float32) -> SDComponents:
    """Load UNet, VAE, text encoder, tokenizer and scheduler of an SD 2.1 pipeline.

    Args:
        model: a local diffusers directory (``unet/``, ``vae/``, ``text_encoder/``,
            ``tokenizer/``, ``scheduler/``) or a hub id.
        dtype: dtype of the UNet and text encoder weights (the VAE stays float32).

    Raises:
        ModelNotFoundError: the directory or id cannot be resolved.
        WeightsError: a component did not load completely.
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    model, local = _resolve_source(str(model))
    if local and not Path(model).is_dir():
        raise _not_found("Stable Diffusion 2.1", model, FileNotFoundError("no such directory"), DEFAULT_SD_MODEL,
                         SD_MODEL_ENV, "sd4match download sd21 --dir ./stable-diffusion-2-1")  # fmt: skip
    variant = {part: _weights_variant(model, local, part) for part in ("unet", "vae", "text_encoder")}
    try:
        unet, unet_info = UNet2DConditionModel.from_pretrained(
            model, subfolder="unet", output_loading_info=True, torch_dtype=dtype, variant=variant["unet"]
        )
        vae, vae_info = AutoencoderKL.from_pretrained(
            model, subfolder="vae", output_loading_info=True, variant=variant["vae"]
        )
        text_encoder, te_info = CLIPTextModel.from_pretrained(
            model, subfolder="text_encoder", output_loading_info=True, dtype=dtype, variant=variant["text_encoder"]
        )
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        # The scheduler class the checkpoint names (DDIM for SD 2.1); only its alphas_cumprod is used:
        # the noising is always the forward process (docs/design.md §3.7).
        scheduler_config = diffusers.DDPMScheduler.load_config(model, subfolder="scheduler")
        scheduler_cls = getattr(diffusers, scheduler_config.get("_class_name", ""), diffusers.DDPMScheduler)
        scheduler = scheduler_cls.from_config(scheduler_config)
    except (OSError, ValueError) as err:  # EnvironmentError / hub errors / missing files
        raise _not_found("Stable Diffusion 2.1", model, err, DEFAULT_SD_MODEL, SD_MODEL_ENV, "sd4match download sd21") from err
    check_loading_info(unet_info, "the UNet", model)
    check_loading_info(vae_info, "the VAE", model)
    check_loading_info(te_info, "the text encoder", model)
    check_text_width(text_encoder, unet, model)
    if getattr(scheduler, "alphas_cumprod", None) is None:
        raise WeightsError(
            f"the scheduler of {model!r} ({type(scheduler).__name__}) has no alphas_cumprod; SD4Match needs the DDPM "
            "forward-process schedule: use an SD 2.1 directory (its scheduler/ names DDIMScheduler)"
        )
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler, model)


def load_dino(model: str | None = None) -> tuple[Any, Any]:
    """Load a ``transformers.Dinov2Model`` and its image processor (PIL backend, docs/design.md §4.5).

    Args:
        model: local directory or hub id; ``facebook/dinov2-base`` when ``None``.

    Returns:
        ``(model, processor)``; the model is frozen, float32, in eval mode.
    """
    from transformers import Dinov2Model

    model, local = _resolve_source(str(model or DEFAULT_DINO_MODEL))
    if local and not Path(model).is_dir():
        raise _not_found("DINOv2", model, FileNotFoundError("no such directory"), DEFAULT_DINO_MODEL, None,
                         "sd4match download dinov2 --dir ./dinov2-base")  # fmt: skip
    try:
        dino, info = Dinov2Model.from_pretrained(model, output_loading_info=True)
        processor = load_pil_processor(model)
    except (OSError, ValueError) as err:
        raise _not_found("DINOv2", model, err, DEFAULT_DINO_MODEL, None, "sd4match download dinov2") from err
    check_loading_info(info, "DINOv2", model)
    dino.requires_grad_(False).eval()
    return dino, processor
