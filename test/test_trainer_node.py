"""trainer_node over real DDS, in a subprocess on its own ROS domain: it ingests the closed bags of a
bag folder exactly once, trains, validates and announces a version on the model-update topic that a
late-joining subscriber still receives (transient local); after SIGINT and a restart on the same
folders it resumes and ingests nothing twice; a bag dropped in later is ingested once and ~/export
publishes a version that names its parent and every bag."""

from __future__ import annotations

import json
import os
import signal
import subprocess

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before any rclpy context exists

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ros_harness import Ros, cleaned_up, finish_process, start_node_process  # noqa: E402
from tdmpc2_ros.bags import BagWriter, IngestLedger  # noqa: E402
from tdmpc2_ros.ros import qos, topics  # noqa: E402
from tdmpc2_ros.runtime.model_store import ModelStore, VersionsInUse  # noqa: E402
from tdmpc2_ros.runtime.transition import Transition  # noqa: E402
from tdmpc2_ros.training.offline import LEDGER  # noqa: E402

T0 = 1_700_000_000_000_000_000
DT = 20_000_000


def episode(rng, eid: int, steps: int = 50) -> list[Transition]:
    obs = rng.normal(size=(steps + 1, 5))
    return [Transition(eid, k, obs[k], rng.uniform(-1, 1, 1), float(rng.normal()), obs[k + 1], truncated=k == steps - 1)
            for k in range(steps)]


def write_bag(directory, transitions, start: int):
    with BagWriter(directory) as w:
        for i, t in enumerate(transitions):
            w.write_transition(t, start + i * DT)
    return w.closed[-1]


def start_trainer(domain: int, tmp_path, via: str = "module", **params) -> subprocess.Popen:
    return start_node_process("trainer_node", domain, tmp_path, via=via, **params)


def finish(proc: subprocess.Popen, sig=None, timeout: float = 120.0) -> tuple[int, str]:
    return finish_process(proc, sig, timeout, "trainer_node")


class Listener:
    """A late-joining subscriber of the announcements, and of the trainer's diagnostics."""

    def __init__(self, ros: Ros, name: str):
        self.announcements: list[dict] = []
        self.diag: dict = {}
        self.node = ros.node(name)
        self.node.create_subscription(String, topics.MODEL_UPDATE, lambda m: self.announcements.append(json.loads(m.data)),
                                      qos.LATCHED)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)
        self.export = self.node.create_client(Trigger, "/trainer_node/export")

    def _on_diag(self, msg):
        for s in msg.status:
            if s.name == "tdmpc2_ros: trainer":
                self.diag = {kv.key: kv.value for kv in s.values}

    def versions(self) -> list[str]:
        return [a["version"] for a in self.announcements]


def ledger_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LEDGER).read_text().splitlines() if line.strip()]


def test_trainer_node_ingests_once_announces_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    bag_dir, run_dir, store_dir = tmp_path / "bags", tmp_path / "run", tmp_path / "store"
    b1 = write_bag(bag_dir, episode(rng, 0) + episode(rng, 1), T0)
    b2 = write_bag(bag_dir, episode(rng, 2) + episode(rng, 3), T0 + 10**10)
    params = dict(bag_dir=str(bag_dir), run_dir=str(run_dir), store_dir=str(store_dir), obs_dim=0, action_dim=0,
                  ladder=["2:64:8:8"], batch_size=32, threads=1, updates_per_cycle=10, export_every_updates=20,
                  min_transitions=50, max_updates_per_transition=0.1, scan_period_s=0.5, export_on_start=False,
                  control_rate_hz=5.0, latency_warmup=2, latency_runs=10, diagnostics_period_s=0.5)
    store = ModelStore(store_dir)
    ros = Ros()

    # 1. Two closed bags: both ingested once; 200 transitions x 0.1 = 20 updates, then one export.
    proc = start_trainer(ros.domain, tmp_path, **params)
    with cleaned_up(proc):
        assert ros.spin_until(lambda: bool(store.versions()) or proc.poll() is not None, 300), "no version in time"
        assert proc.poll() is None, finish(proc)[1][-4000:]
        (v1,) = store.versions()
        late = Listener(ros, "late_listener")  # joins after the announcement was published
        assert ros.spin_until(lambda: late.announcements, 30), "a late subscriber did not get the latched announcement"
        assert late.versions() == [v1]
        a = late.announcements[0]
        assert a["path"] == str(store.path(v1).resolve()) and a["files"] == store.manifest(v1).files
        assert ros.spin_until(lambda: late.diag.get("bags_ingested") == "2", 10), late.diag
        code, out1 = finish(proc, signal.SIGINT)
    assert code == 0, out1[-4000:]
    m1 = store.manifest(v1)
    assert (m1.parent, m1.updates, m1.env_steps, m1.bags) == ("", 20, 400, [b1.name, b2.name])
    assert m1.notes["validation"]["spec"] == "ok" and m1.notes["validation"]["latency"]
    for bag in (b1, b2):
        assert out1.count(f"ingested bag {bag}") == 1, out1[-4000:]
    assert f"announced {v1}" in out1 and "stopped (SIGINT): checkpoint" in out1
    assert [(e["bag"], e["status"]) for e in ledger_lines(run_dir)] == [(b1.name, "ingested"), (b2.name, "ingested")]
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "learning_curve.png").is_file()

    # 2. Restart on the same folders: resumed, nothing ingested twice; the latest version is announced
    #    again for planners that join now; a new bag is ingested once; ~/export publishes v2.
    proc = start_trainer(ros.domain, tmp_path, **params)
    with cleaned_up(proc, ros=ros):
        listener = Listener(ros, "restart_listener")
        assert ros.spin_until(lambda: listener.announcements or proc.poll() is not None, 120)
        assert proc.poll() is None, finish(proc)[1][-4000:]
        assert listener.versions() == [v1]
        assert ros.spin_until(lambda: listener.diag.get("updates") == "20", 30), listener.diag
        assert listener.diag["bags_ingested"] == "2" and listener.diag["transitions"] == "200"
        # The store is what grows on a robot that learns for days: its size and the disk's room are shown.
        assert float(listener.diag["store_mb"]) > 0 and float(listener.diag["disk_free_mb"]) > 0
        # A planner's report of the versions it runs is what the prune keeps; the trainer shows them.
        planner_diag = listener.node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        report = DiagnosticArray(status=[DiagnosticStatus(name="tdmpc2_ros: planner", values=[
            KeyValue(key="model_versions_in_use", value=f"{v1},v0000-0123456789ab")])])
        assert ros.spin_until(lambda: planner_diag.publish(report) or
                              listener.diag.get("versions_in_use") == f"v0000-0123456789ab,{v1}", 20), listener.diag
        b3 = write_bag(bag_dir, episode(rng, 4), T0 + 2 * 10**10)
        assert ros.spin_until(lambda: listener.diag.get("bags_ingested") == "3", 30), listener.diag
        assert listener.export.wait_for_service(timeout_sec=10)
        future = listener.export.call_async(Trigger.Request())
        assert ros.spin_until(future.done, 300), "~/export did not answer"
        response = future.result()
        assert response.success, response.message
        v2 = [v for v in store.versions() if v != v1][0]
        assert v2 in response.message
        assert ros.spin_until(lambda: v2 in listener.versions(), 10)
        code, out2 = finish(proc, signal.SIGINT)
    assert code == 0, out2[-4000:]
    assert "resumed from" in out2 and "ingested bag" in out2
    assert str(b1) not in out2 and str(b2) not in out2, "a bag was ingested twice"
    assert out2.count(f"ingested bag {b3}") == 1
    m2 = store.manifest(v2)
    assert m2.parent == v1 and m2.bags == [b1.name, b2.name, b3.name] and m2.env_steps == 500
    assert m2.updates >= 20 and m2.notes["new_bags"] == [b3.name]
    lines = ledger_lines(run_dir)
    assert [e["bag"] for e in lines] == [b1.name, b2.name, b3.name]  # each bag once, ever
    assert all(e["status"] == "ingested" for e in lines)
    assert IngestLedger(run_dir / LEDGER).pending(bag_dir) == []


def test_sigterm_during_an_export_checkpoints_and_exits_at_once(tmp_path):
    """A launch system gives a node seconds, an export takes longer: the node checkpoints, abandons
    the export before it would add a version (so store and checkpoint agree) and exits 0."""
    import time

    from tdmpc2_ros.training.checkpoint import load_checkpoint

    rng = np.random.default_rng(1)
    bag_dir, run_dir, store_dir = tmp_path / "bags", tmp_path / "run", tmp_path / "store"
    bag = write_bag(bag_dir, episode(rng, 0) + episode(rng, 1), T0)
    ros = Ros()
    proc = start_trainer(ros.domain, tmp_path, bag_dir=str(bag_dir), run_dir=str(run_dir), store_dir=str(store_dir),
                         ladder=["2:64:8:8"], threads=1, min_transitions=50, scan_period_s=0.5, control_rate_hz=5.0,
                         export_on_start=True)
    with cleaned_up(proc, ros=ros):
        # the start export begins right after the first ingest
        assert ros.spin_until(lambda: (run_dir / LEDGER).exists() or proc.poll() is not None, 120)
        ros.spin_for(1.0)
        t0 = time.monotonic()
        code, out = finish(proc, signal.SIGTERM, timeout=60)
        took = time.monotonic() - t0
    assert code == 0, out[-4000:]
    assert took < 20, f"exit took {took:.1f} s"
    assert "stopped (SIGTERM): checkpoint" in out, out[-4000:]
    state = load_checkpoint(run_dir / "checkpoint.pt", required=("offline",))["offline"]
    assert [b["bag"] for b in state["bags"]] == [bag.name] and state["transitions"] == 100
    versions = ModelStore(store_dir).versions()
    assert versions == ([state["last_version"]] if state["last_version"] else []), (versions, state["last_version"])


def test_bad_parameters_name_the_parameter(tmp_path):
    from rclpy.parameter import Parameter

    from tdmpc2_ros.ros.params import ParameterError
    from tdmpc2_ros.ros.trainer_node import TrainerNode

    ros = Ros()
    try:
        for params, name in (({"batch_size": 0}, "batch_size"), ({"ladder": ["6x512"]}, "ladder"),
                             ({"planner": "rrt"}, "planner"), ({"deadline_fraction": 1.5}, "deadline_fraction"),
                             ({"device": "tpu"}, "device"),
                             ({"store_keep_every_s": -1.0}, "store_keep_every_s"),
                             ({"min_free_mb": -5.0}, "min_free_mb"),
                             ({"raw_obs_topic": "/obs"}, "raw_obs_topic"),
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r"}, "action_low"),
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r",
                               "action_low": [-1.0], "action_high": [1.0], "raw_command_scale": [10.0, 2.0]},
                              "raw_command_scale"),
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r",
                               "action_low": [-1.0], "action_high": [1.0], "raw_pace": "tick"}, "raw_pace"),
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r",
                               "action_low": [-1.0], "action_high": [1.0], "raw_reward_at": "command"},  # paced by
                              "raw_reward_at"),                                                        # observations
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r",
                               "action_low": [-1.0], "action_high": [1.0], "raw_termination_expression": "obs[0] >",
                               "episodic": True}, "raw_termination_expression"),
                             ({"raw_obs_topic": "/o", "raw_command_topic": "/c", "raw_reward_topic": "/r",
                               "action_low": [-1.0], "action_high": [1.0], "raw_termination_expression": "obs[0] > 1"},
                              "episodic"),
                             ({"raw_observation_sources": ["joint_state:/joint_states:position:slider"],
                               "raw_command_topic": "/c", "raw_reward_topic": "/r", "raw_command_type": "joint_state",
                               "action_low": [-1.0], "action_high": [1.0]}, "raw_command_type")):
            overrides = [Parameter("run_dir", value=str(tmp_path / "run")), Parameter("bag_dir", value=str(tmp_path / "b")),
                         Parameter("nice", value=0)]  # in this process: leave the test run's priority alone
            overrides += [Parameter(k, value=v) for k, v in params.items()]
            with pytest.raises(ParameterError, match=f"'{name}'") as info:
                TrainerNode(context=ros.context, parameter_overrides=overrides)
            assert info.value.parameter == name
    finally:
        ros.close()


@pytest.mark.parametrize("via", ["module", "console_script"])
def test_a_stop_during_the_imports_is_a_clean_stop(tmp_path, via):
    """A node process takes SIGINT before its imports (torch alone takes a second or two here), so a
    stop from a launch system or the bringup that arrives that early ends it with exit 0 and the
    usual line, not a KeyboardInterrupt traceback out of an import. Both ways a node starts: `python
    -m` (the bringup) and its console script (`ros2 run`, launch files; ros/entry.py)."""
    import time

    from ros_harness import next_domain

    proc = start_trainer(next_domain(), tmp_path, via=via, bag_dir=str(tmp_path / "bags"), run_dir=str(tmp_path / "run"),
                         store_dir=str(tmp_path / "store"))
    with cleaned_up(proc):
        time.sleep(0.6)  # after the interpreter's start (about 0.1 s), well inside `import torch`
        assert proc.poll() is None
        code, out = finish(proc, signal.SIGINT, timeout=120)
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert "trainer_node]: stopped (SIGINT)" in out, out[-4000:]


def test_a_checkpoint_that_cannot_be_written_is_logged_and_training_goes_on(tmp_path):
    """A full disk at a checkpoint: the node logs it and returns False (its callers carry on training,
    and the shutdown summary says no new checkpoint was written) instead of raising out of the
    training thread."""
    from types import SimpleNamespace

    from tdmpc2_ros.ros.trainer_node import TrainerNode

    errors = []
    node = SimpleNamespace(get_logger=lambda: SimpleNamespace(error=errors.append))

    def full_disk():
        raise OSError(28, "No space left on device")

    trainer = SimpleNamespace(save=full_disk, run_dir=tmp_path)
    assert TrainerNode._save(node, trainer) is False
    assert len(errors) == 1 and "No space left" in errors[0] and "training goes on" in errors[0]
    assert "No space left" in node.checkpoint_problem  # /diagnostics warns with it
    assert TrainerNode._save(node, SimpleNamespace(save=lambda: "sha", run_dir=tmp_path)) is True
    assert node.checkpoint_problem == ""


def test_store_keep_prunes_the_store_after_an_export_but_never_the_new_version_or_its_parent(tmp_path):
    from types import SimpleNamespace

    from tdmpc2_ros.ros.trainer_node import TrainerNode
    from tdmpc2_ros.runtime.ladder import LADDER_FILE

    store, made = ModelStore(tmp_path / "store"), []
    for i in range(4):
        folder = tmp_path / f"l{i}"
        folder.mkdir()
        (folder / "planner_x.onnx").write_bytes(f"graph {i}".encode())
        (folder / LADDER_FILE).write_text(json.dumps({"rungs": [{"file": "planner_x.onnx", "budget": {}, "sha256": ""}]}))
        made.append(store.add(folder, parent=made[-1] if made else "").version)
    versions = made
    infos = []
    node = SimpleNamespace(store=store, p={"store_keep": 1, "store_keep_every_s": 0.0}, in_use=VersionsInUse(600.0),
                           get_logger=lambda: SimpleNamespace(info=infos.append, error=infos.append))
    node.in_use.saw([versions[0]])  # a planner runs the oldest (or may roll back to it)
    TrainerNode._prune_store(node, store.manifest(versions[-1]))
    assert store.versions() == [versions[0]] + versions[-2:]  # the newest, its parent, and the one in use
    assert infos and versions[1] in infos[0] and versions[0] not in infos[0]
    node.in_use = VersionsInUse(600.0)  # no planner reports it any more
    TrainerNode._prune_store(node, store.manifest(versions[-1]))
    assert store.versions() == versions[-2:]  # the newest, and its parent
    assert node.store_mb == store.size_bytes() / 1e6 > 0  # /diagnostics' store_mb, after the prune
    assert versions[0] in infos[1]
    node.p["store_keep"] = 0
    TrainerNode._prune_store(node, store.manifest(versions[-1]))
    assert store.versions() == versions[-2:]


def test_the_versions_planners_report_in_use_are_read_from_their_diagnostics_only():
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    from tdmpc2_ros.ros.trainer_node import planner_versions_in_use

    def status(name, value):
        return DiagnosticStatus(name=name, values=[KeyValue(key="model_version", value="ignored"),
                                                   KeyValue(key="model_versions_in_use", value=value)])

    msg = DiagnosticArray(status=[status("tdmpc2_ros: planner", "v0007-aa, v0005-bb"), status("tdmpc2_ros: trainer", "v0001-cc"),
                                  status("tdmpc2_ros: planner", ""), status("motor_driver", "v0002-dd")])
    assert planner_versions_in_use(msg) == ["v0007-aa", "v0005-bb"]


def test_a_version_in_use_is_held_for_a_while_after_its_last_report():
    now = [100.0]
    in_use = VersionsInUse(60.0, clock=lambda: now[0])
    in_use.saw(["v1", "", "v2"])
    now[0] += 30
    in_use.saw(["v2"])
    assert in_use.current() == {"v1", "v2"}
    now[0] += 31  # v1 last seen 61 s ago: the planner left it (or stopped)
    assert in_use.current() == {"v2"}
    now[0] += 30
    assert in_use.current() == set()
    off = VersionsInUse(0.0, clock=lambda: now[0])
    off.saw(["v1"])
    assert off.current() == set()  # store_keep_in_use_s 0: planners are ignored


def test_a_disk_running_low_is_a_warning_before_an_export_fails(tmp_path, monkeypatch):
    """min_free_mb: below it /diagnostics warns (and the log says so once per low spell), naming the
    disk and what to do; training is not stopped. 0 turns it off."""
    from types import SimpleNamespace

    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from tdmpc2_ros.ros import trainer_node
    from tdmpc2_ros.ros.trainer_node import TrainerNode

    free, sent, warnings = {"mb": 5000.0}, [], []
    monkeypatch.setattr(trainer_node, "_free_mb", lambda directory: free["mb"])
    node = SimpleNamespace(trainer=None, state="training", rate=float("nan"), store_mb=12.0, checkpoint_problem="",
                           store=SimpleNamespace(root=tmp_path / "store"), p={"min_free_mb": 1000.0},
                           _disk_low_said=False, diag_pub=SimpleNamespace(publish=sent.append), in_use=VersionsInUse(600.0),
                           get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(to_msg=Time)),
                           get_logger=lambda: SimpleNamespace(warning=warnings.append))
    node._low_disk = lambda mb: TrainerNode._low_disk(node, mb)

    def report():
        TrainerNode._publish_diagnostics(node)
        status = sent[-1].status[0]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    level, message, values = report()
    assert (level, message, values["disk_free_mb"]) == (DiagnosticStatus.OK, "training", "5000.0")
    free["mb"] = 640.0
    for _ in range(3):
        level, message, values = report()
    assert level == DiagnosticStatus.WARN and "640 MB free" in message and "min_free_mb 1000" in message
    assert "lower store_keep" in message and len(warnings) == 1  # logged once per low spell
    free["mb"] = 2000.0
    assert report()[0] == DiagnosticStatus.OK
    free["mb"] = 600.0
    report()
    assert len(warnings) == 2  # a new low spell is said again
    node.p["min_free_mb"] = 0.0
    assert report()[0] == DiagnosticStatus.OK
