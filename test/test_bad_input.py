"""Malformed observations, model files and checkpoints are refused loudly, naming what was expected,
and never disturb what was loaded before."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from core_helpers import SMALL_ACTION_DIM, SMALL_OBS_DIM, TINY_BUDGET
from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.config import ModelConfig, TrainConfig
from tdmpc2_ros.runtime import ModelLoadError, OnnxPlanner, PlanBudget, SpecMismatch
from tdmpc2_ros.runtime.contract import METADATA_KEY
from tdmpc2_ros.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

BAD_OBS = {
    "too short": np.zeros(SMALL_OBS_DIM - 1, np.float32),
    "too long": np.zeros(SMALL_OBS_DIM + 1, np.float32),
    "2-D row": np.zeros((1, SMALL_OBS_DIM), np.float32),
    "2-D column": np.zeros((SMALL_OBS_DIM, 1), np.float32),
    "scalar": np.float32(0.0),
    "empty": np.zeros(0, np.float32),
    "NaN": np.array([0.0, np.nan, 0.0, 0.0, 0.0], np.float32),
    "+Inf": np.array([0.0, 0.0, 0.0, np.inf, 0.0], np.float32),
    "-Inf": np.array([-np.inf, 0.0, 0.0, 0.0, 0.0], np.float32),
    "overflows float32": np.array([0.0, 1e300, 0.0, 0.0, 0.0], np.float64),
}


@pytest.fixture(scope="module")
def planner(small_onnx):
    return OnnxPlanner(small_onnx[0], obs_dim=SMALL_OBS_DIM, action_dim=SMALL_ACTION_DIM)


# -- observations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BAD_OBS))
def test_onnx_planner_refuses_bad_observation(planner, name):
    planner.reset()
    planner.plan(np.ones(SMALL_OBS_DIM, np.float32))  # a warm start to protect
    before_mean, before_rng = planner.prev_mean.copy(), planner.rng.bit_generator.state
    with pytest.raises(ValueError) as e:  # SpecMismatch is a ValueError
        planner.plan(BAD_OBS[name])
    msg = str(e.value)
    assert f"dim={SMALL_OBS_DIM}" in msg, msg
    if name in ("NaN", "+Inf", "-Inf", "overflows float32"):
        assert "NaN or Inf" in msg
    else:
        assert isinstance(e.value, SpecMismatch)
    # Nothing moved: warm start and noise stream are as before.
    np.testing.assert_array_equal(planner.prev_mean, before_mean)
    assert planner.rng.bit_generator.state == before_rng


def test_onnx_planner_accepts_lists_and_float64(planner):
    planner.reset()
    a = planner.plan([0.1, 0.2, 0.3, 0.4, 0.5], noise=np.zeros(planner.contract.noise_size))
    planner.reset()
    b = planner.plan(np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float64), noise=np.zeros(planner.contract.noise_size))
    np.testing.assert_array_equal(a.action, b.action)


@pytest.fixture(scope="module")
def agent():
    return TDMPC2(ModelConfig.from_preset("1M", SMALL_OBS_DIM, SMALL_ACTION_DIM), TrainConfig(),
                  PlanBudget(**TINY_BUDGET), 0.99, seed=0)


@pytest.mark.parametrize("name", list(BAD_OBS))
def test_agent_act_refuses_bad_observation(agent, name):
    agent.act(np.ones(SMALL_OBS_DIM), t0=True)
    before_mean, before_rng = agent.prev_mean.clone(), agent.plan_rng.get_state()
    with pytest.raises(ValueError) as e:
        agent.act(BAD_OBS[name])
    assert f"dim={SMALL_OBS_DIM}" in str(e.value), str(e.value)
    assert torch.equal(agent.prev_mean, before_mean)
    assert torch.equal(agent.plan_rng.get_state(), before_rng)


def test_agent_act_good_observation(agent):
    a = agent.act(np.zeros(SMALL_OBS_DIM), t0=True, explore=True)
    assert a.shape == (SMALL_ACTION_DIM,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)


# -- model files --------------------------------------------------------------------------------------


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _without_metadata(src, dst):
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dst))
    return dst


def _with_metadata(src, dst, edit):
    proto = onnx.load(str(src))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    entry.value = edit(entry.value)
    onnx.save(proto, str(dst))
    return dst


def _identity_model(dst, metadata: str | None = None):
    """A valid ONNX model that is not a planner graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, metadata
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _bump_version(text):
    d = json.loads(text)
    d["format_version"] = 99
    return json.dumps(d)


def _drop_budget(text):
    d = json.loads(text)
    del d["budget"]
    return json.dumps(d)


def _bad_budget(text):
    d = json.loads(text)
    d["budget"]["num_elites"] = 10**6
    return json.dumps(d)


BAD_FILES = {
    "truncated": lambda good, d: _write(d / "truncated.onnx", good.read_bytes()[: len(good.read_bytes()) // 2]),
    "random bytes": lambda good, d: _write(d / "random.onnx", np.random.default_rng(0).bytes(4096)),
    "empty file": lambda good, d: _write(d / "empty.onnx", b""),
    "missing": lambda good, d: d / "does-not-exist.onnx",
    "a directory": lambda good, d: d,
    "no metadata": lambda good, d: _without_metadata(good, d / "nometa.onnx"),
    "other model, no metadata": lambda good, d: _identity_model(d / "identity.onnx"),
    "metadata not JSON": lambda good, d: _with_metadata(good, d / "notjson.onnx", lambda t: t[: len(t) // 2]),
    "future format version": lambda good, d: _with_metadata(good, d / "v99.onnx", _bump_version),
    "metadata lacks budget": lambda good, d: _with_metadata(good, d / "nobudget.onnx", _drop_budget),
    "metadata budget invalid": lambda good, d: _with_metadata(good, d / "badbudget.onnx", _bad_budget),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_model_file_raises_model_load_error(small_onnx, tmp_path, name):
    good = small_onnx[0]
    bad = BAD_FILES[name](good, tmp_path)
    with pytest.raises(ModelLoadError) as e:
        OnnxPlanner(bad)
    assert str(bad) in str(e.value)
    if name == "future format version":
        assert "99" in str(e.value)


def test_valid_onnx_with_metadata_but_wrong_signature(small_onnx, tmp_path):
    meta = OnnxPlanner(small_onnx[0]).contract.to_json()
    path = _identity_model(tmp_path / "identity-meta.onnx", metadata=meta)
    with pytest.raises(ModelLoadError, match="signature"):
        OnnxPlanner(path)


def test_expected_sha256_mismatch(small_onnx):
    path = small_onnx[0]
    good = OnnxPlanner(path)
    assert OnnxPlanner(path, expected_sha256=good.sha256).sha256 == good.sha256
    with pytest.raises(ModelLoadError, match="sha256"):
        OnnxPlanner(path, expected_sha256="0" * 64)


@pytest.mark.parametrize("obs_dim, action_dim", [(7, None), (None, 3), (7, 3), (SMALL_OBS_DIM, 2)])
def test_spec_mismatch_names_both_specs(small_onnx, obs_dim, action_dim):
    with pytest.raises(SpecMismatch) as e:
        OnnxPlanner(small_onnx[0], obs_dim=obs_dim, action_dim=action_dim)
    msg = str(e.value)
    if obs_dim not in (None, SMALL_OBS_DIM):
        assert f"observation dim {obs_dim} declared, {SMALL_OBS_DIM} in model" in msg
    if action_dim not in (None, SMALL_ACTION_DIM):
        assert f"action dim {action_dim} declared, {SMALL_ACTION_DIM} in model" in msg
    assert f"dim={SMALL_OBS_DIM}" in msg  # the model's spec
    assert "Caller spec" in msg and f"obs dim={obs_dim}" in msg  # the caller's spec


def test_failed_loads_lose_nothing_loaded_before(small_onnx, tmp_path):
    path = small_onnx[0]
    planner = OnnxPlanner(path, obs_dim=SMALL_OBS_DIM, action_dim=SMALL_ACTION_DIM, seed=5)
    obs = np.array([0.3, -0.2, 0.1, 1.0, -1.0], np.float32)
    noise = np.random.default_rng(1).standard_normal(planner.contract.noise_size).astype(np.float32)
    first = planner.plan(obs, noise=noise)
    state = planner.prev_mean.copy()
    expected = planner.plan(obs, noise=noise)
    planner.prev_mean = state.copy()

    candidate = planner
    for name, make in BAD_FILES.items():
        try:
            candidate = OnnxPlanner(make(path, tmp_path), obs_dim=SMALL_OBS_DIM, action_dim=SMALL_ACTION_DIM)
        except ModelLoadError:
            pass
    for dims in [(7, 1), (5, 2)]:
        try:
            candidate = OnnxPlanner(path, *dims)
        except SpecMismatch:
            pass
    assert candidate is planner  # every attempt failed; the caller still holds the old planner
    again = planner.plan(obs, noise=noise)
    np.testing.assert_array_equal(again.action, expected.action)
    np.testing.assert_array_equal(again.mean, expected.mean)
    assert again.value == expected.value
    assert np.all(np.isfinite(first.action))


def test_export_write_is_atomic_on_failure(tmp_path, monkeypatch):
    """A failing export leaves the previous file in place and no temporary file behind."""
    from tdmpc2_ros.core import export

    target = tmp_path / "planner.onnx"
    target.write_bytes(b"previous model")

    def boom(*a, **k):
        raise RuntimeError("serialisation failed")

    export.write_atomically(tmp_path / "other.onnx", b"ok")
    assert (tmp_path / "other.onnx").read_bytes() == b"ok"

    monkeypatch.setattr(export.os, "fsync", boom)
    with pytest.raises(RuntimeError, match="serialisation"):
        export.write_atomically(target, b"new model")
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx", "planner.onnx"]


# -- checkpoints ----------------------------------------------------------------------------------------


def _agent(seed: int, obs_dim: int = SMALL_OBS_DIM, preset: str = "1M"):
    return TDMPC2(ModelConfig.from_preset(preset, obs_dim, SMALL_ACTION_DIM), TrainConfig(), PlanBudget(**TINY_BUDGET), 0.99, seed=seed)


def _weights(agent):
    return {k: v.clone() for k, v in agent.model.state_dict().items()}


def _assert_weights(agent, weights):
    now = agent.model.state_dict()
    assert now.keys() == weights.keys()
    for k in weights:
        assert torch.equal(now[k], weights[k]), f"{k} changed"


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    src = _agent(seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    sha = save_checkpoint({"agent": src.state_dict()}, path)
    return path, sha, _weights(src)


def test_checkpoint_round_trip(saved_checkpoint):
    path, sha, weights = saved_checkpoint
    state = load_checkpoint(path)
    assert state["sha256"] == sha and len(sha) == 64
    dst = _agent(seed=2)
    dst.load_state_dict(state["agent"])
    _assert_weights(dst, weights)


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


BAD_CHECKPOINTS = {
    "truncated": lambda good, d: _write(d / "trunc.pt", good.read_bytes()[: len(good.read_bytes()) // 2]),
    "truncated by one byte": lambda good, d: _write(d / "trunc1.pt", good.read_bytes()[:-1]),
    "random bytes": lambda good, d: _write(d / "random.pt", np.random.default_rng(0).bytes(10_000)),
    "empty": lambda good, d: _write(d / "empty.pt", b""),
    "missing": lambda good, d: d / "nope.pt",
    "not ours": lambda good, d: _write(d / "list.pt", _torch_bytes([1, 2, 3])),
    "wrong format": lambda good, d: _write(d / "fmt.pt", _torch_bytes({"format": 99, "agent": {}})),
    "lacks agent": lambda good, d: _write(d / "noagent.pt", _torch_bytes({"format": 1})),
}


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_raises_and_leaves_agent_untouched(saved_checkpoint, tmp_path, name):
    good = saved_checkpoint[0]
    bad = BAD_CHECKPOINTS[name](good, tmp_path)
    agent = _agent(seed=3)
    before = _weights(agent)
    with pytest.raises(CheckpointError) as e:
        agent.load_state_dict(load_checkpoint(bad)["agent"])
    assert str(bad) in str(e.value)
    _assert_weights(agent, before)
    # The good checkpoint still loads afterwards.
    agent.load_state_dict(load_checkpoint(good)["agent"])
    _assert_weights(agent, saved_checkpoint[2])


def test_incompatible_checkpoint_is_refused_without_half_applying(tmp_path):
    """An agent refused a checkpoint of another task (obs dim 3 instead of 5, same preset) must keep
    its own weights. TDMPC2.load_state_dict passes the state to nn.Module.load_state_dict, which
    copies every tensor whose shape matches before raising on the one that does not (the encoder's
    first layer), so the agent is left with the other task's dynamics, reward, Q and policy."""
    other = _agent(seed=4, obs_dim=3)
    path = tmp_path / "other-task.pt"
    save_checkpoint({"agent": other.state_dict()}, path)
    agent = _agent(seed=5)
    before = _weights(agent)
    state = load_checkpoint(path)  # a well-formed checkpoint: the file itself is fine
    with pytest.raises((RuntimeError, ValueError)) as e:
        agent.load_state_dict(state["agent"])
    assert "size mismatch" in str(e.value) or "shape" in str(e.value)
    changed = [k for k, v in agent.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [], f"a refused checkpoint was half-applied: {len(changed)} tensors overwritten, e.g. {changed[:3]}"


def test_corrupted_tensor_bytes_are_detected(saved_checkpoint, tmp_path):
    """A checkpoint whose tensor data was damaged on disk (here 4 KiB in the middle of the file set
    to 0xFF) must raise CheckpointError, as checkpoint.py promises ("verified on load").

    torch.load does not check the zip entries' CRC32 when reading, and load_checkpoint verifies only
    that the file unpickles and has the right keys, so the damaged file loads silently: one Q
    layer's weights come back with 1024 NaNs.
    """
    good, _, weights = saved_checkpoint
    data = bytearray(good.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = b"\xff" * 4096
    bad = _write(tmp_path / "damaged.pt", bytes(data))
    try:
        state = load_checkpoint(bad)
    except CheckpointError:
        return  # detected, as it should be
    damaged = [k for k, v in state["agent"]["model"].items() if not torch.equal(v, weights[k])]
    nans = sum(int(torch.isnan(state["agent"]["model"][k]).sum()) for k in damaged)
    raise AssertionError(
        f"load_checkpoint accepted a damaged checkpoint without CheckpointError: tensors {damaged} differ "
        f"from what was saved ({nans} NaNs)"
    )
