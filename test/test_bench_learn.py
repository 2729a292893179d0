"""The closed-loop benchmark's bookkeeping (tdmpc2_ros/benchmark/learn.py): what it reads off the
loop's topics becomes the reported figures. The loop itself runs for hours and is a benchmark, not a
test; test_bringup.py::test_learn_loop_from_a_random_start runs the same four processes briefly."""

from __future__ import annotations

from types import SimpleNamespace

from tdmpc2_ros.benchmark.learn import _Watch, first_reaching, format_table, merge_final, summarize
from tdmpc2_ros.benchmark.loop import excess_p
from tdmpc2_ros.benchmark.machine import describe, machine

CFG = {"task": "cartpole-swingup", "rate_hz": 50, "ladder": "l", "preset": "1M", "compile": False}


def _episode(i, ret, version="v0001"):
    return {"episode": i, "step": (i + 1) * 1000, "episode_reward": ret, "model_version": version, "wall_s": i}


def test_first_episode_at_the_bar_counts_only_within_the_budget():
    rows = [_episode(0, 100), _episode(1, 760), _episode(2, 800)]
    assert first_reaching(rows, 750) == 2000
    assert first_reaching(rows, 900) is None
    s = summarize(rows, [], {}, target_env_steps=1000, bar=750, eval_returns=[])
    assert s["first_env_step_at_bar"] is None  # 760 came after the 1000-step budget
    assert s["best_return"] == 800 and s["episodes"] == 3 and s["env_steps"] == 3000


def test_summary_counts_swap_misses_and_the_update_ratio():
    swaps = [{"version": "v0002", "missed_before": 3, "missed_after": 3},
             {"version": "v0003", "missed_before": 3, "missed_after": 5},
             {"version": "v0004", "missed_before": 5, "missed_after": ""}]  # not settled: not counted
    final = {"planner_missed_deadlines": "7", "planner_ticks": "3000", "trainer_updates": "1500",
             "trainer_transitions": "2000"}
    s = summarize([_episode(0, 10)], swaps, final, 100_000, 750, eval_returns=[700.0, 800.0])
    assert s["swaps"] == 3 and s["swap_versions"] == ["v0002", "v0003", "v0004"]
    assert s["missed_deadlines_around_swaps"] == 2
    assert s["missed_deadlines_total"] == 7 and s["ticks"] == 3000
    assert "ticks_with_swap_work" not in s  # a run from before the planner counted them
    assert s["updates_per_transition"] == 0.75
    # The ticks with swap work next to them against the rest, with the p of the swap side missing more.
    final.update(planner_ticks_with_swap_work="300", planner_missed_with_swap_work="2")
    s = summarize([_episode(0, 10)], swaps, final, 100_000, 750, eval_returns=[700.0, 800.0])
    assert (s["ticks_with_swap_work"], s["missed_with_swap_work"]) == (300, 2)
    assert (s["ticks_without_swap_work"], s["missed_without_swap_work"]) == (2700, 5)
    assert s["swap_work_excess_p"] == excess_p(2, 300, 5, 2700)
    row = next(line for line in format_table(s, CFG).splitlines() if line.startswith("| 3 |"))
    assert "| 2 of 300 | 5 of 2700 |" in row
    assert (s["eval_mean_return"], s["eval_std_return"], s["eval_episodes"]) == (750.0, 50.0, 2)
    # The header names the seed: one for every node, or the nodes' YAML (runs from before --seed).
    assert "; seed 3 for every node." in format_table(s, {**CFG, "seed": 3}).splitlines()[0]
    assert "; seeds of the nodes' YAML (sim 0, planner 0, trainer 1)." in format_table(s, CFG).splitlines()[0]
    # The last line names the CPU (runs from before session 33 did not record it).
    assert not format_table(s, CFG).splitlines()[-1].startswith("Machine:")
    here = machine()
    assert format_table({**s, "machine": here}, CFG).splitlines()[-1] == f"Machine: {describe(here)}."


def test_watch_records_episodes_and_swaps_and_resumes(tmp_path):
    lines = []
    w = _Watch(tmp_path, episode_env_steps=1000, settle_s=0.0, log=lines.append)
    w.on_planner({"model_version": "v0001", "missed_deadlines": "0", "ticks": "10"})
    w.on_return(SimpleNamespace(data=12.5))
    w.on_planner({"model_version": "v0001", "missed_deadlines": "1", "ticks": "500"})
    w.on_planner({"model_version": "v0002", "missed_deadlines": "1", "ticks": "600"})  # a swap, settled at once
    w.on_return(SimpleNamespace(data=40.0))
    w.flush()
    episodes, swaps = w.episodes.read(), w.swaps.read()
    assert [(int(r["step"]), float(r["episode_reward"]), r["model_version"]) for r in episodes] == \
        [(1000, 12.5, "v0001"), (2000, 40.0, "v0002")]
    assert [(s["version"], int(s["missed_before"]), int(s["missed_after"])) for s in swaps] == [("v0002", 1, 1)]
    assert any("swapped to v0002" in line for line in lines)
    again = _Watch(tmp_path, episode_env_steps=1000, settle_s=0.0, log=lines.append)
    assert again.done == 2  # a resumed run plays only the missing episodes
    again.on_return(SimpleNamespace(data=5.0))
    assert int(again.episodes.read()[-1]["step"]) == 3000


def test_watch_says_once_why_the_trainer_published_nothing(tmp_path):
    lines = []
    w = _Watch(tmp_path, episode_env_steps=1000, settle_s=4.0, log=lines.append)
    for _ in range(3):
        w.on_trainer({"last_failure": "no rung's p99 latency fits 28.0 ms"})
    w.on_trainer({"last_failure": ""})
    assert lines == ["trainer: export failed (no rung's p99 latency fits 28.0 ms)"]


def test_swap_misses_count_from_the_announcement(tmp_path):
    """The candidate is checked beside the live plans before it is installed: misses in that time count."""
    import json

    w = _Watch(tmp_path, episode_env_steps=1000, settle_s=0.0, log=lambda _line: None)
    w.on_planner({"model_version": "v0001", "missed_deadlines": "2"})
    w.on_announcement(SimpleNamespace(data=json.dumps({"version": "v0002", "files": {}})))
    w.on_announcement(SimpleNamespace(data="not json"))  # ignored
    w.on_planner({"model_version": "v0001", "missed_deadlines": "4"})  # missed while v0002 was checked
    w.on_planner({"model_version": "v0002", "missed_deadlines": "4"})
    (row,) = w.swaps.read()
    assert (row["version"], int(row["missed_before"]), int(row["missed_after"])) == ("v0002", 2, 4)


def test_a_resumed_run_adds_its_planner_counts_and_keeps_the_trainers():
    first = merge_final({}, {"missed_deadlines": "2", "ticks": "1000", "ticks_with_swap_work": "50",
                             "missed_with_swap_work": "1"}, {"updates": "700", "transitions": "900"})
    assert first == {"planner_missed_deadlines": 2, "planner_ticks": 1000, "planner_ticks_with_swap_work": 50,
                     "planner_missed_with_swap_work": 1, "trainer_updates": 700, "trainer_transitions": 900, "parts": 1}
    # The second part's planner is a new process counting from zero; the trainer resumed its counts.
    second = merge_final(first, {"missed_deadlines": "0", "ticks": "500", "ticks_with_swap_work": "20",
                                 "missed_with_swap_work": "0"}, {"updates": "1150", "transitions": "1400"})
    assert second == {"planner_missed_deadlines": 2, "planner_ticks": 1500, "planner_ticks_with_swap_work": 70,
                      "planner_missed_with_swap_work": 1, "trainer_updates": 1150, "trainer_transitions": 1400, "parts": 2}
    # A part interrupted before the trainer reported keeps the earlier trainer counts.
    assert merge_final(second, {}, {})["trainer_updates"] == 1150


def test_misses_by_kind_of_swap_work_and_frees_are_reported_and_summed_over_parts():
    """The planner's per-kind counts (a tick may have several kinds) and its frees reach the report; a
    resumed part adds its counts, and the models still held are the last part's."""
    from tdmpc2_ros.runtime.swap_cost import AFTER_FREE, BESIDE_LOADING, SWAP_WORK

    def planner(ticks, missed, loading, freed, waiting):
        kinds = {f"{side}_with_swap_work_{w}": "0" for w in SWAP_WORK for side in ("ticks", "missed")}
        kinds.update({f"ticks_with_swap_work_{BESIDE_LOADING}": str(loading[0]),
                      f"missed_with_swap_work_{BESIDE_LOADING}": str(loading[1]),
                      f"ticks_with_swap_work_{AFTER_FREE}": str(freed)})
        return {"ticks": str(ticks), "missed_deadlines": str(missed), "ticks_with_swap_work": str(loading[0] + freed),
                "missed_with_swap_work": str(loading[1]), "models_freed": str(freed),
                "models_waiting_to_free": str(waiting), **kinds}

    first = merge_final({}, planner(1000, 3, (40, 1), 5, 2), {"updates": "10", "transitions": "20"})
    final = merge_final(first, planner(500, 1, (10, 0), 3, 0), {})
    assert final["planner_ticks_with_swap_work_beside_loading"] == 50
    assert final["planner_missed_with_swap_work_beside_loading"] == 1
    assert final["planner_models_freed"] == 8 and final["planner_models_waiting_to_free"] == 0
    s = summarize([_episode(0, 10)], [], final, 100_000, 750, eval_returns=[])
    assert s["swap_work_by_kind"][BESIDE_LOADING] == {"ticks": 50, "missed": 1}
    assert s["swap_work_by_kind"][AFTER_FREE] == {"ticks": 8, "missed": 0}
    assert (s["models_freed"], s["models_waiting_to_free"]) == (8, 0)
    table = format_table(s, CFG)
    assert f"{BESIDE_LOADING} 1 of 50" in table and f"{AFTER_FREE} 0 of 8" in table
    assert "Retired models freed in the slack: 8; still held at the end: 0." in table
    # A run whose planner counted none of these says nothing about them.
    old = summarize([_episode(0, 10)], [], merge_final({}, {"ticks": "10", "missed_deadlines": "0",
                                                            "ticks_with_swap_work": "1", "missed_with_swap_work": "0"}, {}),
                    100_000, 750, eval_returns=[])
    assert "swap_work_by_kind" not in old and "models_freed" not in old
    assert "Retired models" not in format_table(old, CFG)
