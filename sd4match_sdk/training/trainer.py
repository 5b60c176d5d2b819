"""Prompt tuning for SD4Match: Single, Class and CPM (docs/design.md §8, §13.12), on one or many processes (§8.8).

One optimiser step:

1. take the step's ``batch_size`` pairs (:class:`~.data.StepOrder`); under torchrun each process
   takes a contiguous block of them. Each pair draws its noise from its own generator, seeded by
   ``(seed, step, position of the pair in the step)``: source then target, ``eps_vae`` then one
   noise map each (E = 1). The numbers therefore do not depend on how the step is split;
2. for each micro-batch: build the pairs' prompts (CPM: from the DINOv2 tokens cached before
   training), encode them with the frozen CLIP text encoder, encode the images with the VAE
   (no gradient), noise the latents at t = 261 and run the truncated UNet with the prompt
   context; under fp16/bf16 autocast on CUDA;
3. loss per pair (:func:`~sd4match_sdk.ops.loss.pair_loss`), summed and divided by the step's
   number of pairs before ``backward``; the processes' gradients are then summed
   (:func:`~.gradients.reduce_step`), so the gradient is the mean over the whole step (the paper's
   batch 9; the official scripts probably stepped at an effective 3, docs/design.md §8.4);
4. one Adam step on every process (constant lr; the fp16 grad scaler skips steps with
   non-finite gradients): the processes hold the same prompt throughout.

Every ``val_every`` steps (default: once per epoch) the current prompt is scored on the val split
by nearest-neighbour PCK@0.1 at the training timestep with E = 1 (the official selection rule),
shared across the processes; a better score rewrites ``best.safetensors``. The resumable state
(:mod:`.checkpoint`) is written every ``checkpoint_every`` steps, after each validation, at the
end and on Ctrl-C (or, under torchrun, a SIGTERM: every process stops after the same step);
``last.safetensors`` follows it. Only rank 0 writes files. Both prompt files are in the SDK's
prompt format and load with ``Matcher.from_pretrained(..., prompt=path)``.
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
from ..data.base import PairDataset
from ..distributed import Distributed
from ..errors import ConfigError, DistributedError
from ..evaluation.report import write_json
from ..evaluation.runner import evaluate
from ..features import ImageBatch
from ..features.torch_backend import batch_features
from ..matcher import Matcher
from ..models.loading import SDComponents
from ..models.text import encode_token_embeddings
from ..noise import derive_seed, draw_pair_noise
from ..ops.geometry import frame_to_grid
from ..ops.loss import pair_loss
from ..prompts import PromptKind, save_prompt
from .checkpoint import check_resumable, check_state, load_state, save_state
from .config import TrainConfig, autocast_dtype, resolve_device
from .data import TrainBatch, check_splits, pair_generator, step_loader
from .gradients import reduce_step
from .logs import log_step, open_tensorboard
from .setup import filled_dino_cache, frozen_extractor, initial_prompt
from .validation import validation_matcher

__all__ = ["Trainer", "TrainResult", "autocast_dtype", "resolve_device"]

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
        stopped: the run stopped early on request (:meth:`Trainer.request_stop`); rerun to resume.
    """

    step: int
    total_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best_score: float = -1.0
    best_step: int = -1
    last_prompt: Path | None = None
    best_prompt: Path | None = None
    stopped: bool = False


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
        distributed: this process's place in a torchrun launch (default: one process). Every
            process builds a Trainer with the same arguments; rank 0 writes the files.
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
        distributed: Distributed | None = None,
    ) -> None:
        # 1. Check the inputs
        check_splits(config, train_set, val_set)
        if config.prompt is PromptKind.CPM and dino is None:
            raise ConfigError("a CPM prompt needs DINOv2: pass dino=(model, processor)")
        self.config, self.components, self.dino = config, components, dino
        self.train_set, self.val_set = train_set, val_set
        self.dist = distributed or Distributed()
        self.progress, self.tensorboard = progress and self.dist.is_main, tensorboard and self.dist.is_main
        self.output_dir = Path(config.output_dir)
        # 2. Put the frozen models on the device (under torchrun: this process's GPU)
        self.device = resolve_device(config.device, self.dist.local_rank)
        if self.device.type == "cuda" and self.dist.active:
            torch.cuda.set_device(self.device)  # NCCL works on the process's current device
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.extractor = frozen_extractor(components, config, self.device)
        self.latent_shape = self.extractor.latent_shape(config.image_size)
        # 3. The DINOv2 tokens of every training image (CPM), computed once across the processes
        self.dino_cache = None
        if config.prompt is PromptKind.CPM:
            self.dino_cache = filled_dino_cache(dino, config, train_set, self.dist, self.device, self.progress)
        # 4. The prompt, its optimiser and the fp16 grad scaler
        self.prompt = initial_prompt(config, components, train_set.categories, dino).to(self.device)
        self.optimizer = torch.optim.Adam(self.prompt.param_groups(config.lr, config.network_lr))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        # 5. Where the run stands: fresh, or resumed from the saved state (read by rank 0, sent to all)
        self.step, self.best_score, self.best_step = 0, -1.0, -1
        self.validations: list[dict] = []
        self._saved_step = -1
        self._updating = False
        self._stop_requested = self._stop_agreed = False
        self.resumed = self._maybe_resume()

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def _maybe_resume(self) -> bool:
        read = lambda: load_state(self.state_path) if self.state_path.is_file() else None  # noqa: E731
        state = self.dist.broadcast_from_main(read, "reading the training state")
        if state is None:
            return False
        check_state(state, self.state_path, self.prompt, self.optimizer)  # damaged files stop here, clearly
        check_resumable(state["config"], self.config, self.state_path)
        self.prompt.load_state_dict(state["prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
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
        """Write ``state.pt`` and ``last.safetensors`` for the current step (rank 0; the processes
        hold the same state)."""
        if self.dist.is_main:
            save_state(
                self.state_path,
                {
                    "step": self.step,
                    "prompt": {k: v.detach().cpu() for k, v in self.prompt.state_dict().items()},
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
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
        tokens = self.dino_cache.get(batch.dino_keys).to(self.device)  # (2P, 256, D)
        return tokens[0::2], tokens[1::2]

    def request_stop(self) -> None:
        """Stop after the current step (every process after the same one), saving the state; safe
        to call from a signal handler."""
        self._stop_requested = True

    def train_step(self, batch: TrainBatch) -> float:
        """One optimiser step; ``batch`` is this process's share of the step's pairs (all of them
        with one process). Returns the step's loss (mean over all its pairs) on every process."""
        # 1. Accumulate this process's share of the gradient of the step's mean loss
        self.optimizer.zero_grad(set_to_none=True)
        share, failure = 0.0, None
        try:
            share = self._accumulate_share(batch)
        except Exception as err:  # with other processes: tell them in the sum below, then raise
            if not self.dist.active:
                raise
            failure = err
        # 2. Sum the shares over the processes; agree on failures and stop requests
        outcome = reduce_step(list(self.prompt.parameters()), share, self._stop_requested, failure is not None,
                              self.dist, self.device)  # fmt: skip
        if failure is not None:
            raise failure
        if outcome.failed:
            raise DistributedError(f"another process failed in step {self.step + 1} (see its message); every process stops")
        self._stop_agreed = outcome.stop
        # 3. One Adam step (the fp16 grad scaler skips steps with non-finite gradients)
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self._updating = False
        return outcome.loss

    def _accumulate_share(self, batch: TrainBatch) -> float:
        """Forward and backward of ``batch`` in micro-batches; its summed pair losses / the step's pair count."""
        if not len(batch):
            return 0.0
        cfg = self.config
        noises = [noise for position in batch.positions
                  for noise in draw_pair_noise(pair_generator(cfg.seed, self.step, position), cfg.ensemble, self.latent_shape)]  # fmt: skip
        images = ImageBatch.from_pixels(batch.pixels, noises, [c for c in batch.categories for _ in (0, 1)])
        dino = self._dino_tokens(batch)
        total = 0.0
        for start in range(0, len(batch), cfg.micro_batch):
            pairs = list(range(start, min(start + cfg.micro_batch, len(batch))))
            total += self._accumulate(batch, images, dino, pairs)
        return total

    def _accumulate(self, batch: TrainBatch, images: ImageBatch, dino: tuple[Tensor | None, Tensor | None], pairs: list[int]) -> float:
        """Forward and backward of one micro-batch of ``pairs``; its summed pair losses / the step's pair count."""
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
        loss = torch.stack(losses).sum() / batch.step_pairs  # summed over processes: the mean over the step
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
            workers=self.config.num_workers,
            distributed=self.dist,  # the val images are shared out; every process gets the score
        )
        score = result.summary.overall[self.config.val_alpha]
        self.validations = [v for v in self.validations if v["step"] != self.step]
        self.validations.append({"step": self.step, "score": score, "seconds": result.seconds})
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_step = score, self.step
        if self.dist.is_main:
            if improved:
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
        # 1. Record the settings and open the logs (rank 0)
        cfg = self.config
        if self.dist.is_main:
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
        return self._result(total, losses, stopped=self._stop_agreed and self.step < total)

    def _loop(self, total: int, writer: Any, bar: tqdm, losses: list, on_step: Callable | None) -> None:
        cfg = self.config
        val_every = cfg.val_every or cfg.steps_per_epoch(len(self.train_set))
        last_time = time.perf_counter()
        loader = step_loader(self.train_set, cfg, self.step, total, self.device.type == "cuda", self.dist.rank,
                             self.dist.world_size)  # fmt: skip
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
            if self._stop_agreed:  # every process stops after this step; run() saves it
                return
            validated = self.val_set is not None and (self.step % val_every == 0 or self.step == total)
            if validated:
                score = self.validate()
                if writer is not None:
                    writer.add_scalar(f"val/nn_pck@{cfg.val_alpha:g}", score, self.step)
            if validated or self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save_state()

    def _result(self, total: int, losses: list[tuple[int, float]], stopped: bool) -> TrainResult:
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
            stopped=stopped,
        )
