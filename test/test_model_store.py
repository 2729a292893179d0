"""Pure pieces of the learning loop: the labelled-segment messages, exact transition pairing, the
versioned model store and its announcements (no ROS, no torch in the code under test)."""

from __future__ import annotations

import base64
import hashlib
import json
import math

import numpy as np
import pytest

from tdmpc2_ros.runtime.ladder import LADDER_FILE
from tdmpc2_ros.runtime.model_store import MANIFEST, Manifest, ModelStore, StoreError, materialise
from tdmpc2_ros.runtime.transition import SegmentError, Transition, TransitionPairer, pack, unpack


def step_msg(episode, step, obs, reward=math.nan, applied=(0.0,), last=False, commands=None):
    segments = [("obs", obs), ("reward", [reward]), ("applied_action", applied), ("episode", [episode]),
                ("step", [step]), ("last", [float(last)])]
    dims, data = pack(segments + ([("commands", [commands])] if commands is not None else []))
    return unpack(dims, data)[0]


def test_pack_unpack_round_trip_with_tags():
    dims, data = pack([("a", [1.0, 2.0]), ("b", [3.0])], {"model": "v0001-abc"})
    assert dims == [("a", 2), ("b", 1), ("model:v0001-abc", 0)]
    segs, tags = unpack(dims, data)
    assert list(segs["a"]) == [1.0, 2.0] and list(segs["b"]) == [3.0] and tags == {"model": "v0001-abc"}
    with pytest.raises(SegmentError, match="3 values but the message holds 4"):
        unpack(dims, [1.0, 2.0, 3.0, 4.0])


def test_transition_record_round_trip():
    t = Transition(3, 7, np.arange(5, dtype=np.float32), np.array([0.25], np.float32), 0.5,
                   np.arange(5, 10, dtype=np.float32), False, True, "v0002-ff")
    back = Transition.unpack(*t.pack())
    assert (back.episode, back.step, back.reward, back.terminated, back.truncated, back.model_version) == (3, 7, 0.5, False, True, "v0002-ff")
    np.testing.assert_array_equal(back.obs, t.obs)
    np.testing.assert_array_equal(back.next_obs, t.next_obs)
    np.testing.assert_array_equal(back.action, t.action)
    with pytest.raises(SegmentError, match="lacks segment"):
        Transition.unpack([("episode", 1)], [0.0])


def test_pairer_pairs_exactly_and_never_bridges_a_gap():
    pairer = TransitionPairer(lambda a: np.asarray(a) / 2.0)  # physical -> normalised
    o = [np.full(2, float(k), np.float32) for k in range(6)]
    assert pairer.observe(step_msg(0, 0, o[0]), o[0], "v1") is None  # first observation: nothing yet
    t = pairer.observe(step_msg(0, 1, o[1], reward=0.7, applied=[1.0]), o[1], "v1")
    assert (t.episode, t.step, t.reward, t.model_version) == (0, 0, pytest.approx(0.7), "v1")
    np.testing.assert_array_equal(t.obs, o[0])
    np.testing.assert_array_equal(t.next_obs, o[1])
    assert t.action.tolist() == [0.5]  # the applied command, normalised
    # Step 2 is lost: step 3 cannot be paired with step 1's observation.
    assert pairer.observe(step_msg(0, 3, o[3], reward=0.1), o[3], "v1") is None
    assert pairer.gaps == 1
    t = pairer.observe(step_msg(0, 4, o[4], reward=0.2, last=True), o[4], "v2")
    assert t.step == 3 and t.truncated and not t.terminated and t.model_version == "v1"  # the model that acted
    # After the final observation, a new episode starts from scratch.
    assert pairer.observe(step_msg(1, 0, o[5]), o[5], "v2") is None
    assert pairer.emitted == 2 and pairer.gaps == 1


def test_a_step_that_applied_two_commands_makes_no_record_and_the_chain_goes_on():
    """A sim taking each command at the next physics step says how many different commands a step
    applied. A step under two was produced by no one action: its applied_action names only the
    second, so it makes no record (counted as mixed, not as a gap), and the next step pairs again."""
    pairer = TransitionPairer(lambda a: np.asarray(a))
    o = [np.full(2, float(k), np.float32) for k in range(4)]
    assert pairer.observe(step_msg(0, 0, o[0], commands=0), o[0], "v1") is None
    assert pairer.observe(step_msg(0, 1, o[1], reward=0.5, applied=[0.3], commands=1), o[1], "v1").action.tolist() == [pytest.approx(0.3)]
    assert pairer.observe(step_msg(0, 2, o[2], reward=0.6, applied=[0.9], commands=2), o[2], "v1") is None
    t = pairer.observe(step_msg(0, 3, o[3], reward=0.7, applied=[0.9], commands=1), o[3], "v1")
    assert (t.step, t.reward) == (2, pytest.approx(0.7))
    np.testing.assert_array_equal(t.obs, o[2])
    assert (pairer.emitted, pairer.mixed, pairer.gaps) == (2, 1, 0)


def _fake_ladder(folder, payload=b"graph"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "planner_x.onnx").write_bytes(payload)
    (folder / LADDER_FILE).write_text(json.dumps({"rungs": [{"file": "planner_x.onnx", "budget": {}, "sha256": ""}]}))
    return folder


def test_store_versions_are_complete_and_content_addressed(tmp_path):
    store = ModelStore(tmp_path / "store")
    a = store.add(_fake_ladder(tmp_path / "a"), env_steps=1000, updates=500, bags=["bag_0"])
    b = store.add(_fake_ladder(tmp_path / "b", b"other graph"), parent=a.version, env_steps=2000)
    c = store.add(_fake_ladder(tmp_path / "c"), parent=b.version)  # same bytes as a
    assert store.versions() == [a.version, b.version, c.version]
    assert a.version.startswith("v0001-") and b.version.startswith("v0002-")
    assert a.version[6:] == c.version[6:] != b.version[6:]  # the suffix is the content hash
    m = store.manifest(b.version)
    assert (m.parent, m.env_steps, set(m.files)) == (a.version, 2000, {LADDER_FILE, "planner_x.onnx"})
    assert store.latest().version == c.version
    # A half-written version (a crash before the rename) is invisible.
    (tmp_path / "store" / ".v0004-deadbeef.tmp").mkdir()
    assert store.versions() == [a.version, b.version, c.version]
    assert (store.path(a.version) / MANIFEST).is_file()


def test_versions_are_numbered_past_gaps_ordered_past_9999_and_pruned(tmp_path):
    """A store pruned (or thinned by hand) numbers the next version after its newest, not after its
    count (a number used again would sort a new version before the old ones, and latest() would never
    see it); v10000 sorts after v9999; prune keeps the newest and the protected ones."""
    store = ModelStore(tmp_path / "store")
    made = [store.add(_fake_ladder(tmp_path / f"l{i}", f"graph {i}".encode())).version for i in range(5)]
    assert [v[:5] for v in made] == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    assert store.prune(0) == [] and store.versions() == made  # 0: keep all
    assert store.prune(2, protect={made[1]}) == [made[0], made[2]]
    assert store.versions() == [made[1], made[3], made[4]] and not list(store.root.glob(".*"))
    nxt = store.add(_fake_ladder(tmp_path / "l5", b"graph 5")).version
    assert nxt.startswith("v0006-") and store.latest().version == nxt
    # Past 9999 the names outgrow their padding: the order is still by number.
    (store.root / "v9999-aaaaaaaaaaaa").mkdir()
    (store.root / "v9999-aaaaaaaaaaaa" / MANIFEST).write_text(Manifest("v9999-aaaaaaaaaaaa").to_json())
    big = store.add(_fake_ladder(tmp_path / "l6", b"graph 6")).version
    assert big.startswith("v10000-") and store.versions()[-2:] == ["v9999-aaaaaaaaaaaa", big]
    assert store.latest().version == big


def test_prune_keeps_one_version_per_interval_of_the_older_ones_and_the_choice_is_stable(tmp_path, monkeypatch):
    """store_keep_every_s: beside the newest, one version per interval of the older ones (the oldest
    first), decided from the manifests' creation times; a milestone kept once stays kept at the next
    prune, so history thins at a bounded rate instead of vanishing or growing without end."""
    from tdmpc2_ros.runtime import model_store

    clock = {"t": 1000.0}
    monkeypatch.setattr(model_store.time, "time", lambda: clock["t"])
    store, made = ModelStore(tmp_path / "store"), []

    def export(minutes):  # one version every `minutes`
        clock["t"] += 60.0 * minutes
        made.append(store.add(_fake_ladder(tmp_path / f"l{len(made)}", f"graph {len(made)}".encode())).version)

    for _ in range(10):
        export(25)  # created at 25, 50, ..., 250 minutes past the first clock reading
    removed = store.prune(2, every_s=3600.0)
    # Older than the newest 2: made[0..7] at 25..200 min. Kept: 25 (the oldest), 85+ -> 100, 160+ -> 175.
    assert store.versions() == [made[0], made[3], made[6], made[8], made[9]]
    assert removed == [made[1], made[2], made[4], made[5], made[7]]
    for _ in range(4):
        export(25)  # 275 .. 350 min
        store.prune(2, every_s=3600.0)
    # The milestones chosen stay, 235+ -> 250 (made[9]) joins them; made[8], [10] and [11] went as they aged.
    assert store.versions() == [made[0], made[3], made[6], made[9], made[12], made[13]]
    # A version whose manifest cannot be read is never deleted on a guess.
    (store.path(made[3]) / MANIFEST).write_text("{not json")
    store.prune(1, every_s=0.0)
    assert store.versions() == [made[3], made[13]]
    assert store.size_bytes() == sum(f.stat().st_size for v in store.versions() for f in store.path(v).iterdir())


def test_announcements_by_path_and_inline_are_verified(tmp_path):
    store = ModelStore(tmp_path / "store")
    v = store.add(_fake_ladder(tmp_path / "a")).version
    by_path = store.announcement(v)
    assert materialise(by_path, tmp_path / "cache") == store.path(v).resolve()
    inline = json.loads(json.dumps(store.announcement(v, inline=True)))  # survives the JSON of a String message
    folder = materialise(inline, tmp_path / "cache")
    assert folder == tmp_path / "cache" / v and (folder / "planner_x.onnx").read_bytes() == b"graph"

    bad = dict(by_path, files={**by_path["files"], "planner_x.onnx": "0" * 64})
    with pytest.raises(StoreError, match="planner_x.onnx has sha256"):
        materialise(bad, tmp_path / "cache")
    tampered = dict(inline, inline={**inline["inline"], "planner_x.onnx": "Z3JhcGg="[:-4] + "AAAA"})
    with pytest.raises(StoreError, match="sha256"):
        materialise(tampered, tmp_path / "cache2")
    escape = dict(inline, inline={"../evil.onnx": "AAAA"})
    with pytest.raises(StoreError, match="unexpected inline file"):
        materialise(escape, tmp_path / "cache3")
    with pytest.raises(StoreError, match="neither a path nor inline"):
        materialise({"version": v, "files": by_path["files"]}, tmp_path / "cache4")


def test_a_bad_inline_announcement_writes_nothing_and_keeps_what_is_cached(tmp_path):
    """An announcement comes over an unauthenticated topic: its names must not lead out of the cache,
    its bytes are checked before they land, and a version already cached is never written over."""
    store = ModelStore(tmp_path / "store")
    v = store.add(_fake_ladder(tmp_path / "a")).version
    good = json.loads(json.dumps(store.announcement(v, inline=True)))
    cache = tmp_path / "robot" / "cache"
    target = tmp_path / "robot" / "models" / "shipped"  # another model's folder, beside the cache
    _fake_ladder(target, b"shipped graph")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    for version in ["../models/shipped", str(target), "", ".hidden", "a/b", "..", "a\\b", "a\0b"]:
        with pytest.raises(StoreError, match="not a plain file name"):
            materialise(dict(good, version=version), cache)
    for name in ["../ladder.json", "sub/planner_x.onnx", ".ladder.json"]:
        files = {**good["files"], name: "0" * 64}
        with pytest.raises(StoreError, match="not a plain file name"):
            materialise(dict(good, files=files, inline={**good["inline"], name: "AAAA"}), cache)
        with pytest.raises(StoreError, match="not a plain file name"):
            materialise(dict(store.announcement(v), files=files), cache)
    with pytest.raises(StoreError, match="not base64"):
        materialise(dict(good, inline={**good["inline"], "planner_x.onnx": "not base64!"}), cache)
    with pytest.raises(StoreError, match="inline is list"):
        materialise(dict(good, inline=["planner_x.onnx"]), cache)
    tampered = dict(good, inline={**good["inline"], "planner_x.onnx": base64.b64encode(b"evil").decode()})
    with pytest.raises(StoreError, match="planner_x.onnx has sha256"):
        materialise(tampered, cache)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not cache.exists() or list(cache.iterdir()) == []  # no version folder, no hidden leftovers

    folder = materialise(good, cache)  # the good one still lands after all that
    assert folder == cache / v and (folder / "planner_x.onnx").read_bytes() == b"graph"
    assert materialise(tampered, cache) == folder  # the cached files are the announced ones: the bytes are not needed
    other = dict(tampered, files={**good["files"], "planner_x.onnx": hashlib.sha256(b"evil").hexdigest()})
    with pytest.raises(StoreError, match="cached files are kept"):
        materialise(other, cache)  # the same version with other files: refused, the cache untouched
    assert (folder / "planner_x.onnx").read_bytes() == b"graph" and sorted(p.name for p in cache.iterdir()) == [v]
    assert materialise(good, cache) == folder  # announced again (transient-local redelivery): reused
