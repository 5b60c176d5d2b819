"""Prompt files: the official caption.pt / ckpt.pt formats and ours, read without running code (docs/design.md §11, §13.8)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from sd4match_sdk import PromptError, UnknownCategoryError
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.models.cpm import CPMConfig, ConditionalPromptModule
from sd4match_sdk.models.text import encode_token_embeddings, special_token_embeddings
from sd4match_sdk.prompts import PromptContexts, PromptKind, PromptWeights, load_prompt, load_prompt_file, save_prompt


def _official_cpm_formula(module: ConditionalPromptModule, f_src: torch.Tensor, f_trg: torch.Tensor) -> torch.Tensor:
    """docs/design.md §4.4, written out with PyTorch's own AdaptiveMaxPool1d."""
    x = module.linear_C(torch.cat([f_src, f_trg], dim=2))
    x = module.linear_N(x.permute(0, 2, 1)).permute(0, 2, 1)
    x = nn.AdaptiveMaxPool1d(module.config.cond_length)(x.permute(0, 2, 1)).permute(0, 2, 1)
    x = module.positional_embedding + x
    cond = torch.tanh(module.alpha_cond) * x
    return torch.cat([module.global_embeds.expand(len(x), -1, -1), cond], dim=1)


def test_official_single_caption_pt(tmp_path: Path, sd_components, token_embeds, clip_forward) -> None:
    embeds = token_embeds("a photo of a cat")
    path = tmp_path / "Single_spair_sd2-1_TokenEmbeds75" / "caption.pt"
    path.parent.mkdir()
    torch.save({"dataset": embeds.clone().requires_grad_(True)}, path)
    weights = load_prompt(str(path.parent))  # the official directory layout
    assert weights.kind is PromptKind.SINGLE
    ctx = PromptContexts(weights, sd_components.tokenizer, sd_components.text_encoder)
    torch.testing.assert_close(ctx.fixed(), clip_forward("a photo of a cat"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ctx.fixed("anything"), ctx.fixed())  # a single prompt ignores categories


def test_official_class_caption_pt(tmp_path: Path, sd_components, token_embeds, clip_forward) -> None:
    path = tmp_path / "caption.pt"
    torch.save({"cat": token_embeds("a photo of a cat"), "dog": token_embeds("a photo of a dog")}, path)
    weights = load_prompt_file(path)
    assert weights.kind is PromptKind.CLASS and weights.categories == ["cat", "dog"]
    ctx = PromptContexts(weights, sd_components.tokenizer, sd_components.text_encoder)
    torch.testing.assert_close(ctx.fixed("dog"), clip_forward("a photo of a dog"), atol=1e-5, rtol=1e-5)
    with pytest.raises(UnknownCategoryError, match="cat, dog"):
        ctx.fixed(None)
    with pytest.raises(UnknownCategoryError, match="'horse'.*cat, dog"):
        ctx.fixed("horse")


def test_official_cpm_ckpt(tmp_path: Path, sd_components) -> None:
    torch.manual_seed(0)
    cpm = ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32))
    state = cpm.state_dict()
    state["text_model_embeddings.token_embedding.weight"] = torch.zeros(5, 32)  # official files may carry these
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    weights = load_prompt_file(path)
    assert weights.kind is PromptKind.CPM
    ctx = PromptContexts(weights, sd_components.tokenizer, sd_components.text_encoder)
    f_src, f_trg = torch.randn(2, 256, 32), torch.randn(2, 256, 32)
    with torch.no_grad():
        got = ctx.pair(f_src, f_trg)
        learned = _official_cpm_formula(cpm, f_src, f_trg)
        sos, eos = special_token_embeddings(sd_components.tokenizer, sd_components.text_encoder)
        # SOS + pos0 and EOS + pos76 exactly as the embedding layer produces them.
        ids = torch.full((1, 77), 0)
        ids[0, 0], ids[0, 76] = sd_components.tokenizer.bos_token_id, sd_components.tokenizer.eos_token_id
        emb = sd_components.text_encoder.embeddings(input_ids=ids)
        torch.testing.assert_close(sos[0, 0], emb[0, 0])
        torch.testing.assert_close(eos[0, 0], emb[0, 76])
        full = torch.cat([emb[:, :1].expand(2, -1, -1), learned, emb[:, 76:].expand(2, -1, -1)], dim=1)
        expected = encode_token_embeddings(sd_components.text_encoder, full)
    assert got.shape == (2, 77, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError):
        ctx.fixed()


@pytest.mark.parametrize("kind", ["single", "class", "cpm"])
def test_safetensors_round_trip(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    if kind == "single":
        weights = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.randn(1, 77, 32)})
    elif kind == "class":
        weights = PromptWeights(PromptKind.CLASS, token_embeds={"cat": torch.randn(1, 77, 32), "dog": torch.randn(1, 77, 32)})
    else:
        weights = PromptWeights(PromptKind.CPM, cpm_state=ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32)).state_dict())
    path = save_prompt(tmp_path / "p.safetensors", weights, model_id="tiny", timestep=261)
    loaded = load_prompt(str(path))
    assert loaded.kind == weights.kind and loaded.metadata["model_id"] == "tiny" and loaded.metadata["timestep"] == "261"
    before = weights.token_embeds or weights.cpm_state
    after = loaded.token_embeds or loaded.cpm_state
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=0, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind


class _Evil:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("pwned",))


@pytest.mark.parametrize("content, match", [
    ([torch.zeros(1, 77, 32)], "dict of tensors"),
    ({"a": torch.zeros(77, 32)}, "not \\(1, L, D\\)"),
    ({"a": "text"}, "dict of tensors"),
])
def test_unknown_formats(tmp_path: Path, content, match: str) -> None:
    path = tmp_path / "caption.pt"
    torch.save(content, path)
    with pytest.raises(PromptError, match=match):
        load_prompt(str(path))


def test_pickled_code_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "caption.pt"
    with open(path, "wb") as f:
        pickle.dump({"dataset": _Evil()}, f)
    with pytest.raises(PromptError, match="weights-only"):
        load_prompt(str(path))
    assert "pwned" not in capsys.readouterr().out


def test_foreign_safetensors_and_missing_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(PromptError, match="not an sd4match prompt"):
        load_prompt(str(tmp_path / "model.safetensors"))
    with pytest.raises(PromptError, match="not found"):
        load_prompt(str(tmp_path / "missing.safetensors"))
    with pytest.raises(PromptError, match="no prompt file"):
        load_prompt(str(tmp_path))


# ------------------------------------------------------------ prompts are checked by value (docs/design.md §13.16)


def _ours(path: Path, kind: str, tensors: dict[str, torch.Tensor]) -> Path:
    """A safetensors file with our header and arbitrary tensors (what a hand-edited file holds)."""
    from safetensors.torch import save_file

    header = {"format": "sd4match-prompt", "format_version": "1", "kind": kind, "categories": "[]"}
    save_file(tensors, str(path), metadata=header)
    return path


def _cpm_state(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = dict(ConditionalPromptModule(CPMConfig(dino_dim=32, text_dim=32)).state_dict())
    state.update(changes)
    return state


class TestPromptValues:
    @pytest.mark.parametrize(
        "kind, tensors, message",
        [
            ("single", {"token_embeds": torch.full((1, 77, 32), float("nan"))}, r"'token_embeds' holds 2464 NaN/inf.*use an earlier prompt file"),
            ("class", {"token_embeds.cat": torch.zeros(1, 77, 32), "token_embeds.dog": torch.full((1, 77, 32), float("inf"))}, r"'token_embeds\.dog' holds 2464 NaN/inf"),
            ("single", {"token_embeds": torch.zeros(1, 77, 32, dtype=torch.int32)}, r"non-floating-point tensors \{'token_embeds': 'int32'\}.*re-save it"),
            ("class", {"token_embeds.cat": torch.zeros(1, 77, 32, dtype=torch.bool)}, r"non-floating-point tensors.*'bool'"),
            ("single", {"token_embeds.cat": torch.zeros(1, 77, 32), "token_embeds.dog": torch.zeros(1, 77, 32)}, r"says kind=single but holds tensors \['token_embeds\.cat', 'token_embeds\.dog'\].*re-save"),
            ("class", {"token_embeds": torch.zeros(1, 77, 32)}, r"says kind=class but holds tensors \['token_embeds'\]"),
            ("cpm", {"token_embeds": torch.zeros(1, 77, 32)}, r"says kind=cpm but holds tensors"),
            ("class", {"token_embeds.cat": torch.zeros(1, 77, 32), "token_embeds.dog": torch.zeros(1, 70, 32)}, r"must all be \(1, L, D\) of one shape.*another model"),
            ("single", {"token_embeds": torch.zeros(77, 32)}, r"must all be \(1, L, D\)"),
            ("cpm", {f"cpm.{k}": v for k, v in _cpm_state(global_embeds=torch.zeros(25, 32)).items()}, r"wrong rank \{'global_embeds': \(25, 32\)\}.*damaged or not a CPM"),
            ("cpm", {f"cpm.{k}": v for k, v in _cpm_state(**{"linear_N.weight": torch.zeros(256)}).items()}, r"wrong rank.*linear_N\.weight"),
            ("cpm", {f"cpm.{k}": v for k, v in _cpm_state(alpha_cond=torch.zeros(1, 40, 32)).items()}, r"sizes \(found, expected\) \{'alpha_cond'.*another CPM variant"),
            ("cpm", {f"cpm.{k}": v for k, v in _cpm_state().items() if k != "linear_C.bias"}, r"lacks linear_C\.bias"),
            ("cpm", {f"cpm.{k}": v for k, v in _cpm_state(positional_embedding=torch.full((1, 50, 32), float("nan"))).items()}, r"'cpm\.positional_embedding' holds 1600 NaN/inf"),
        ],
        ids=["nan-single", "inf-class", "int", "bool", "single-with-class-tensors", "class-with-single-tensor",
             "cpm-with-token-embeds", "ragged-class", "rank-2-single", "cpm-rank", "cpm-rank-linear", "cpm-size",
             "cpm-missing", "cpm-nan"],
    )  # fmt: skip
    def test_our_files(self, tmp_path: Path, kind, tensors, message) -> None:
        path = _ours(tmp_path / "p.safetensors", kind, tensors)
        with pytest.raises(PromptError, match=message) as info:
            load_prompt(str(path))
        assert "p.safetensors" in str(info.value)

    @pytest.mark.parametrize(
        "content, message",
        [
            ({"dataset": torch.full((1, 77, 32), float("nan"))}, r"'dataset' holds 2464 NaN/inf"),
            ({"dataset": torch.zeros(1, 77, 32, dtype=torch.int64)}, r"non-floating-point tensors \{'dataset': 'int64'\}"),
            (_cpm_state(**{"linear_C.weight": torch.zeros(32)}), r"wrong rank.*linear_C\.weight"),
        ],
        ids=["nan-caption", "int-caption", "cpm-rank-ckpt"],
    )
    def test_official_files(self, tmp_path: Path, content, message) -> None:
        path = tmp_path / ("ckpt.pt" if "linear_C.weight" in content else "caption.pt")
        torch.save(content, path)
        with pytest.raises(PromptError, match=message):
            load_prompt(str(path))

    def test_prompt_weights_passed_directly(self) -> None:
        bad = PromptWeights(PromptKind.SINGLE, token_embeds={"dataset": torch.tensor([[[1.0, float("nan")]]])})
        with pytest.raises(PromptError, match=r"the prompt: prompt tensor 'dataset' holds 1 NaN/inf"):
            load_prompt(bad)
        two = PromptWeights(PromptKind.SINGLE, token_embeds={"a": torch.zeros(1, 77, 8), "b": torch.zeros(1, 77, 8)})
        with pytest.raises(PromptError, match="a single prompt holds one token-embedding tensor, not 2; .*kind=class"):
            load_prompt(two)

    def test_nan_prompt_never_reaches_a_match(self, tmp_path: Path, tiny_sd) -> None:
        from sd4match_sdk import Matcher

        path = _ours(tmp_path / "nan.safetensors", "single", {"token_embeds": torch.full((1, 77, 32), float("nan"))})
        with pytest.raises(PromptError, match="NaN/inf"):
            Matcher.from_pretrained(str(tiny_sd), prompt=str(path), image_size=256, ensemble=1)


class TestPathLikeStrings:
    @pytest.mark.parametrize(
        "text",
        ["runs/single/best", "prompts/", "missing.safetensors", "./prompt", "../prompt", "~/prompts/x", "/abs/prompt",
         "My Prompts/single.pt", "C:\\prompts\\x"],
    )  # fmt: skip
    def test_missing_paths_are_errors_not_text(self, text: str) -> None:
        with pytest.raises(PromptError, match=r"prompt file not found: .*check the path.*PromptWeights\.from_text"):
            load_prompt(text)

    @pytest.mark.parametrize("text", ["a photo of a {category}", "a photo of a cat/dog", "", "cat"])
    def test_texts_stay_texts(self, text: str) -> None:
        weights = load_prompt(text)
        assert weights.kind is PromptKind.TEXT and weights.text == text

    def test_an_explicit_text_prompt_may_look_like_a_path(self) -> None:
        assert load_prompt(PromptWeights.from_text("runs/single/best")).text == "runs/single/best"
