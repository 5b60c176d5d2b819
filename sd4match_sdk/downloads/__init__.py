"""Downloads: SD 2.1 and DINOv2 from the hub, the authors' prompt archive, named official prompts.

``sd4match download sd21|dinov2|prompts`` runs these; ``prompt="official:single_spair"`` resolves
through :func:`resolve_official_prompt` wherever a prompt is accepted (docs/design.md §12.5).
Importing this package loads neither huggingface_hub nor requests: they are imported when used.
"""

from .cache import CACHE_ENV, cache_dir
from .models import DownloadedModel, download_dinov2, download_sd21
from .official import (
    EXPECTED_PROMPTS,
    OFFICIAL_PREFIX,
    PROMPTS_URL,
    PROMPTS_URL_ENV,
    OfficialPrompt,
    PromptArchive,
    download_prompts,
    resolve_official_prompt,
)
from .patterns import dino_allow_patterns, sd_allow_patterns

__all__ = [
    "CACHE_ENV",
    "EXPECTED_PROMPTS",
    "OFFICIAL_PREFIX",
    "PROMPTS_URL",
    "PROMPTS_URL_ENV",
    "DownloadedModel",
    "OfficialPrompt",
    "PromptArchive",
    "cache_dir",
    "dino_allow_patterns",
    "download_dinov2",
    "download_prompts",
    "download_sd21",
    "resolve_official_prompt",
    "sd_allow_patterns",
]
