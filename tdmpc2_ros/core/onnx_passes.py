"""Rewrites of the exported planner graph that keep its maths and make ONNX Runtime's CPU kernels
faster. The graph stays plain ONNX: a runtime that fuses it back computes the same numbers.

split_gemm_bias: every Linear layer leaves the exporter as Gemm(x, W, b). ONNX Runtime's CPU Gemm
first broadcasts the bias into the whole output on one thread and then accumulates the product into
it (beta = 1). On [488, 384] x [384, 384] with 2 threads: Gemm with a bias 516 us, MatMul then a
broadcast Add 461 us, Gemm without a bias 437 us. A trained model has a bias in every layer (a freshly
initialised one has none: its biases are zero and the exporter drops them), so on the 1M preset's
full plan this is about 5 ms of 76 (benchmark/core.py: trained_like). ONNX Runtime's MatMulAddFusion
would fuse the pair back into a Gemm; planner sessions on 2+ threads switch it off, those on 1 thread
(where the split does not pay) leave it on (runtime/onnx_planner.py: new_session). A graph exported
before this pass keeps its Gemms and plans as fast as it did.
"""

from __future__ import annotations

from onnx import ModelProto, helper


def _plain(gemm) -> bool:
    """alpha = beta = 1 and no transposes: the product plus the bias, nothing else."""
    a = {attr.name: helper.get_attribute_value(attr) for attr in gemm.attribute}
    return a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0 and not a.get("transA", 0) and not a.get("transB", 0)


def split_gemm_bias(model: ModelProto) -> int:
    """Replace Gemm(A, B, C) with alpha = beta = 1 and no transposes by Add(MatMul(A, B), C), in place.
    Returns how many were split. A Gemm with other attributes, or without C, is left alone."""
    nodes, split = [], 0
    for node in model.graph.node:
        if node.op_type != "Gemm" or len(node.input) != 3 or not node.input[2] or not _plain(node):
            nodes.append(node)
            continue
        product = f"{node.output[0]}__matmul"
        nodes.append(helper.make_node("MatMul", list(node.input[:2]), [product], name=f"{node.name}__matmul"))
        nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{node.name}__bias"))
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split
