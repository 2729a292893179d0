"""The planner's execution providers (runtime/onnx_planner.py): chosen once per process, checked at
once, and computing the same plan as ONNX Runtime's own CPU kernels."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from tdmpc2_ros.ros.params import PlannerParams
from tdmpc2_ros.runtime import OnnxPlanner
from tdmpc2_ros.runtime.onnx_planner import INTEL_VENDOR_ID, cpu_vendor, execution_provider, set_execution_provider


OPENVINO_WHEELS = sys.platform == "linux" and platform.machine() == "x86_64"  # requirements.txt's marker


@pytest.fixture(autouse=True)
def restore_provider():
    before = execution_provider()
    yield
    set_execution_provider(before)


def _plans(path, obs_dim, provider, ticks=4):
    set_execution_provider(provider)
    planner = OnnxPlanner(path, obs_dim=obs_dim, threads=2, seed=11)
    obs = np.linspace(-1.0, 1.0, obs_dim, dtype=np.float32)
    return planner, [planner.plan(obs + 0.1 * t) for t in range(ticks)]


def test_an_unknown_provider_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="auto, cpu, openvino, cuda.*'tpu'"):
        set_execution_provider("tpu")
    with pytest.raises(ValueError, match="execution_provider must be one of"):
        PlannerParams(execution_provider="tpu").validate()


def test_openvino_without_its_package_is_refused_at_once_with_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", None)  # as if not installed
    with pytest.raises(ValueError, match="pip install onnxruntime-ep-openvino"):
        set_execution_provider("openvino")
    assert execution_provider() != "openvino"


def test_cuda_where_this_onnxruntime_has_none_is_refused():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        set_execution_provider("cuda")
        assert execution_provider() == "cuda"
    else:
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            set_execution_provider("cuda")


def test_openvino_plans_what_the_cpu_kernels_plan(small_onnx):
    """Same graph, same noise: the actions, values and warm starts of 4 ticks agree to 1e-4 (the parity
    bar of the export). The OpenVINO session really runs on OpenVINO, not on a silent CPU fallback.

    The plugin serves Intel CPUs only. On another CPU (the project's AMD machines) asking for it is
    refused at once, naming the CPU's vendor and the way out; on an Intel CPU it must plan."""
    if not OPENVINO_WHEELS:
        pytest.skip("requirements.txt installs the OpenVINO plugin on x86-64 Linux only")
    vendor, vendor_id = cpu_vendor()
    if vendor_id != INTEL_VENDOR_ID:
        for _ in range(2):  # and again: the plugin is registered once, the refusal stays the same
            with pytest.raises(ValueError, match=rf"offers no device for this CPU \(vendor {vendor};.*Intel CPUs only.*'cpu'"):
                set_execution_provider("openvino")
        assert execution_provider() != "openvino"
        return
    path, contract = small_onnx
    _, cpu = _plans(path, contract.obs.dim, "cpu")
    planner, ov = _plans(path, contract.obs.dim, "openvino")
    assert planner.session.get_providers()[0] == "OpenVINOExecutionProvider"
    for a, b in zip(cpu, ov):
        np.testing.assert_allclose(a.action, b.action, atol=1e-4)
        np.testing.assert_allclose(a.mean, b.mean, atol=1e-4)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-4, atol=1e-4)


def test_cpu_is_onnx_runtimes_own_kernels(small_onnx):
    path, contract = small_onnx
    planner, plans = _plans(path, contract.obs.dim, "cpu", ticks=1)
    assert planner.session.get_providers() == ["CPUExecutionProvider"]
    assert np.isfinite(plans[0].action).all()
