"""The exporter's graph rewrites (core/onnx_passes.py): same numbers, and the planner's sessions keep them."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tdmpc2_ros.core.onnx_passes import split_gemm_bias
from tdmpc2_ros.runtime.onnx_planner import new_session, session_options


def _gemm_model(rng, **attrs) -> onnx.ModelProto:
    """y = Gemm(x, W, b) with the given attributes, plus a bias-free Gemm that must stay as it is."""
    w, b = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    w_t = np.ascontiguousarray(w.T) if attrs.get("transB") else w
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="biased", **attrs),
             helper.make_node("Gemm", ["x", "W"], ["z"], name="bias_free", **attrs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 7])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
        initializer=[numpy_helper.from_array(w_t, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray):
    # session_options: a test that ran a planner node in this process may have set the shared thread pool
    sess = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def test_a_plain_gemm_bias_becomes_matmul_then_add_with_the_same_numbers(rng):
    model, x = _gemm_model(rng), rng.standard_normal((3, 7)).astype(np.float32)
    before = _run(model, x)
    assert split_gemm_bias(model) == 1
    assert _ops(model) == {"MatMul": 1, "Add": 1, "Gemm": 1}  # the bias-free Gemm is left alone
    for a, b in zip(before, _run(model, x)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_gemm_with_transposes_or_scaling_is_left_alone(rng):
    for attrs in ({"transB": 1}, {"alpha": 0.5}, {"beta": 2.0}):
        model = _gemm_model(rng, **attrs)
        assert split_gemm_bias(model) == 0, attrs
        assert _ops(model) == {"Gemm": 2}, attrs


def _session_graph(path, tmp_path, factory) -> onnx.ModelProto:
    """The graph ONNX Runtime runs after its own optimisations, as it writes it out."""
    opts = session_options(2)
    opts.optimized_model_filepath = str(tmp_path / f"{factory.__name__}.onnx")
    factory(path.read_bytes(), opts)
    return onnx.load(opts.optimized_model_filepath)


def _gemms_with_bias(model: onnx.ModelProto) -> list:
    return [n for n in model.graph.node if n.op_type in ("Gemm", "FusedGemm") and len(n.input) == 3 and n.input[2]]


def test_the_exported_planner_has_every_bias_split_and_the_planner_session_keeps_it(small_onnx, tmp_path):
    """The small model is perturbed, so every layer has a bias. The export splits each from its
    product; ONNX Runtime's MatMulAddFusion would fuse them back, and the planner's sessions stop it."""
    path, _ = small_onnx
    exported = onnx.load(str(path))
    assert not _gemms_with_bias(exported) and _ops(exported)["MatMul"] > 10

    def planner_session(blob, opts):
        return new_session(blob, 2, opts, providers=["CPUExecutionProvider"])

    def plain_session(blob, opts):
        return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])

    def one_thread_planner_session(blob, opts):
        return new_session(blob, 1, opts, providers=["CPUExecutionProvider"])

    assert not _gemms_with_bias(_session_graph(path, tmp_path, planner_session))
    # A plain session fuses them back into Gemm(x, W, b): the check above can fail.
    assert _gemms_with_bias(_session_graph(path, tmp_path, plain_session))
    # With one thread the split does not pay (the bias Gemm's one-thread write costs nothing extra
    # there), and the planner lets ONNX Runtime fuse it back.
    assert _gemms_with_bias(_session_graph(path, tmp_path, one_thread_planner_session))
