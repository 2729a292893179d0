"""Session 18 A/B (AMD, 2 cores): how much a thread loading ONNX Runtime sessions delays a 50 Hz loop of
plans, by the loading thread's CPU class, with half a core busy in another process.

    python benchmark/results/cpu_class_ab_amd_s18_2026-12-04.py [blocks]

Arms, 15 s each, alternated `blocks` times: the loading thread off; at nice +10 (the hot-swap thread's
class); at nice +10 with the GIL switch interval cut to 0.5 ms (is it the GIL?); at SCHED_IDLE. The loop
plans on the shipped ladder's i2-s64 rung, the loader loads its i4-s256 rung and runs 2 plans, back to
back. Per arm: plan wall time p50/p99/max, plans over 14 ms (the limit at 50 Hz) and 18 ms (the
deadline), and wall minus thread CPU time (time not running)."""
import os
import sys
import threading
import time

import numpy as np

from tdmpc2_ros.benchmark.loop import _busy_process
from tdmpc2_ros.ros.paths import default_model
from tdmpc2_ros.runtime.ladder import read_ladder
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner, share_thread_pool
from tdmpc2_ros.runtime.priority import lower_thread_priority

ARMS = ("off", "nice10", "nice10_switch_0.5ms", "sched_idle")
share_thread_pool(1)
rungs = read_ladder(str(default_model()))
live = OnnxPlanner(rungs[-2].path, threads=1)
obs = np.full(live.obs_dim, 0.1, np.float32)
arm = {"name": ""}


def loader(name: str):
    if name.startswith("nice10"):
        lower_thread_priority(10)
    elif name == "sched_idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while arm["name"] == name:
        p = OnnxPlanner(rungs[1].path, threads=1)
        p.plan(obs)
        p.plan(obs)
        del p


busy = _busy_process(0.5)
res = {name: [] for name in ARMS}
try:
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
        for name in ARMS:
            arm["name"] = name
            sys.setswitchinterval(0.0005 if "switch" in name else 0.005)
            t = threading.Thread(target=loader, args=(name,)) if name != "off" else None
            if t:
                t.start()
            end = nxt = time.monotonic()
            end += 15.0
            while time.monotonic() < end:
                nxt += 0.02
                t0, c0 = time.perf_counter(), time.thread_time()
                live.plan(obs)
                res[name].append((time.perf_counter() - t0, time.thread_time() - c0))
                time.sleep(max(0.0, nxt - time.monotonic()))
            arm["name"] = ""
            if t:
                t.join()
finally:
    busy.kill()
print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")
print("| loading thread | plans | wall p50 ms | wall p99 ms | wall max ms | over 14 ms | over 18 ms | not running p99 ms | max ms |")
print("|---|---|---|---|---|---|---|---|---|")
for name, v in res.items():
    a = np.array(v) * 1e3
    wall, waited = a[:, 0], a[:, 0] - a[:, 1]
    print(f"| {name} | {len(a)} | {np.median(wall):.2f} | {np.percentile(wall, 99):.2f} | {wall.max():.2f} | "
          f"{int((wall > 14).sum())} | {int((wall > 18).sum())} | {np.percentile(waited, 99):.2f} | {waited.max():.2f} |")
