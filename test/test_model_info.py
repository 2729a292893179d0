"""`tdmpc2-ros info PATH`: what a model path holds, and whether its files are the ones recorded."""

from __future__ import annotations

import json
import shutil

import pytest

from tdmpc2_ros import cli
from tdmpc2_ros.ros.paths import default_model
from tdmpc2_ros.runtime.ladder import LADDER_FILE, read_ladder
from tdmpc2_ros.runtime.model_info import format_info, model_info
from tdmpc2_ros.runtime.model_store import ModelStore

SHIPPED = default_model()


def _smallest_rung_folder(dest):
    """A one-rung model folder: the shipped model's smallest graph and its ladder entry."""
    rung = read_ladder(SHIPPED)[-1]
    dest.mkdir(parents=True)
    shutil.copyfile(rung.path, dest / rung.path.name)
    (dest / LADDER_FILE).write_text(json.dumps({"rungs": [{"file": rung.path.name, "budget": rung.budget.to_dict(),
                                                           "sha256": rung.sha256}]}))
    return dest, rung


def test_the_shipped_model_folder_is_described_and_every_file_checks_out(capsys):
    info = model_info(SHIPPED)
    card = json.loads((SHIPPED / "card.json").read_text())
    assert info["kind"] == "model folder" and info["problems"] == []
    assert {f["file"] for f in info["files"]} == set(card["files"])  # rungs, ladder.json, weights.pt
    assert all(f["check"] == "ok" for f in info["files"])
    assert info["contract"]["obs"].startswith("(dim=5") and info["contract"]["action"].startswith("(dim=1")
    assert info["contract"]["budget"] == info["rungs"][0] == "mppi-i6-s512-e64-p24-h3"
    assert info["card"]["eval_mean"] == card["evaluation"]["mean"]
    assert cli.main(["info", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "task cartpole-swingup, preset 1M, trained 62000 steps" in out and "largest rung mppi-i6-s512" in out
    assert cli.main(["info", str(SHIPPED), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == info["files"]


def test_a_damaged_folder_is_named_file_by_file_and_exits_1(tmp_path, capsys):
    folder, rung = _smallest_rung_folder(tmp_path / "model")
    assert model_info(folder)["problems"] == []
    data = bytearray((folder / rung.path.name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: still parses, wrong sha256
    (folder / rung.path.name).write_bytes(bytes(data))
    info = model_info(folder)
    assert [f["check"][:8] for f in info["files"]] == ["MISMATCH"]
    assert info["problems"] == [f"{rung.path.name}: {info['files'][0]['check']}"]
    assert cli.main(["info", str(folder)]) == 1
    assert "PROBLEM: " + rung.path.name in capsys.readouterr().out
    (folder / rung.path.name).unlink()
    info = model_info(folder)
    assert info["files"][0]["check"] == "MISSING" and len(info["problems"]) == 2  # and no contract to read


def test_a_single_graph_shows_its_contract_and_a_truncated_one_is_a_problem(tmp_path):
    rung = read_ladder(SHIPPED)[-1]
    info = model_info(rung.path)
    assert info["kind"] == "planner graph" and info["problems"] == []
    assert info["contract"]["budget"] == rung.budget.label() and info["files"][0]["sha256"] == rung.sha256
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(rung.path.read_bytes()[:100_000])
    info = model_info(cut)
    assert "contract" not in info and "not a readable ONNX file" in info["problems"][0]


def test_an_episodic_graph_says_so():
    """A graph with a termination head (trainer_node's episodic) is told from one without."""
    import tempfile

    from core_helpers import make_model
    from tdmpc2_ros.core.export import export_planner
    from tdmpc2_ros.runtime.budget import PlanBudget

    budget = PlanBudget(iterations=1, num_samples=8, num_elites=2, num_pi_trajs=2)
    with tempfile.TemporaryDirectory() as tmp:
        texts = []
        for episodic in (True, False):
            path = f"{tmp}/{episodic}.onnx"
            export_planner(make_model("1M", 4, 1, seed=1, episodic=episodic), budget, 0.99, path)
            info = model_info(path)
            assert info["contract"]["episodic"] is episodic
            texts.append(format_info(info))
    assert "preset 1M (episodic)," in texts[0] and "(episodic)" not in texts[1]


def test_a_store_lists_its_versions_with_lineage_and_leftovers(tmp_path, capsys):
    store = ModelStore(tmp_path / "store")
    folder, rung = _smallest_rung_folder(tmp_path / "ladder")
    a = store.add(folder, env_steps=1000, updates=500, bags=["b0"],
                  notes={"validation": {"chosen_rung": rung.budget.label(),
                                        "latency": {rung.budget.label(): {"p99_ms": 4.5}}}})
    b = store.add(folder, parent=a.version, env_steps=2000, updates=1000)
    (store.root / f".{b.version[:5]}9-abc.tmp").mkdir()  # a crash while adding
    info = model_info(store.root)
    assert info["kind"] == "model store" and info["problems"] == []
    assert [(v["version"], v["parent"], v["env_steps"]) for v in info["versions"]] == [
        (a.version, "", 1000), (b.version, a.version, 2000)]
    assert info["versions"][0]["p99_ms"] == 4.5 and info["versions"][1]["chosen_rung"] == ""
    assert info["leftovers"] == [f".{b.version[:5]}9-abc.tmp"]
    text = format_info(info)
    assert "2 versions" in text and f"newest {b.version}" in text and "left by a crash" in text
    # One version: its files against the manifest's sha256, its contract, its lineage.
    version = model_info(store.path(b.version))
    assert version["problems"] == [] and version["manifest"]["parent"] == a.version
    assert {f["file"]: f["check"] for f in version["files"]} == {rung.path.name: "ok", LADDER_FILE: "ok"}


@pytest.mark.parametrize("what", ["missing", "plain folder"])
def test_a_path_that_is_no_model_is_one_line_and_exit_2(tmp_path, capsys, what):
    path = tmp_path / "nothing"
    if what == "plain folder":
        path.mkdir()
        (path / "notes.txt").write_text("x")
    assert cli.main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdmpc2-ros info: error: ") and str(path) in err


def _bag(directory, episode: int, steps: int, start_ns: int, storage: str = "mcap"):
    from tdmpc2_ros.bags import BagWriter, encode_float64, encode_int64

    with BagWriter(directory, storage=storage, prefix=f"run{episode}") as w:
        w.write("/tdmpc2/episode", "std_msgs/msg/Int64", encode_int64(episode), start_ns)
        for k in range(steps):
            w.write("/tdmpc2/reward", "std_msgs/msg/Float64", encode_float64(0.5), start_ns + (k + 1) * 20_000_000)
    return w.closed[-1]


def test_a_bag_folder_shows_each_bag_the_open_ones_and_what_the_trainer_made_of_them(tmp_path, capsys):
    """As ros2 bag info per bag (read from metadata.yaml), plus the ingest ledger's verdict: the
    question 'why does the trainer not learn from my bags' answered in one table."""
    from tdmpc2_ros.bags import BagWriter, IngestLedger
    from tdmpc2_ros.bags.info import bags_info, format_bags_info

    folder = tmp_path / "bags"
    a = _bag(folder, 0, 10, 10**18)
    b = _bag(folder, 1, 5, 10**18 + 10**9, storage="sqlite3")
    c = _bag(folder, 2, 3, 10**18 + 2 * 10**9)
    opened = BagWriter(folder, prefix="run9")
    opened.write("/tdmpc2/reward", "std_msgs/msg/Float64", b"\x00\x01\x00\x00" + bytes(8), 10**18 + 3 * 10**9)
    ledger = IngestLedger(tmp_path / "run" / "ingest_ledger.jsonl")
    ledger.mark(a, transitions=10, episodes=1)
    ledger.mark(b, status="skipped", reason="no transitions and no raw topics")
    try:
        info = bags_info(folder, ledger.path)
    finally:
        opened.close()
    rows = {r["bag"]: r for r in info["bags"]}
    assert list(rows) == [a.name, b.name, c.name] and info["problems"] == []
    assert (rows[a.name]["messages"], rows[b.name]["storage"], rows[c.name]["duration_s"]) == (11, "sqlite3", 0.06)
    assert rows[a.name]["status"] == "ingested (10 transitions, 1 episodes)"
    assert rows[b.name]["status"] == "skipped: no transitions and no raw topics"
    assert rows[c.name]["status"] == "pending"
    assert {(t["topic"], t["messages"]) for t in info["topics"]} == {("/tdmpc2/episode", 3), ("/tdmpc2/reward", 18)}
    assert len(info["open"]) == 1 and info["open"][0].endswith(".partial")
    assert "killed recorder" in format_bags_info(info)
    # A bag rewritten under an ingested name is ingested again: the table says so.
    (a / "metadata.yaml").write_text((a / "metadata.yaml").read_text() + "\n")
    assert bags_info(folder, ledger.path)["bags"][0]["status"].startswith("changed since it was ingested")
    # Through the CLI: one bag alone; a damaged metadata.yaml is a problem (exit 1); a missing ledger, exit 2.
    assert cli.main(["info", str(c)]) == 0 and "/tdmpc2/reward (std_msgs/msg/Float64): 3 messages" in capsys.readouterr().out
    (c / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    assert cli.main(["info", str(folder), "--json"]) == 1
    assert "unreadable metadata.yaml" in json.loads(capsys.readouterr().out)["problems"][0]
    assert cli.main(["info", str(folder), "--ledger", str(tmp_path / "none.jsonl")]) == 2
    assert "no ingest ledger" in capsys.readouterr().err
