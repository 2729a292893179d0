"""Export encoder + planner as ONE ONNX graph carrying its contract in the metadata.

The planner module is first traced with make_fx, which turns torch.func.grad (gradient planner)
into explicit backward operators and unrolls the fixed-budget loops; the trace is then converted by
torch.onnx. The file is written atomically: a reader never sees half a model.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from tdmpc2_ros.core.layers import export_friendly
from tdmpc2_ros.core.onnx_passes import split_gemm_bias
from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.contract import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, ModelContract, Spec
from tdmpc2_ros.runtime.digest import file_sha256

OPSET = 18


def example_inputs(obs_dim: int, action_dim: int, budget: PlanBudget, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(obs_dim, generator=g),
        torch.zeros(budget.horizon, action_dim),
        torch.randn(budget.noise_size(action_dim), generator=g),
        torch.zeros(1),
    )


def trace_planner(model: WorldModel, budget: PlanBudget, discount: float):
    """A frozen CPU copy of the model (wherever it trained) inside the planner, traced to a flat graph
    of tensor operators."""
    from torch.fx.experimental.proxy_tensor import make_fx

    frozen = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    planner = make_planner(frozen, budget, discount).eval()
    inputs = example_inputs(model.cfg.obs_dim, model.cfg.action_dim, budget)
    with export_friendly():
        return make_fx(planner)(*inputs), inputs


def _quiet_onnx_export(gm, inputs, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES):
    # The exporter narrates every step and warns about optional packages; keep the user's console clean.
    for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                gm,
                inputs,
                dynamo=True,
                external_data=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                verbose=False,
            )
    proto = program.model_proto
    split_gemm_bias(proto)
    return proto


def export_planner(
    model: WorldModel,
    budget: PlanBudget,
    discount: float,
    path: str | os.PathLike,
    task: str = "",
    train_step: int = 0,
    checkpoint_sha256: str = "",
    obs_names: tuple[str, ...] = (),
    action_low: tuple[float, ...] = (),
    action_high: tuple[float, ...] = (),
    action_names: tuple[str, ...] = (),
) -> ModelContract:
    """Write the planner graph to `path` and return the contract stored in it."""
    cfg = model.cfg
    contract = ModelContract(
        obs=Spec(cfg.obs_dim, tuple(obs_names)),
        action=Spec(cfg.action_dim, tuple(action_names), tuple(action_low), tuple(action_high)),
        budget=budget,
        preset=cfg.preset,
        task=task,
        train_step=int(train_step),
        checkpoint_sha256=checkpoint_sha256,
        discount=float(discount),
        extra={"model": cfg.to_dict(), "torch": torch.__version__, "tdmpc2_ros": _version()},
    )
    gm, inputs = trace_planner(model, budget, discount)
    proto = _quiet_onnx_export(gm, inputs)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract.to_json()
    proto.producer_name = "tdmpc2_ros"
    write_atomically(Path(path), proto.SerializeToString())
    return contract


class LiveOnnxActor:
    """The planner graph with the world model's weights as graph inputs, for acting while training.

    Training plans one action per agent step with weights that change after every update.
    Re-exporting each step is out of the question, and the torch planner is about twice as slow as
    ONNX Runtime on a CPU. This graph is traced once; each call feeds the live parameters (zero-copy
    numpy views of the torch tensors), so it always plans with the current weights and computes
    what the torch planner computes (tested to 1e-4).
    """

    PREFIX = "w."

    def __init__(self, model: WorldModel, budget: PlanBudget, discount: float, threads: int = 2):
        from torch.fx.experimental.proxy_tensor import make_fx

        from tdmpc2_ros.runtime.onnx_planner import new_session, session_options

        planner = make_planner(model, budget, discount).eval()
        self._params = list(planner.named_parameters())
        names = [n for n, _ in self._params]

        def plan(weights, obs, prev_mean, noise, explore):
            return torch.func.functional_call(planner, dict(zip(names, weights)), (obs, prev_mean, noise, explore))

        weights = [p.detach() for _, p in self._params]
        inputs = example_inputs(model.cfg.obs_dim, model.cfg.action_dim, budget)
        with export_friendly():
            gm = make_fx(plan)(weights, *inputs)
        proto = _quiet_onnx_export(gm, (weights, *inputs), [self.PREFIX + n for n in names] + list(INPUT_NAMES))
        opts = session_options(threads)
        # Training alternates this call with torch's update on the same cores. ONNX Runtime's workers
        # spin for a while after each run and then compete with torch's threads: without spinning, an
        # act + update step took 291 ms instead of 346 ms (1M, 2 cores). A robot's planner keeps spinning.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = new_session(proto.SerializeToString(), threads, opts, providers=["CPUExecutionProvider"])
        used = {i.name for i in self.session.get_inputs()}
        # Weights the search never touches (target Qs, unused heads) are pruned from the graph.
        self._fed = [(self.PREFIX + n, p) for n, p in self._params if self.PREFIX + n in used]

    def __call__(self, obs, prev_mean, noise, explore):
        feed = {name: p.detach().numpy() for name, p in self._fed}
        feed.update(obs=obs.numpy(), prev_mean=prev_mean.numpy(), noise=noise.numpy(), explore=explore.numpy())
        return tuple(torch.from_numpy(x) for x in self.session.run(list(OUTPUT_NAMES), feed))


def write_atomically(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model is read by other users and services
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _version() -> str:
    from tdmpc2_ros import __version__

    return __version__


def export_ladder(model: WorldModel, budgets: list[PlanBudget], discount: float, folder: str | os.PathLike, **contract) -> list:
    """Export the same weights at several budgets into one model folder with a ladder.json index,
    largest budget first. Returns the rungs."""
    from tdmpc2_ros.runtime.ladder import Rung, rung_filename, write_ladder_index

    folder = Path(folder)
    rungs = []
    for budget in budgets:
        path = folder / rung_filename(budget)
        export_planner(model, budget, discount, path, **contract)
        rungs.append(Rung(path, budget, file_sha256(path)))
    write_ladder_index(folder, rungs, {"task": contract.get("task", ""), "train_step": contract.get("train_step", 0)})
    return rungs
