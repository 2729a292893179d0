"""Run an exported TD-MPC2 planner graph: one ONNX Runtime call per control tick.

The graph holds the encoder and the whole fixed-budget search. This wrapper only validates the
observation, draws the tick's noise from a seeded generator, carries the warm-start mean from one
tick to the next, and makes the call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tdmpc2_ros.runtime.contract import METADATA_KEY, ModelContract, ModelLoadError
from tdmpc2_ros.runtime.digest import sha256_of


@dataclass
class PlanResult:
    action: np.ndarray  # [action_dim] in [-1, 1] (normalised action space)
    value: float  # the chosen plan's value estimate
    mean: np.ndarray  # [horizon, action_dim], warm start for the next tick
    std: np.ndarray  # [action_dim], the search's final std of the first action


class PlanStopped(RuntimeError):
    """A plan ended early through its StopHandle (no result)."""


class StopHandle:
    """Ends one running plan from another thread. ONNX Runtime checks the flag between graph nodes,
    so the plan returns within one node's time: measured on 2 cores, 0.46 ms (median) on the smallest
    shipped rung and at most 2.4 ms on the largest, whose MatMuls are the longest nodes."""

    def __init__(self):
        import onnxruntime as ort

        self.options = ort.RunOptions()

    def stop(self):
        self.options.terminate = True

    @property
    def stopped(self) -> bool:
        return bool(self.options.terminate)


_shared_pool_threads: int | None = None  # set once per process by share_thread_pool


def share_thread_pool(threads: int) -> bool:
    """Make every planner session created from now on in this process run on one shared ONNX
    Runtime thread pool.

    Why: each session otherwise owns a pool whose threads spin for a while after every run. A
    process that keeps two sessions busy (the running model and a hot-swap candidate being checked)
    then has two spinning pools on the same cores; on 2 cores that doubled the live plan (7.4 ->
    15.8 ms, serial runs). With one pool, alternating sessions cost nothing (7.6 vs 7.8 ms).
    Returns False (per-session pools stay) where this onnxruntime build lacks the switch; the first
    size set wins for the life of the process.
    """
    global _shared_pool_threads
    if _shared_pool_threads is not None:
        return True
    import onnxruntime as ort

    setter = getattr(getattr(getattr(ort, "capi", None), "_pybind_state", None), "set_global_thread_pool_sizes", None)
    if setter is None:
        return False
    setter(int(threads), 1)
    _shared_pool_threads = int(threads)
    return True


def session_options(threads: int):
    """The options of every planner session (and of the benchmark's yardsticks): `threads` intra-op
    threads, or the process's shared pool where share_thread_pool has set one."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if _shared_pool_threads is not None:
        opts.use_per_session_threads = False  # sizes live in the shared pool (0 = do not restate them)
        opts.intra_op_num_threads = opts.inter_op_num_threads = 0
    else:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


# Graph optimisations of ONNX Runtime that undo the exporter's rewrites (core/onnx_passes.py):
# MatMulAddFusion turns the split MatMul + bias Add back into a Gemm with a bias. That Gemm writes its
# bias on one thread, so the split pays only where the product runs on several: with 2 threads the
# shipped full rung plans in 74.1 instead of 81.0 ms; with 1 thread (the node's default) the split
# graph was 1-3% slower on every rung (141.6 against 139.8 ms, 9.48 against 9.40 ms for i3-s64).
DISABLED_OPTIMIZERS = ("MatMulAddFusion",)


def _disabled_optimizers(threads: int) -> list[str]:
    return list(DISABLED_OPTIMIZERS) if threads >= 2 else []


# Which ONNX Runtime execution provider the planner sessions of this process use:
# - auto: CUDA where onnxruntime-gpu provides it, otherwise ONNX Runtime's own CPU kernels;
# - cpu: ONNX Runtime's CPU kernels;
# - openvino: Intel's OpenVINO plugin for ONNX Runtime (package onnxruntime-ep-openvino), on the CPU.
#   It fuses each layer's bias, LayerNorm and Mish into the matrix product's kernels: 56-61 against
#   66-72 ms for the 1M preset's full plan on the project's 2-core Intel machine, the same actions to
#   1e-6 (docs/benchmarks.md, session 8). It needs 110-130 MB more memory and a second or so to
#   compile each model, and that compile cost a busy 2-core loop ticks during hot swaps (same page);
# - cuda: the CUDA provider, or an error where it is not installed.
EXECUTION_PROVIDERS = ("auto", "cpu", "openvino", "cuda")
_execution_provider = "auto"


def set_execution_provider(name: str) -> None:
    """Choose the execution provider of every planner session created from now on in this process.
    Checked at once, so a missing package is reported at startup and not at the first model swap."""
    global _execution_provider
    if name not in EXECUTION_PROVIDERS:
        raise ValueError(f"execution_provider must be one of {', '.join(EXECUTION_PROVIDERS)}, not {name!r}")
    if name == "openvino":
        _openvino_cpu_devices()
    if name == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("execution_provider 'cuda': this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    _execution_provider = name


def execution_provider() -> str:
    return _execution_provider


_registered_plugins: set[str] = set()


def _openvino_cpu_devices() -> list:
    """The OpenVINO plugin's CPU devices, registering the plugin with ONNX Runtime on first use."""
    import onnxruntime as ort

    try:
        import onnxruntime_ep_openvino as openvino
    except ImportError as e:
        raise ValueError("execution_provider 'openvino' needs the OpenVINO plugin for ONNX Runtime: "
                         "pip install onnxruntime-ep-openvino (x86-64 Linux and Windows)") from e
    name = openvino.get_ep_name()
    # Registered once per process, and remembered here: a registered plugin that offers no device
    # (below) cannot be told from an unregistered one by its devices, and ONNX Runtime refuses a
    # second registration with an error of its own.
    if name not in _registered_plugins:
        ort.register_execution_provider_library(name, openvino.get_library_path())
        _registered_plugins.add(name)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name and d.device.type == ort.OrtHardwareDeviceType.CPU]
    if not devices:
        # The plugin offers Intel devices only (its factory skips other vendors; onnxruntime PR 31981
        # would let it serve any CPU), so on an AMD CPU it installs, registers and offers nothing.
        raise ValueError(f"execution_provider 'openvino': the OpenVINO plugin offers no device for this CPU "
                         f"(vendor {cpu_vendor()[0]}; the plugin serves Intel CPUs only). "
                         "Use execution_provider 'cpu', ONNX Runtime's own kernels")
    return devices


INTEL_VENDOR_ID = 0x8086


def cpu_vendor() -> tuple[str, int]:
    """(vendor name, PCI vendor id) of this machine's CPU as ONNX Runtime sees it: ("AMD", 0x1022) or
    ("Intel", 0x8086); ("unknown", 0) if it lists no CPU device."""
    import onnxruntime as ort

    for d in ort.get_ep_devices():  # onnxruntime >= 1.23 (requirements.txt), as the plugin itself needs
        if d.ep_name == "CPUExecutionProvider" and d.device.type == ort.OrtHardwareDeviceType.CPU:
            return d.device.vendor, d.device.vendor_id
    return "unknown", 0


def _add_openvino(options, threads: int) -> None:
    import json

    # fp32 throughout: on CPUs with bf16 units (AVX512-BF16, AMX) OpenVINO otherwise computes in bf16,
    # which moved an action by 0.59 against the fp32 graph.
    # The thread count goes in load_config too: the plugin ignores its num_of_threads option.
    config = {"CPU": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(max(1, threads))}}
    options.add_provider_for_devices(_openvino_cpu_devices(), {"load_config": json.dumps(config)})


def new_session(model: bytes | str, threads: int, options=None, providers: list[str] | None = None):
    """An ONNX Runtime session for a planner graph; every planner session is made here. `providers`
    (ONNX Runtime names) overrides the process's execution provider."""
    import onnxruntime as ort

    options = options if options is not None else session_options(threads)
    chosen = {"providers": providers or default_providers()}
    if providers is None and _execution_provider == "openvino":
        _add_openvino(options, threads)
        chosen = {}  # a plugin provider lives in the options; a providers list would override it (and warn)
    return ort.InferenceSession(model, options, disabled_optimizers=_disabled_optimizers(threads), **chosen)


def default_providers() -> list[str]:
    """The process's execution provider as ONNX Runtime provider names (openvino aside: it is added
    to the session options instead, see new_session)."""
    import onnxruntime as ort

    if _execution_provider == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _same_file(f) -> str | bytes:
    """What ONNX Runtime should load so that it reads exactly the file just hashed: the open file's
    /proc/self/fd path (the same inode even if the path is replaced meanwhile), or its bytes where
    there is no /proc. Why not always the bytes: a session made from bytes keeps a second copy of
    the model (5M with OpenVINO: 308 against 283 MB resident)."""
    fd_path = f"/proc/self/fd/{f.fileno()}"
    if os.path.exists(fd_path):
        return fd_path
    f.seek(0)
    return f.read()


class OnnxPlanner:
    """A loaded planner graph plus its warm-start state.

    Construction either fully succeeds or raises ModelLoadError/SpecMismatch; a caller that keeps
    its previous planner until then loses nothing on a bad file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        obs_dim: int | None = None,
        action_dim: int | None = None,
        threads: int = 2,
        providers: list[str] | None = None,
        seed: int = 0,
        expected_sha256: str | None = None,
    ):
        self.path = str(path)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise ModelLoadError(f"cannot read planner model {self.path}: {e.strerror or e}") from e
        with f:
            self.sha256 = sha256_of(f)
            if expected_sha256 is not None and expected_sha256 != self.sha256:
                raise ModelLoadError(f"{self.path}: sha256 {self.sha256} does not match the expected {expected_sha256}")
            try:
                self.session = new_session(_same_file(f), threads, providers=providers)
            except Exception as e:  # onnxruntime raises several private exception types
                raise ModelLoadError(f"{self.path} is not a loadable ONNX model (truncated or corrupt?): {e}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelLoadError(f"{self.path} carries no '{METADATA_KEY}' metadata: not a tdmpc2_ros planner graph")
        self.contract = ModelContract.from_json(meta[METADATA_KEY], source=self.path)
        self.contract.check_caller(obs_dim, action_dim, source=self.path)
        names = {i.name for i in self.session.get_inputs()}
        if names != {"obs", "prev_mean", "noise", "explore"}:
            raise ModelLoadError(f"{self.path}: graph inputs {sorted(names)} are not the planner signature")
        self.rng = np.random.default_rng(seed)
        self.reset()

    @property
    def obs_dim(self) -> int:
        return self.contract.obs.dim

    @property
    def action_dim(self) -> int:
        return self.contract.action.dim

    def reset(self):
        """Start of an episode: forget the warm start (the reference plans from a zero mean at t0)."""
        self.prev_mean = np.zeros((self.contract.budget.horizon, self.action_dim), np.float32)

    def draw_noise(self) -> np.ndarray:
        return self.rng.standard_normal(self.contract.noise_size, dtype=np.float32)

    def plan(self, obs, explore: bool = False, noise: np.ndarray | None = None,
             stop: StopHandle | None = None) -> PlanResult:
        """One control tick. Raises (naming the spec) on a malformed observation; never guesses.
        A plan ended through `stop` raises PlanStopped and leaves the warm start as it was."""
        obs = self.contract.validate_obs(obs)
        if noise is None:
            noise = self.draw_noise()
        feeds = {
            "obs": obs,
            "prev_mean": self.prev_mean,
            "noise": np.asarray(noise, np.float32),
            "explore": np.array([1.0 if explore else 0.0], np.float32),
        }
        try:
            action, mean, value, std = self.session.run(None, feeds, None if stop is None else stop.options)
        except Exception as e:
            if stop is not None and stop.stopped:
                raise PlanStopped("stopped before its end") from e
            raise
        self.prev_mean = mean
        return PlanResult(action=action, value=float(value[0]), mean=mean, std=std)

    def fallback_action(self) -> np.ndarray:
        """The previous plan's next action, for a tick that cannot plan in time."""
        return self.prev_mean[1].copy() if self.prev_mean.shape[0] > 1 else self.prev_mean[0].copy()
