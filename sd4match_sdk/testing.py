"""Tiny models with the real architectures' structure, saved in the libraries' own formats.

Tests and the offline demo load these through the same ``from_pretrained`` code as real weights:
a Stable-Diffusion-2.1-shaped pipeline (same block types and order, ``upcast_attention``, linear
projection, 768 px -> 96 latent -> 48 feature grid, small channels), an offline CLIP BPE
tokenizer and a tiny DINOv2 with the ``facebook/dinov2-base`` processor geometry.

The weights are random: features from these models carry no semantics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = [
    "TINY_WORDS",
    "build_tiny_tokenizer",
    "build_tiny_sd",
    "build_tiny_dino",
    "rewrite_text_encoder_with_v4_keys",
    "build_sd21_random",
    "SD21_UNET_CONFIG",
    "SD21_VAE_CONFIG",
    "SD21_TEXT_CONFIG",
]

#: Words the offline tokenizer knows as whole tokens (others split into characters).
TINY_WORDS = (
    "a photo of the cat dog bird car aeroplane cow motorbike person bottle chair horse sheep "
    "train bus boat bicycle duck winebottle"
).split()


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def build_tiny_tokenizer(path: str | Path, words: tuple[str, ...] | list[str] = TINY_WORDS) -> Path:
    """Write a CLIP BPE tokenizer (``vocab.json``, ``merges.txt``) that needs no download.

    Like SD 2.1's tokenizer: byte-level base alphabet with ``</w>`` end-of-word variants, merges for
    ``words``, then ``<|startoftext|>`` and ``<|endoftext|>`` as the last two ids, ``!`` as padding
    and ``model_max_length`` 77.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    alphabet = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet]:
        vocab[token] = len(vocab)
    merges: dict[str, None] = {}
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges[f"{pieces[0]} {pieces[1]}"] = None
            merged = pieces[0] + pieces[1]
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
        "model_max_length": 77,
        "do_lower_case": True,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return path


#: The SD 2.1 (768-v) UNet configuration, as in its ``unet/config.json``.
SD21_UNET_CONFIG = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    upcast_attention=True,
    norm_num_groups=32,
)
#: The SD 2.1 VAE configuration.
SD21_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)
#: The SD 2.1 text encoder (OpenCLIP ViT-H, 23 layers stored) configuration.
SD21_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)


def _sd21_scheduler():
    """SD 2.1's scheduler config (a v-prediction DDIM; add_noise only reads alphas_cumprod)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )


def _save_pipeline(path: Path, unet, vae, text_encoder, tokenizer, scheduler) -> Path:
    """Save the parts as a diffusers pipeline directory, with the tokenizer as SD 2.1 ships it
    (``vocab.json`` + ``merges.txt``, not only ``tokenizer.json``)."""
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    (path / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    build_tiny_tokenizer(path / "tokenizer")
    return path


def _tiny_text_encoder(tokenizer, text_dim: int):
    """A 2-layer CLIP text encoder of width ``text_dim`` with SD 2.1's configuration otherwise."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = {
        **SD21_TEXT_CONFIG,
        "vocab_size": len(tokenizer),
        "hidden_size": text_dim,
        "intermediate_size": 2 * text_dim,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "projection_dim": text_dim,
    }
    config = CLIPTextConfig(
        **text_config,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_tiny_sd(
    path: str | Path,
    seed: int = 0,
    text_dim: int = 32,
    unet_channels: tuple[int, int, int, int] = (32, 64, 64, 64),
    v4_text_encoder_keys: bool = False,
) -> Path:
    """Write a tiny SD-2.1-shaped diffusers pipeline directory with random weights.

    The configurations are SD 2.1's (:data:`SD21_UNET_CONFIG`, ...) with smaller widths, so the
    block types and order, ``upcast_attention``, the linear projections and the 768 px -> 96
    latent -> 48 feature grid geometry are the real ones. The layout is a real diffusers one
    (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
    ``scheduler/``), so it loads exactly as SD 2.1 does.

    Args:
        path: output directory.
        seed: seed of the random weights.
        text_dim: CLIP hidden size (1024 in SD 2.1); also the UNet's cross-attention width.
        unet_channels: UNet ``block_out_channels`` (320, 640, 1280, 1280 in SD 2.1).
        v4_text_encoder_keys: store the text encoder with transformers-4 key names
            (``text_model.*``), as the real SD 2.1 checkpoints do.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    path = Path(path)
    tokenizer = CLIPTokenizer.from_pretrained(build_tiny_tokenizer(path / "tokenizer"))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **{
            **SD21_UNET_CONFIG,
            "block_out_channels": unet_channels,
            "cross_attention_dim": text_dim,
            "attention_head_dim": (1, 2, 4, 4),  # SD 2.1: (5, 10, 20, 20), read by diffusers as head counts
        }
    )
    vae = AutoencoderKL(
        **{**SD21_VAE_CONFIG, "block_out_channels": (8, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8}
    )
    text_encoder = _tiny_text_encoder(tokenizer, text_dim)
    _save_pipeline(path, unet, vae, text_encoder, tokenizer, _sd21_scheduler())
    if v4_text_encoder_keys:
        rewrite_text_encoder_with_v4_keys(path / "text_encoder")
    return path


def rewrite_text_encoder_with_v4_keys(text_encoder_dir: str | Path) -> None:
    """Rename a saved ``CLIPTextModel``'s keys to transformers-4 names (``text_model.*``).

    Real SD 2.1 checkpoints use these names; transformers 5 saves without the prefix.
    """
    from safetensors.torch import load_file, save_file

    file = Path(text_encoder_dir) / "model.safetensors"
    tensors = load_file(file)
    renamed = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}
    save_file(renamed, file, metadata={"format": "pt"})


def build_tiny_dino(path: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """Write a tiny ``Dinov2Model`` and the ``facebook/dinov2-base`` image processor geometry.

    Patch 14 and a 224 centre crop give the 16x16 = 256 patch tokens the CPM expects.
    """
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = Path(path)
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=518,
    )
    Dinov2Model(config).save_pretrained(path)
    processor = BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": 256},
        resample=3,  # bicubic
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
    processor.save_pretrained(path)
    return path


def build_sd21_random(path: str | Path | None = None, seed: int = 0, device: str | torch.device = "cpu"):
    """The full SD 2.1 architecture with random weights, for benchmarks and export tests.

    Args:
        path: if given, save it there as a diffusers pipeline directory (about 3.5 GB in
            float32) and return the path; otherwise return :class:`SDComponents` in memory.
        seed: seed of the random weights.
        device: where to build the modules (building on a GPU is much faster than on a CPU);
            saving always goes through the CPU.

    The tokenizer is the offline tiny one (its ids are valid for the 49408-token encoder).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .models.loading import SDComponents

    torch.manual_seed(seed)
    with torch.device(device if path is None else "cpu"):
        unet = UNet2DConditionModel(**SD21_UNET_CONFIG)
        vae = AutoencoderKL(**SD21_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD21_TEXT_CONFIG))
    scheduler = _sd21_scheduler()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(build_tiny_tokenizer(Path(tmp) / "tokenizer"))
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    if path is None:
        return SDComponents(unet, vae, text_encoder, tokenizer, scheduler, "random-sd21")
    return _save_pipeline(Path(path), unet, vae, text_encoder, tokenizer, scheduler)
