"""Prompt tuning for SD4Match: Single, Class and CPM (docs/design.md §8, §13.12).

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
   batch (the paper's batch 9; the official scripts probably stepped at an effective 3, docs/design.md §8.4);
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._version import __version__
from ..config import DEFAULT_DINO_MODEL
from ..data.base import PairDataset
from ..errors import ConfigError
from ..evaluation.report import write_json
from ..evaluation.runner import evaluate
from ..features import ImageBatch
from ..features.torch_backend import batch_features
from ..matcher import Matcher
from ..models.cpm import CPMConfig
from ..models.features import SDFeatureExtractor
from ..models.loading import SDComponents
from ..models.text import encode_token_embeddings
from ..noise import derive_seed, draw_pair_noise
from ..ops.geometry import frame_to_grid
from ..ops.loss import pair_loss
from ..prompts import PromptKind, save_prompt
from ..prompts.trainable import TrainablePrompt, build_trainable_prompt
from .checkpoint import check_resumable, check_state, load_state, save_state
from .config import TrainConfig, autocast_dtype, resolve_device
from .data import TrainBatch, check_splits, step_loader
from .dino_cache import DinoTokenCache
from .logs import log_step, open_tensorboard
from .validation import validation_matcher

__all__ = ["Trainer", "TrainResult", "resolve_device", "autocast_dtype"]

STATE_FILE = "state.pt"
LAST_PROMPT = "last.safetensors"
BEST_PROMPT = "best.safetensors"


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
        # 1. Check the inputs
        check_splits(config, train_set, val_set)
        if config.prompt is PromptKind.CPM and dino is None:
            raise ConfigError("a CPM prompt needs DINOv2: pass dino=(model, processor)")
        self.config, self.components, self.dino = config, components, dino
        self.train_set, self.val_set = train_set, val_set
        self.progress, self.tensorboard = progress, tensorboard
        self.output_dir = Path(config.output_dir)
        # 2. Put the frozen models on the device
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.extractor = self._frozen_extractor()
        self.latent_shape = self.extractor.latent_shape(config.image_size)
        # 3. The DINOv2 token cache (CPM)
        self.dino_cache = self._dino_token_cache()
        # 4. The prompt, its optimiser, the fp16 grad scaler and the training noise
        self.prompt = self._initial_prompt()
        self.optimizer = torch.optim.Adam(self.prompt.param_groups(config.lr, config.network_lr))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.noise_generator = torch.Generator().manual_seed(derive_seed(config.seed, "train-noise"))
        # 5. Where the run stands: fresh, or resumed from the saved state
        self.step, self.best_score, self.best_step = 0, -1.0, -1
        self.validations: list[dict] = []
        self._saved_step = -1
        self._updating = False
        self.resumed = self._maybe_resume()

    def _frozen_extractor(self) -> SDFeatureExtractor:
        parts = self.components
        for module in (parts.unet, parts.vae, parts.text_encoder):
            module.requires_grad_(False).eval().to(self.device)
        if self.config.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        return SDFeatureExtractor(parts.vae, parts.unet, parts.scheduler, self.config.timestep)

    def _dino_token_cache(self) -> DinoTokenCache | None:
        if self.config.prompt is not PromptKind.CPM:
            return None
        model, processor = self.dino  # type: ignore[misc]
        model.to(self.device).eval().requires_grad_(False)
        return DinoTokenCache(model, processor, self.config.dino or DEFAULT_DINO_MODEL, self.config.dino_cache or None)

    def _initial_prompt(self) -> TrainablePrompt:
        cfg, text_encoder = self.config, self.components.text_encoder
        cpm_config = None
        if cfg.prompt is PromptKind.CPM:
            cpm_config = CPMConfig(
                dino_dim=int(self.dino[0].config.hidden_size),  # type: ignore[index]
                text_dim=int(text_encoder.config.hidden_size),
                global_length=cfg.cpm_global,
                cond_length=cfg.cpm_cond,
            )
        prompt = build_trainable_prompt(
            cfg.prompt,
            self.components.tokenizer,
            text_encoder,
            seed=derive_seed(cfg.seed, "prompt-init"),
            categories=self.train_set.categories,
            cpm_config=cpm_config,
        )
        return prompt.to(self.device)

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def _maybe_resume(self) -> bool:
        if not self.state_path.is_file():
            return False
        state = load_state(self.state_path)
        check_state(state, self.state_path, self.prompt, self.optimizer)  # damaged files stop here, clearly
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

    def _autocast(self) -> contextlib.AbstractContextManager:
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
        # 1. Draw every pair's noise, source then target, whatever the micro-batch split
        noises = [n for _ in range(p) for n in draw_pair_noise(self.noise_generator, self.config.ensemble, self.latent_shape)]
        images = ImageBatch.from_pixels(batch.pixels, noises, [c for c in batch.categories for _ in (0, 1)])
        dino = self._dino_tokens(batch)
        # 2. Accumulate the gradient of the mean loss over the step's micro-batches
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        micro = self.config.micro_batch
        for start in range(0, p, micro):
            pairs = list(range(start, min(start + micro, p)))
            total += self._accumulate(batch, images, dino, pairs, p)
        # 3. One Adam step (the fp16 grad scaler skips steps with non-finite gradients)
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self._updating = False
        return total

    def _accumulate(
        self, batch: TrainBatch, images: ImageBatch, dino: tuple[Tensor | None, Tensor | None], pairs: list[int], p: int
    ) -> float:
        """Forward and backward of one micro-batch of ``pairs``; its summed pair losses / ``p``."""
        micro = images.select([2 * i + j for i in pairs for j in (0, 1)]).to(self.device, non_blocking=True)
        dino0, dino1 = (None if t is None else t[pairs] for t in dino)
        with self._autocast():
            tokens = self.prompt.token_embeds([batch.categories[i] for i in pairs], dino0, dino1)
            context = encode_token_embeddings(self.components.text_encoder, tokens)  # (m, 77, D)
            feats = batch_features(self.extractor, micro, context.repeat_interleave(2, dim=0)).float()
        grid_hw = (self.config.image_size // 16, self.config.image_size // 16)
        if feats.shape[-2:] != grid_hw:
            raise ConfigError(f"feature grid {tuple(feats.shape[-2:])} differs from the expected {grid_hw}")
        losses = [self._pair_loss(feats[2 * k], feats[2 * k + 1], batch, i, grid_hw) for k, i in enumerate(pairs)]
        loss = torch.stack(losses).sum() / p  # the gradient of the step is the mean over all p pairs
        self.scaler.scale(loss).backward()
        return float(loss.detach())

    def _pair_loss(self, feat0: Tensor, feat1: Tensor, batch: TrainBatch, i: int, grid_hw: tuple[int, int]) -> Tensor:
        cfg = self.config
        points0 = frame_to_grid(batch.kps0[i].to(self.device), cfg.image_size, grid_hw)
        points1 = frame_to_grid(batch.kps1[i].to(self.device), cfg.image_size, grid_hw)
        return pair_loss(feat0, feat1, points0, points1, cfg.beta, cfg.label_kernel, cfg.label_sigma)

    # ------------------------------------------------------------------ validation

    def validation_matcher(self) -> Matcher:
        """A Matcher with the current prompt, t = training timestep, E = 1, nearest neighbour."""
        return validation_matcher(self.components, self.prompt.to_weights(), self.config, self.device, self.dino)

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
        history = {"best_step": self.best_step, "best_score": self.best_score, "history": self.validations}
        write_json(self.output_dir / "validation.json", history)
        return score

    # ------------------------------------------------------------------ loop

    def run(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Train until ``total_steps`` (from the resumed step, if any).

        Args:
            on_step: called as ``on_step(step, loss)`` after every optimiser step.
        """
        # 1. Record the settings and open the logs
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.output_dir / "config.json", cfg.to_dict())  # atomic, like every file the run writes
        total = cfg.total_steps(len(self.train_set))
        writer = open_tensorboard(self.output_dir, self.step) if self.tensorboard else None
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not self.progress, dynamic_ncols=True)
        # 2. Step, validate and save until the last step; a kill keeps every finished step
        losses: list[tuple[int, float]] = []
        try:
            self._loop(total, writer, bar, losses, on_step)
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
        # 3. Save the final state and report
        if self.step != self._saved_step:
            self.save_state()
        return self._result(total, losses)

    def _loop(self, total: int, writer: Any, bar: tqdm, losses: list, on_step: Callable | None) -> None:
        cfg = self.config
        val_every = cfg.val_every or cfg.steps_per_epoch(len(self.train_set))
        last_time = time.perf_counter()
        loader = step_loader(self.train_set, cfg, self.step, total, self.dino_cache is not None, self.device.type == "cuda")
        for batch in loader:
            loss = self.train_step(batch)
            losses.append((self.step, loss))
            now = time.perf_counter()
            if writer is not None:
                log_step(writer, self.step, loss, [g["lr"] for g in self.optimizer.param_groups], now - last_time)
            last_time = now
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", best=f"{self.best_score:.3f}" if self.best_step >= 0 else "-")
            if on_step is not None:
                on_step(self.step, loss)
            validated = self.val_set is not None and (self.step % val_every == 0 or self.step == total)
            if validated:
                score = self.validate()
                if writer is not None:
                    writer.add_scalar(f"val/nn_pck@{cfg.val_alpha:g}", score, self.step)
            if validated or self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save_state()

    def _result(self, total: int, losses: list[tuple[int, float]]) -> TrainResult:
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
