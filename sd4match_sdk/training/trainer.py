"""Prompt tuning for SD4Match: Single, Class and CPM (SPEC 3, 13).

One optimiser step:

1. take the step's ``batch_size`` pairs (:class:`~.data.StepBatchSampler`) and draw their noise
   from the run's generator, pair by pair, source then target (``eps_vae`` then one noise map
   each: E = 1), so the numbers do not depend on how the batch is split;
2. for each micro-batch: build the pairs' prompts (CPM: from cached DINOv2 tokens of both
   images), encode them with the frozen CLIP text encoder, encode the images with the VAE
   (no gradient), noise the latents at t = 261 and run the truncated UNet with the prompt
   context; under fp16/bf16 autocast on CUDA;
3. loss per pair (:func:`~sd4match_sdk.ops.loss.pair_loss`), summed and divided by the step's
   number of pairs before ``backward``, so the accumulated gradient is the mean over the whole
   batch (the paper's batch 9; the official scripts probably stepped at an effective 3, SPEC 3);
4. one Adam step (constant lr; the fp16 grad scaler skips steps with non-finite gradients).

Every ``val_every`` steps (default: once per epoch) the current prompt is scored on the val split
by nearest-neighbour PCK@0.1 at the training timestep with E = 1 (the official selection rule);
a better score rewrites ``best.safetensors``. The resumable state (:mod:`.checkpoint`) is
written every ``checkpoint_every`` steps, after each validation, at the end and on Ctrl-C;
``last.safetensors`` follows it. Both prompt files are in the SDK's prompt format and load with
``Matcher.from_pretrained(..., prompt=path)``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._version import __version__
from ..backends import TorchFeatureBackend
from ..config import DEFAULT_DINO_MODEL, FeatureConfig, MatchConfig, MatchMethod
from ..data.base import PairDataset
from ..errors import ConfigError
from ..evaluation.report import write_json
from ..evaluation.runner import derive_seed, evaluate
from ..matcher import Matcher
from ..models.cpm import CPMConfig
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..models.text import encode_token_embeddings
from ..noise import draw_pair_noise
from ..ops.geometry import frame_to_grid
from ..ops.loss import pair_loss
from ..prompts import save_prompt
from .checkpoint import check_resumable, load_state, save_state
from .config import TrainConfig
from .data import StepBatchSampler, TrainBatch, TrainPairs, collate_pairs
from .dino_cache import DinoTokenCache
from .prompts import TrainablePrompt, build_trainable_prompt

__all__ = ["Trainer", "TrainResult", "resolve_device", "autocast_dtype"]

STATE_FILE = "state.pt"
LAST_PROMPT = "last.safetensors"
BEST_PROMPT = "best.safetensors"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available; use device = 'cpu'")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision setting; ``None`` means full float32 (always on CPU)."""
    if device.type != "cuda":
        return None
    return {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[precision]


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports.

    Attributes:
        step: optimiser steps done.
        total_steps: steps the run was configured for.
        losses: ``(step, loss)`` of the steps run in this session.
        validations: ``{"step", "score", "seconds"}`` of every validation of the run.
        best_score, best_step: the best validation NN-PCK and when it happened (-1 if none).
        last_prompt, best_prompt: the prompt files (``best`` may not exist without validation).
    """

    step: int
    total_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best_score: float = -1.0
    best_step: int = -1
    last_prompt: Path | None = None
    best_prompt: Path | None = None


class Trainer:
    """Tunes a prompt on a benchmark's training split.

    Args:
        config: the run's settings.
        components: SD 2.1 parts (frozen; moved to the config's device).
        train_set: the training split, ``frame == config.image_size``.
        val_set: the validation split (``None``: no validation, no ``best`` file).
        dino: ``(Dinov2Model, processor)`` for CPM prompts.
        progress: show a progress bar.
        tensorboard: write TensorBoard scalars under ``output_dir/tb`` (skipped, with a note,
            when the ``tensorboard`` package is missing).
    """

    def __init__(
        self,
        config: TrainConfig,
        components: SDComponents,
        train_set: PairDataset,
        val_set: PairDataset | None = None,
        dino: tuple[Any, Any] | None = None,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        for name, split in (("train", train_set), ("val", val_set)):
            if split is not None and split.frame != config.image_size:
                raise ConfigError(f"the {name} split uses a {split.frame} px frame but image_size is {config.image_size}")
        if config.prompt == "class" and val_set is not None:
            unseen = sorted(set(val_set.categories) - set(train_set.categories))
            if unseen:
                raise ConfigError(
                    f"the val split has categories the training split lacks ({', '.join(unseen)}); "
                    "a Class prompt only learns the training categories"
                )
        if config.prompt == "cpm" and dino is None:
            raise ConfigError("a CPM prompt needs DINOv2: pass dino=(model, processor)")
        self.config = config
        self.components = components
        self.train_set = train_set
        self.val_set = val_set
        self.progress = progress
        self.tensorboard = tensorboard
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.output_dir = Path(config.output_dir)

        for module in (components.unet, components.vae, components.text_encoder):
            module.requires_grad_(False).eval().to(self.device)
        if config.gradient_checkpointing:
            components.unet.enable_gradient_checkpointing()
        self.extractor = SDFeatureExtractor(components.vae, components.unet, components.scheduler, config.timestep)
        self.latent_shape = self.extractor.latent_shape(config.image_size)

        self.dino = dino
        self.dino_cache: DinoTokenCache | None = None
        cpm_config = None
        if config.prompt == "cpm":
            dino_model, processor = dino  # type: ignore[misc]
            dino_model.to(self.device).eval().requires_grad_(False)
            self.dino_cache = DinoTokenCache(dino_model, processor, config.dino or DEFAULT_DINO_MODEL, config.dino_cache or None)
            cpm_config = CPMConfig(
                dino_dim=int(dino_model.config.hidden_size),
                text_dim=int(components.text_encoder.config.hidden_size),
                global_length=config.cpm_global,
                cond_length=config.cpm_cond,
            )
        self.prompt: TrainablePrompt = build_trainable_prompt(
            config.prompt,
            components.tokenizer,
            components.text_encoder,
            seed=derive_seed(config.seed, "prompt-init"),
            categories=train_set.categories,
            cpm_config=cpm_config,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.prompt.param_groups(config.lr, config.network_lr))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.noise_generator = torch.Generator().manual_seed(derive_seed(config.seed, "train-noise"))
        self.step = 0
        self.best_score = -1.0
        self.best_step = -1
        self.validations: list[dict] = []
        self._saved_step = -1
        self._updating = False
        self.resumed = self._maybe_resume()

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def _maybe_resume(self) -> bool:
        if not self.state_path.is_file():
            return False
        state = load_state(self.state_path)
        check_resumable(state["config"], self.config, self.state_path)
        self.prompt.load_state_dict(state["prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.noise_generator.set_state(state["noise_rng"])
        self.step = int(state["step"])
        self.best_score = float(state["best_score"])
        self.best_step = int(state["best_step"])
        self.validations = list(state["validations"])
        self._saved_step = self.step
        return True

    def _prompt_metadata(self) -> dict[str, Any]:
        return {
            "model_id": self.components.source,
            "timestep": self.config.timestep,
            "dataset": self.config.dataset,
            "train_step": self.step,
            "trained_with": f"sd4match-train {__version__}",
        }

    def save_state(self) -> None:
        """Write ``state.pt`` and ``last.safetensors`` for the current step."""
        save_state(
            self.state_path,
            {
                "step": self.step,
                "prompt": {k: v.detach().cpu() for k, v in self.prompt.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "noise_rng": self.noise_generator.get_state(),
                "best_score": self.best_score,
                "best_step": self.best_step,
                "validations": self.validations,
                "config": self.config.to_dict(),
            },
        )
        save_prompt(self.output_dir / LAST_PROMPT, self.prompt.to_weights(), **self._prompt_metadata())
        self._saved_step = self.step

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _dino_tokens(self, batch: TrainBatch) -> tuple[Tensor | None, Tensor | None]:
        if self.dino_cache is None:
            return None, None
        tokens = self.dino_cache.get(batch.dino_keys, batch.images).to(self.device)  # (2P, 256, D)
        return tokens[0::2], tokens[1::2]

    def train_step(self, batch: TrainBatch) -> float:
        """One optimiser step on ``batch``; returns the batch loss (mean over its pairs)."""
        p = len(batch)
        noises = [draw_pair_noise(self.noise_generator, self.config.ensemble, self.latent_shape) for _ in range(p)]
        dino0, dino1 = self._dino_tokens(batch)
        grid_hw = (self.config.image_size // 16, self.config.image_size // 16)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        micro = self.config.micro_batch
        for start in range(0, p, micro):
            idx = list(range(start, min(start + micro, p)))
            images = [2 * i + j for i in idx for j in (0, 1)]
            pixels = batch.pixels[images].to(self.device, non_blocking=True)
            eps_vae = torch.cat([n.eps_vae for i in idx for n in noises[i]]).to(self.device)
            noise = torch.stack([n.noise for i in idx for n in noises[i]]).to(self.device)
            with self._autocast():
                tokens = self.prompt.token_embeds(
                    [batch.categories[i] for i in idx],
                    None if dino0 is None else dino0[idx],
                    None if dino1 is None else dino1[idx],
                )
                context = encode_token_embeddings(self.components.text_encoder, tokens)  # (m, 77, D)
                with torch.no_grad():
                    latents = self.extractor.encode_latents(pixels, eps_vae)
                feats = self.extractor.unet_features(latents, noise, context.repeat_interleave(2, dim=0))
            feats = feats.float()
            if feats.shape[-2:] != grid_hw:
                raise ConfigError(f"feature grid {tuple(feats.shape[-2:])} differs from the expected {grid_hw}")
            losses = []
            for k, i in enumerate(idx):
                points0 = frame_to_grid(batch.kps0[i].to(self.device), self.config.image_size, grid_hw)
                points1 = frame_to_grid(batch.kps1[i].to(self.device), self.config.image_size, grid_hw)
                losses.append(
                    pair_loss(feats[2 * k], feats[2 * k + 1], points0, points1, self.config.beta,
                              self.config.label_kernel, self.config.label_sigma)  # fmt: skip
                )
            loss = torch.stack(losses).sum() / p  # the gradient of the step is the mean over all p pairs
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self._updating = False
        return total

    # ------------------------------------------------------------------ validation

    def validation_matcher(self) -> Matcher:
        """A Matcher with the current prompt, t = training timestep, E = 1, nearest neighbour."""
        feature_config = FeatureConfig(self.config.image_size, self.config.timestep, self.config.ensemble)
        backend = TorchFeatureBackend(self.components, self.prompt.to_weights(), feature_config, self.device, self.dino)
        return Matcher(backend, MatchConfig(method=MatchMethod.NN), matching_backend="torch")

    def validate(self) -> float:
        """NN-PCK@``val_alpha`` (mean over pairs) of the current prompt on the val split."""
        if self.val_set is None:
            raise ConfigError("no validation split was given")
        result = evaluate(
            self.validation_matcher(),
            self.val_set,
            alphas=(self.config.val_alpha,),
            seed=derive_seed(self.config.seed, "validation"),
            max_pairs=self.config.val_max_pairs or None,
            progress=False,
            autocast_dtype=self.amp_dtype,
        )
        score = result.summary.overall[self.config.val_alpha]
        self.validations = [v for v in self.validations if v["step"] != self.step]
        self.validations.append({"step": self.step, "score": score, "seconds": result.seconds})
        if score > self.best_score:
            self.best_score, self.best_step = score, self.step
            metadata = {**self._prompt_metadata(), "val_nn_pck": f"{score:.6f}", "val_split": self.val_set.split}
            save_prompt(self.output_dir / BEST_PROMPT, self.prompt.to_weights(), **metadata)
        write_json(self.output_dir / "validation.json", {"best_step": self.best_step, "best_score": self.best_score,
                                                          "history": self.validations})  # fmt: skip
        return score

    # ------------------------------------------------------------------ loop

    def _loader(self, total: int):
        from torch.utils.data import DataLoader

        sampler = StepBatchSampler(len(self.train_set), self.config.batch_size, self.config.seed, self.step, total)
        return DataLoader(
            TrainPairs(self.train_set, self.config.image_size, with_images=self.dino_cache is not None),
            batch_sampler=sampler,
            collate_fn=collate_pairs,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _writer(self):
        if not self.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("sd4match-train: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)")
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tb"), purge_step=self.step or None)

    def run(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Train until ``total_steps`` (from the resumed step, if any).

        Args:
            on_step: called as ``on_step(step, loss)`` after every optimiser step.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        total = cfg.total_steps(len(self.train_set))
        val_every = cfg.val_every or cfg.steps_per_epoch(len(self.train_set))
        writer = self._writer()
        losses: list[tuple[int, float]] = []
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not self.progress, dynamic_ncols=True)
        last_time = time.perf_counter()
        try:
            for batch in self._loader(total):
                loss = self.train_step(batch)
                losses.append((self.step, loss))
                now = time.perf_counter()
                if writer is not None:
                    writer.add_scalar("train/loss", loss, self.step)
                    for i, group in enumerate(self.optimizer.param_groups):
                        writer.add_scalar(f"train/lr_group{i}", group["lr"], self.step)
                    writer.add_scalar("train/steps_per_second", 1.0 / max(now - last_time, 1e-9), self.step)
                last_time = now
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", best=f"{self.best_score:.3f}" if self.best_step >= 0 else "-")
                if on_step is not None:
                    on_step(self.step, loss)
                validated = False
                if self.val_set is not None and (self.step % val_every == 0 or self.step == total):
                    score = self.validate()
                    validated = True
                    if writer is not None:
                        writer.add_scalar(f"val/nn_pck@{cfg.val_alpha:g}", score, self.step)
                if validated or self.step % cfg.checkpoint_every == 0 or self.step == total:
                    self.save_state()
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM between steps: keep every finished step. Inside Adam's update the
            # prompt may be half-written, so the last saved state stays authoritative.
            if not self._updating and self.step != self._saved_step:
                self.save_state()
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if self.step != self._saved_step:
            self.save_state()
        best = self.output_dir / BEST_PROMPT
        return TrainResult(
            step=self.step,
            total_steps=total,
            losses=losses,
            validations=list(self.validations),
            best_score=self.best_score,
            best_step=self.best_step,
            last_prompt=self.output_dir / LAST_PROMPT,
            best_prompt=best if best.is_file() else None,
        )
