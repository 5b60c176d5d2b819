"""Kill-and-resume equality, and the batch gradient being the mean over all its pairs (docs/design.md §13.12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sd4match_sdk.data import SPairDataset
from sd4match_sdk.prompts import PromptKind, load_prompt
from sd4match_sdk.training import Trainer, TrainConfig
from sd4match_sdk.training.checkpoint import load_state
from sd4match_sdk.training.data import TrainPairs, collate_pairs

SIZE = 256


def config(root: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        prompt="single", dataset="spair", root=str(root), output_dir=str(out), train_split="test", val_split="test",
        image_size=SIZE, batch_size=2, num_workers=0, max_steps=5, checkpoint_every=2, val_every=2, val_max_pairs=2,
        device="cpu", seed=7,
    )  # fmt: skip
    values.update(changes)
    return TrainConfig(**values)


def trainer(cfg: TrainConfig, components, dino=None) -> Trainer:
    split = SPairDataset(cfg.root, "test", frame=SIZE)
    return Trainer(cfg, components, split, split, dino=dino, progress=False, tensorboard=False)


class Crash(Exception):
    """Stands for a kill: nothing is saved when it happens."""


def crash_at(step_to_crash: int):
    def hook(step: int, loss: float) -> None:
        if step == step_to_crash:
            raise Crash

    return hook


def prompt_tensors(path: Path) -> dict[str, torch.Tensor]:
    weights = load_prompt(path)
    return weights.cpm_state if weights.kind is PromptKind.CPM else weights.token_embeds


def assert_same_prompts(a: Path, b: Path) -> None:
    ta, tb = prompt_tensors(a), prompt_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


@pytest.mark.parametrize("kind", ["single", "cpm"])
def test_kill_and_resume_equals_uninterrupted(kind, load_components, spair_root, tiny_dino, tmp_path):
    dino = None
    if kind == "cpm":
        from sd4match_sdk.models.loading import load_dino

        dino = load_dino(str(tiny_dino))
    extra = {"dino": str(tiny_dino), "dino_cache": str(tmp_path / "dino")} if kind == "cpm" else {}
    full = trainer(config(spair_root, tmp_path / "full", prompt=kind, **extra), load_components(), dino).run()
    assert full.step == 5 and [s for s, _ in full.losses] == [1, 2, 3, 4, 5]

    out = tmp_path / "killed"
    cfg = config(spair_root, out, prompt=kind, **extra)
    with pytest.raises(Crash):
        trainer(cfg, load_components(), dino).run(on_step=crash_at(3))  # dies after step 3, before saving it
    assert load_state(out / "state.pt")["step"] == 2  # the last periodic state

    resumed = trainer(cfg, load_components(), dino)
    assert resumed.resumed and resumed.step == 2
    result = resumed.run()
    assert result.step == 5 and [s for s, _ in result.losses] == [3, 4, 5]
    assert result.losses == full.losses[2:]  # the same batches, noise and prompt: identical losses
    assert_same_prompts(tmp_path / "full" / "last.safetensors", out / "last.safetensors")
    assert_same_prompts(tmp_path / "full" / "best.safetensors", out / "best.safetensors")
    assert [v["step"] for v in result.validations] == [2, 4, 5]
    assert [v["score"] for v in result.validations] == [v["score"] for v in full.validations]
    state_full, state_resumed = load_state(tmp_path / "full" / "state.pt"), load_state(out / "state.pt")
    for key, value in state_full["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(value[name], state_resumed["optimizer"]["state"][key][name])


def test_ctrl_c_saves_the_finished_step(load_components, spair_root, tmp_path):
    cfg = config(spair_root, tmp_path / "run", max_steps=3, checkpoint_every=100, val_every=100)

    def interrupt(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer(cfg, load_components()).run(on_step=interrupt)
    assert load_state(tmp_path / "run" / "state.pt")["step"] == 2  # nothing lost
    assert trainer(cfg, load_components()).step == 2


def test_resume_refuses_changed_settings(load_components, spair_root, tmp_path):
    from sd4match_sdk.errors import ConfigError

    trainer(config(spair_root, tmp_path / "run", max_steps=1), load_components()).run()
    with pytest.raises(ConfigError, match="lr: 0.01 -> 0.02"):
        trainer(config(spair_root, tmp_path / "run", max_steps=2, lr=0.02), load_components())
    # a longer run with the same settings continues
    assert trainer(config(spair_root, tmp_path / "run", max_steps=2), load_components()).run().step == 2


def grads(t: Trainer) -> list[torch.Tensor]:
    return [p.grad.clone() for p in t.prompt.parameters()]


def test_step_gradient_is_the_mean_over_all_pairs(load_components, spair_root, tmp_path):
    split = SPairDataset(spair_root, "test", frame=SIZE)
    items = [TrainPairs(split, SIZE)[i] for i in (0, 1)]
    both, first = collate_pairs(items), collate_pairs(items[:1])

    accumulated = trainer(config(spair_root, tmp_path / "a", micro_batch_size=1), load_components())
    accumulated.train_step(both)
    at_once = trainer(config(spair_root, tmp_path / "b", micro_batch_size=2), load_components())
    at_once.train_step(both)
    # each pair alone, with the noise it gets inside the batch (seeded by its position in the step)
    alone0 = trainer(config(spair_root, tmp_path / "c", batch_size=1), load_components())
    alone0.train_step(first)
    alone1 = trainer(config(spair_root, tmp_path / "d", batch_size=1), load_components())
    alone1.train_step(collate_pairs(items[1:], positions=[1], step_pairs=1))

    for g_acc, g_once, g0, g1 in zip(grads(accumulated), grads(at_once), grads(alone0), grads(alone1)):
        scale = float(g_acc.abs().max())
        assert scale > 0
        # float32 sums differ with the UNet batch size; a wrong scaling would be off by 2x
        torch.testing.assert_close(g_acc, g_once, rtol=1e-3, atol=1e-3 * scale)
        torch.testing.assert_close(g_acc, (g0 + g1) / 2, rtol=1e-3, atol=1e-3 * scale)
        assert float((g_acc - (g0 + g1)).abs().max()) > 0.1 * scale  # not the sum


def test_gradient_checkpointing_gives_the_same_gradient(load_components, spair_root, tmp_path):
    split = SPairDataset(spair_root, "test", frame=SIZE)
    batch = collate_pairs([TrainPairs(split, SIZE)[0]])
    plain = trainer(config(spair_root, tmp_path / "a", batch_size=1), load_components())
    plain.train_step(batch)
    checkpointed = trainer(config(spair_root, tmp_path / "b", batch_size=1, gradient_checkpointing=True), load_components())
    assert checkpointed.components.unet.is_gradient_checkpointing
    checkpointed.train_step(batch)
    for a, b in zip(grads(plain), grads(checkpointed)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7 * float(a.abs().max()))
