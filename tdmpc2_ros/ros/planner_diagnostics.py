"""What planner_node reports on /diagnostics, besides its level and message: one key-value list,
read from the node's counters and statistics at each report. Keys say their unit (``_ms``, ``_pct``,
``_s``); the comments say what a value is for."""

from __future__ import annotations

import math


def planner_values(node) -> dict:
    """The key values of one report, from a running PlannerNode."""
    c = node.planner.contract
    return {
        "tick_latency_p50_ms": round(node.tick_latency.percentile(50) * 1e3, 3),
        "tick_latency_p99_ms": round(node.tick_latency.percentile(99) * 1e3, 3),
        "tick_latency_last_ms": round(node.tick_latency.last() * 1e3, 3),
        # Over the last 50 plans (the yardstick of swap_plan_excess), not the whole window as the p99.
        "plan_latency_recent_p50_ms": round(node.plan_latency.recent_median(50) * 1e3, 3),
        "plan_latency_p99_ms": round(node.plan_latency.percentile(99) * 1e3, 3),
        "plan_latency_last_ms": round(node.plan_latency.last() * 1e3, 3),
        "plan_waited_p99_ms": round(node.plan_waited.percentile(99) * 1e3, 3),
        "plan_waited_max_ms": round(node.plan_waited.percentile(100) * 1e3, 3),
        "plan_queued_p99_ms": round(node.plan_queued.percentile(99) * 1e3, 3),
        "plan_queued_max_ms": round(node.plan_queued.percentile(100) * 1e3, 3),
        "plan_queued_since_report_max_ms": round(node.plan_queued_since_report * 1e3, 3),
        **node.swap_cost.values(),
        "obs_to_action_p99_ms": round(node.obs_to_action.percentile(99) * 1e3, 3),
        "ros_overhead_p99_ms": round(node.ros_overhead.percentile(99) * 1e3, 3),
        "observation_age_ms": round(node.last_obs_age * 1e3, 3),
        "enabled": node.enabled, "disabled_ticks": node.disabled_ticks,  # ~/enable
        "ticks": node.ticks, "missed_deadlines": node.missed_deadlines, "safe_actions": node.safe_actions,
        "plan_errors": node.plan_errors,
        "ticks_over_limit": node.ticks_over_limit,  # plans over the rung's limit, and misses
        "duplicate_observations": node.duplicate_observations,
        "transitions_published": node.pairer.emitted, "transition_gaps": node.pairer.gaps,
        "transitions_mixed": node.pairer.mixed,  # steps under two commands (a physics-rate sim): no record
        "model_version": node.model_version, "swaps": node.swaps,
        # The running version and those ~/rollback may return to: the trainer keeps them in its store
        # (VersionsInUse), as their other rungs are loaded from there.
        "model_versions_in_use": ",".join(dict.fromkeys([node.model_version, *(v for _, v, _ in list(node.previous))])),
        "swaps_rejected": node.swapper.rejected,
        "unmatched_qos": node.unmatched_announcers.why,  # an announcer whose QoS cannot reach model_update_topic
        "models_freed": node.swapper.retired.freed, "models_waiting_to_free": len(node.swapper.retired),
        "last_swap_result": node.swapper.last_result,
        "last_swap_thread_cpu_ms": round(node.swapper.last_cpu_s * 1e3, 3),
        "model_sha256": node.planner.sha256[:16], "model_train_step": c.train_step, "model_task": c.task,
        "budget": c.budget.label(), "budget_steps_down": node.steps.steps_down, "budget_steps_up": node.steps.steps_up,
        "budget_steps_from_standby": node.steps.steps_from_standby,
        "standby": node.swapper.standby.label(), "standby_result": node.swapper.standby.result,
        # The room gate: loads (new versions, standbys) that waited for the loop to show room, and
        # those loaded after swap_load_wait_s without it.
        "loads_waited_for_room": node.swapper.gate.loads_waited, "loads_without_room": node.swapper.gate.loads_without_room,
        # Python's garbage collector once start-up was over: full collections, the longest pause
        # (any thread), and the most of one plan it took.
        "gc_full_collections": node.gc.collections[2], "gc_pause_max_ms": round(node.gc.max_s * 1e3, 3),
        "gc_in_plan_max_ms": round(node.gc_in_plans_max_s * 1e3, 3),
        "last_room_wait_s": round(node.swapper.gate.last_wait_s, 3),
        # The host's steal (a VM's cores held back by the hypervisor) since the last report, and the
        # highest report so far: late plans that no setting here can help. nan where unknown.
        "host_steal_pct": node.steal.report(), "host_steal_max_pct": node.steal.max_pct,
        "control_rate_hz": node.p.control_rate_hz,
        "plan_thread": node.plan_thread,
        "execution_provider": node.planner.session.get_providers()[0],
    }


def steal_words(pct: float, window_s: float) -> str:
    """The host's steal, for a late plan's warning (runtime/host_steal.py)."""
    if math.isnan(pct):
        return "the host's steal is unknown here"
    return f"the host stole {pct:.1f}% of CPU time in the {window_s:.2f} s since the last /diagnostics report"
