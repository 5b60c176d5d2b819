"""The float16 UNet graph: fp32 islands where SD 2.1 needs them, and a bounded feature error."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from sd4match_sdk import Matcher
from sd4match_sdk.demo import demo_images
from sd4match_sdk.engine.directory import read_manifest


def _op_input_types(path) -> dict[str, collections.Counter]:
    import onnx

    model = onnx.load(str(path))
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    types.update({i.name: i.data_type for i in model.graph.initializer})
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for node in model.graph.node:
        seen[node.op_type][onnx.TensorProto.DataType.Name(types.get(node.input[0], 0))] += 1
    return seen


def test_fp16_graph_keeps_softmax_and_norms_in_fp32(engine_fp16):
    manifest = read_manifest(engine_fp16)
    assert manifest.precision == "fp16" and manifest.graphs["unet"].precision == "fp16"
    assert manifest.graphs["vae_encoder"].precision == "fp32"
    assert [s.dtype for s in manifest.graphs["unet"].inputs] == ["float32", "float32"]  # casts are inside
    assert {s.dtype for s in manifest.graphs["unet"].outputs} == {"float32"}
    ops = _op_input_types(engine_fp16 / "unet.onnx")
    assert ops["Conv"]["FLOAT16"] > 0 and ops["Conv"]["FLOAT"] == 0  # the heavy ops run in fp16
    assert set(ops["Softmax"]) == {"FLOAT"}, ops["Softmax"]
    norms = ops["InstanceNormalization"] + ops["LayerNormalization"] + ops["GroupNormalization"]
    assert norms and set(norms) == {"FLOAT"}, norms


def test_fp16_feature_error_is_small(engine_fp16, engine_single, small_feature):
    """fp16 vs fp32 engine on the same noise (ONNX Runtime CPU runs the fp16 graph)."""
    a, _ = demo_images()
    fp32 = Matcher.from_pretrained(str(engine_single)).features(a, seed=0).features
    try:
        fp16 = Matcher.from_pretrained(str(engine_fp16)).features(a, seed=0).features
    except Exception as err:  # noqa: BLE001 - an ONNX Runtime build without fp16 CPU kernels
        pytest.skip(f"this onnxruntime cannot run the fp16 graph on the CPU: {err}")
    relative = ((fp16 - fp32).abs().max() / fp32.abs().max()).item()
    cosine = torch.nn.functional.cosine_similarity(fp16, fp32, dim=1)
    assert 0 < relative < 1e-2, relative
    assert cosine.min().item() > 0.999
    assert tuple(fp16.shape) == (1, 64, small_feature.image_size // 16, small_feature.image_size // 16)
    assert np.isfinite(fp16.numpy()).all()
