"""Hot swap: bring a new planner graph up beside the running one, check it, and hand it over at a
tick boundary. Pure Python + onnxruntime (the node wires it to ROS).

A background thread, at low CPU priority, takes each request (an announcement from the model store,
or a path) through:
1. files: every announced file's sha256 (model_store.materialise), then the rung's own sha256;
2. spec: observation and action spec and budget equal to the running model's;
then hands the loaded candidate to the control loop as a ShadowProbe:
3. finite outputs, first on a zero observation, then on the live ones (NaN weights fail here);
4. warm-up, then latency for the running budget.
Steps 3-4 are *shadow plans*: one at a time, on the control loop's slack thread (the node's; it
shares the plan thread's cores and priority, one below), in the slack after a live tick has been
published and only when the candidate's expected plan time fits before the next tick. So a check
does not run beside a live plan (with 2-thread pools on 2 cores, two concurrent plans each took
twice as long). A shadow plan still running when its slack ends is stopped (reclaim_worker, called
by the next tick before it plans), and the tick's plan starts at once on the idle plan thread. (On
a busy 2-core machine, before the stop, the checks in which 9-16 shadow plans outlasted their slack
were the ones with 7-24 missed deadlines each; with the stop but shadow plans on the plan thread
itself, a live plan still queued behind what was left of one, and with a core kept half busy by
another process 4 of about 1,200 ticks next to shadow plans missed.) A stopped plan counts as longer
than any limit, so a check is judged on every plan it tried, not on the quick ones.
A loop whose slack cannot hold a whole plan for IDLE_S (idle, or a rung that takes most of
the period) gets them from the low-priority background thread instead, timed in CPU time; beside a
loop that ticks, each starts just after a tick has published, so as to overlap the next live plan
as little as the slack allows. The
median must fit the limit the ladder was chosen with, or be within 25% of the running model's own
plans over the same window (a CPU busy with other work slows both alike).
Only then is the candidate offered to the control loop, which installs it between two ticks (a
pointer swap that carries the warm-start mean over). Any failure leaves the running model alone
and reports why. The loop can ask what swap work went on beside a tick (offer_slack's return value;
worked_since: loading or background plans), so that a missed deadline is told from the machine's own;
reclaim_worker also says whether a slack job was still running when the tick came (the loop does
not need it since slack jobs moved off the plan thread onto their own).

A rung request (Request.budget) is the same model at another budget. A smaller
one is asked for by the loop when its rung overruns (budget_steps.py). Its files are checked
the same way, but it is warmed up on this thread instead of in the slack: an overrunning loop has
no slack to give. A larger one (up=True) is asked for after a long run of plans that fitted;
it gets shadow plans like a new version, and must show a p99 within the limit itself (the running
rung is smaller, so it is no yardstick). A failed step up is no fault: the loop stays where it is.

The standby (keep_standby; held in runtime/standby.py's StandbySlot): the next smaller rung of the
running version, loaded on this thread and warmed with RUNG_WARM_PLANS shadow plans in the slack while
the loop is well, so that a step down is a pointer swap the loop does itself (`standby.take`) instead
of a load beside a late loop (on the busy 2-core AMD machine, the one miss next to a step down's swap
work in session 17 came while its rung was loading; loading took 65-190 ms of CPU). Its cost is one
more session in memory and a load after every model update or rung change, at a time the loop has
slack. The first standby is loaded and warmed by the planner at start-up, before its loop runs, and a
step up leaves the rung it came from as the standby: neither loads anything beside the loop.

The room gate (runtime/room_gate.py; `room`, `room_wait_s`): a load that can wait (a new version, a
standby) waits until the loop shows room for it, at most `room_wait_s`, and meanwhile gives way to a
request the loop waits for. A budget step is not gated: the loop waits for it.

What the thread is asked is a runtime/swap_request.py Request. A model the loop lets go (replaced,
rolled back from, a candidate that failed) is retired to runtime/retired_models.py and freed later in
a tick's slack.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import math
import queue
import threading
import time
from pathlib import Path

import numpy as np

from tdmpc2_ros.runtime.ladder import next_smaller_rung
from tdmpc2_ros.runtime.model_store import StoreError, materialise, prune_cache
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner, StopHandle
from tdmpc2_ros.runtime.candidate import (Candidate, ShadowProbe, SwapRejected, checked_candidate, load_matching,
                                          quantile, warm_up)
from tdmpc2_ros.runtime.priority import lower_thread_priority, pin_thread
from tdmpc2_ros.runtime.retired_models import RetiredModels
from tdmpc2_ros.runtime.room_gate import RoomGate
from tdmpc2_ros.runtime.standby import StandbySlot
from tdmpc2_ros.runtime.swap_request import Request
# The names of this module's work beside the loop, as the loop's swap tallies count them.
from tdmpc2_ros.runtime.swap_cost import BACKGROUND_PLANS, FREE, LOADING, SHADOW_PLAN


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if math.isfinite(seconds) else "beyond a tick's slack"


class HotSwapper:
    """One background thread; requests are handled in order, newest wins if several queue up."""

    IDLE_S = 0.5  # no slack that fits a plan for this long: probe from the background
    MAX_GAP = 8  # the most ticks between shadow plans, reached while they keep overrunning their slack
    # A step down is asked for by a loop that overruns: every warm-up plan beside it takes CPU from
    # a late loop. A fresh session's first plan is the slow one (1.02-1.05x its steady CPU time for
    # models/cartpole_swingup's rungs on AMD), the second is already at its steady cost: one plan on zeros and one on
    # the latest observation, both checked for finite outputs (was ladder_warmup x 2 = 20 plans).
    RUNG_WARM_PLANS = 2
    # The standby's warm-up plans wait this long for slack before running beside the loop: a loop
    # that overruns steps down within a few plans, and must not have them beside it meanwhile.
    STANDBY_IDLE_S = 5.0
    RECHECKS = 2  # a new version checked again at most this often because the loop changed budget meanwhile

    def __init__(self, current, limit_s: float, warmup: int, runs: int, threads: int, seed: int, cache_dir, log,
                 live_p50=None, probe_timeout_s: float = 60.0, cpus: tuple[int, ...] = (), running_version=None,
                 spacing: int = 1, room=None, room_wait_s: float = 0.0, cache_keep: int = 0, in_use=None):
        self.current = current  # callable -> (running OnnxPlanner, latest observation or None)
        # The cache of inline-announced versions keeps the cache_keep newest (0: all) and in_use()'s
        # (the folders the loop runs or may roll back to), pruned after each new one lands.
        self.cache_keep, self.in_use = int(cache_keep), in_use
        self.live_p50 = live_p50  # callable -> median of the running model's recent plans (s), or None
        self.running_version = running_version  # callable -> the version the loop runs now, or None
        # room: callable -> True while the loop has room for a load beside it; None: no gate
        self.gate = RoomGate(room, room_wait_s, log)
        self._deferred: list[Request] = []  # waiting for room, behind requests the loop waits for
        self.limit_s, self.warmup, self.runs, self.threads, self.seed = limit_s, warmup, runs, threads, seed
        self.probe_timeout_s = probe_timeout_s
        self.cpus = tuple(cpus)  # the plan thread's cores, where it is pinned
        self.cache_dir, self.log = Path(cache_dir), log
        self.requests: queue.Queue = queue.Queue()
        self._ready: Candidate | None = None
        self._probe: ShadowProbe | None = None
        self._in_slack = None  # (the slack thread's job, its StopHandle or None, when its slack ends, its kind)
        # This thread's CPU work beside the loop (loading, hashing, plans off the slack), so that the
        # loop can tell which missed deadlines had a swap's work running beside them (worked_since).
        self._working = {LOADING: 0, BACKGROUND_PLANS: 0}
        self._work_ended = {LOADING: -math.inf, BACKGROUND_PLANS: -math.inf}
        self.retired = RetiredModels()  # freed one at a time in the slack after a tick (offer_slack)
        self._last_fit = 0.0  # when the loop last gave a shadow plan room
        # Plans this thread runs beside a ticking loop start just after a tick has published: offer_slack
        # sets this (every `spacing` ticks) where its slack could not hold the plan (_step_beside_loop).
        self._after_tick = threading.Event()
        self._last_offer = -math.inf  # when the loop last offered slack: it ticks
        self._unfit_offers = 0  # offers too short for the plan since the event was last set
        # At most one shadow plan every `spacing` ticks (the check's CPU share on a busy machine); the
        # gap doubles after each plan that overran its slack, up to MAX_GAP, and is `spacing` again
        # after one that ended within it.
        self.spacing = self._gap = max(1, int(spacing))
        self._skip = 0  # slack offers to let pass before the next shadow plan
        self._lock = threading.Lock()
        self.rejected = 0  # model updates refused
        self.rung_failures = 0  # budget changes that did not pass (the loop stays at its rung)
        self.last_result = ""
        # CPU seconds this thread spent on its last request (loading, hashing, plans it ran itself):
        # what a swap or step down cost beside the loop, on /diagnostics. Shadow plans in the slack
        # run on the slack thread and are not in it.
        self.last_cpu_s = 0.0
        self.standby = StandbySlot()  # the next smaller rung, held for a step down (keep_standby)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hot-swap", daemon=True)
        self._thread.start()

    # -- called from the control loop -------------------------------------------------------------
    def request(self, what: Request):
        self.requests.put(what)

    def take_ready(self) -> Candidate | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def wants_slack(self) -> bool:
        """A candidate is waiting for shadow plans, or a retired model for freeing."""
        probe = self._probe
        return bool(self.retired) or (probe is not None and not probe.done.is_set())

    def offer_slack(self, obs, slack_s: float, submit) -> str:
        """After a live tick, the loop can spare about `slack_s` (until the next tick). `submit(fn,
        *args)` (on the loop's slack thread) one job that is expected to end within it: a
        candidate's shadow plan, else freeing one retired model (runtime/retired_models.py).
        Returns which (SHADOW_PLAN or FREE), or "" for none."""
        probe = self._probe  # one read: the background thread may replace it meanwhile
        live = self._live()
        now = self._last_offer = time.monotonic()
        if probe is not None and not probe.done.is_set():
            if probe.estimate(live) <= slack_s:
                self._last_fit = now  # the loop has room, whether or not this tick uses it
                if self._skip > 0:
                    self._skip -= 1
                    return ""
                stop = StopHandle()
                self._in_slack = (submit(probe.step, obs, False, stop), stop, now + slack_s, SHADOW_PLAN)
                self._skip = self._gap - 1
                return SHADOW_PLAN
            self._unfit_offers += 1  # no room for the plan here: the background thread may start one now
            if self._unfit_offers >= self.spacing:
                self._unfit_offers = 0
                self._after_tick.set()
        elif self.retired and slack_s >= max(live if np.isfinite(live) else 0.0, self.retired.estimate()):
            # A free cannot be stopped; it is only started where it fits.
            self._in_slack = (submit(self.retired.free_one), None, now + slack_s, FREE)
            return FREE
        return ""

    # -- the standby: the next smaller rung, loaded and warmed before a step down asks for it ----------
    def keep_standby(self, want: Request | None, warm: OnnxPlanner | None = None, warmed: str = ""):
        """After every install the loop says which standby it wants (Request.standby of the running
        version and budget; None for none). A held one that is not it is retired; `warm` (a rung the
        loop has planned with: measured at start-up, or left by a step up; `warmed` says which) becomes
        it at once; otherwise it is brought up on this thread once no other request waits. Cheap: a
        lock and a queue put. The loop takes it with `standby.take`."""
        leftovers, missing = self.standby.want(want, warm, warmed)
        for planner in leftovers:
            self.retire(planner)
        if missing:
            self.requests.put(want)

    def worked_since(self, t: float) -> list[str]:
        """The kinds of CPU work (LOADING, BACKGROUND_PLANS) this thread did for a swap at some point
        since monotonic time `t`, or is doing now; empty for none."""
        return [kind for kind in (LOADING, BACKGROUND_PLANS) if self._working[kind] > 0 or self._work_ended[kind] >= t]

    @contextlib.contextmanager
    def _work(self, kind: str):
        """Marks CPU work on this thread (only this thread changes the marks; the loop reads them)."""
        self._working[kind] += 1
        try:
            yield
        finally:
            self._work_ended[kind] = time.monotonic()
            self._working[kind] -= 1

    def reclaim_worker(self, latest=None) -> str:
        """Called by a tick before it plans: a shadow plan still running in the slack may go on until
        its slack ends (a lockstep sim answers at once; the tick's deadline holds both plans), but
        not past `latest()` (monotonic; an observation that came early must still leave its own plan
        room; asked only when a plan is running, off the tick's usual path; None: stop it now), and
        is stopped then, within one graph node's time, so that it does not run on beside the live
        plan. Returns the kind of the job that was still running (SHADOW_PLAN or FREE; a free cannot
        be stopped), else ""."""
        in_slack, self._in_slack = self._in_slack, None
        if in_slack is None:
            return ""
        job, stop, ends_by, kind = in_slack
        if not isinstance(job, futures.Future) or job.done():
            self._space_shadow_plans(kind, stopped=False)
            return ""
        if stop is None:  # a free: it cannot be stopped, and was only started where it fitted
            return kind
        until = -math.inf if latest is None else latest()
        wait = min(ends_by, until) - time.monotonic()
        if wait > 0:
            futures.wait([job], timeout=wait)
        self._space_shadow_plans(kind, stopped=not job.done())
        stop.stop()
        return kind

    def _space_shadow_plans(self, kind: str, stopped: bool):
        """A busy machine (a shadow plan stopped at the end of its slack) gets fewer shadow plans,
        one that ended within its slack the usual share."""
        if kind == SHADOW_PLAN:
            self._gap = min(2 * self._gap, self.MAX_GAP) if stopped else self.spacing
            self._skip = self._gap - 1  # counted from that plan's tick, which this one follows

    def abandon_step_up(self, why: str):
        """The loop overran while a larger rung was being checked: end that check now (it would
        fail, and its shadow plans need slack the loop no longer has)."""
        probe = self._probe
        if probe is not None and probe.step_up and not probe.done.is_set():
            probe.error = SwapRejected(why)
            probe.done.set()

    def retire(self, planner: OnnxPlanner):
        """A model the loop no longer keeps; freed later in the slack after a tick (offer_slack)."""
        self.retired.add(planner)

    def stop(self):
        self._stop.set()
        self.requests.put(None)
        self._thread.join(timeout=5)

    # -- the background thread --------------------------------------------------------------------
    def _live(self) -> float:
        return self.live_p50() if self.live_p50 is not None else float("nan")

    def _loop(self):
        lower_thread_priority(10)  # loading and hashing a candidate must not take CPU from the control loop
        # Beside a pinned plan thread, this one lives on the same cores: the checks it runs there
        # (when the loop's slack never holds a plan) warm the caches the candidate will plan from,
        # instead of another core's, and a real-time plan thread preempts it at once.
        problem = pin_thread(self.cpus)
        if problem:
            self.log("info", f"the hot-swap thread {problem}; it checks candidates on any core")
        while not self._stop.is_set():
            # Loads that gave way to another request (waiting for room) come first, in their order.
            burst, self._deferred = self._deferred, []
            if not burst:
                burst.append(self.requests.get())
            while not self.requests.empty():
                burst.append(self.requests.get())
            if None in burst:
                return
            # Only the newest update of a burst matters; a rung request is kept beside it, first. A
            # standby comes last: a request the loop waits for goes before it.
            rungs, updates = [w for w in burst if w.rung], [w for w in burst if not w.rung and not w.below]
            for what in rungs[-1:]:
                self._handle(what)
            deferred = [what for what in updates[-1:] if not self._handle(what)]
            # Not after a step down of the same version: the loop wants the standby below its new rung.
            stepped = {(w.version, w.path) for w in rungs[-1:] if not w.up}
            for want in [w for w in burst if w.below and (w.version, w.path) not in stepped][-1:]:
                if deferred or not self._prepare_standby(want):
                    deferred.append(want)
            self._deferred = deferred
            if not deferred:
                self.gate.nothing_waits()

    def _await_room(self, gone=lambda: False) -> bool:
        """The room gate, before a load that can wait. False: a request the loop waits for came
        meanwhile, or `gone()` (the load is no longer wanted); the caller hands it back to the loop,
        which takes the newer requests first and then asks again (the gate's clock runs on)."""
        return self.gate.open(lambda: self._request_waiting() or gone() or self._stop.wait(RoomGate.POLL_S))

    def _moot(self, what: Request) -> str | None:
        """Why a budget change is moot, or None. It is a change of one version's budget: moot once
        another version runs (installed meanwhile; the loop would retire the rung anyway) or waits,
        checked, for the next tick (it must not supersede that update, which would then be lost).
        Either way the new version is judged on its own plans."""
        if not what.rung:
            return None
        pending = self._ready
        if pending is not None and not pending.rung_change and pending.version != what.version:
            return f"{pending.version} replaces {what.version} at the next tick"
        running = self.running_version() if self.running_version is not None else None
        if running is not None and running != what.version:
            return f"{running} has replaced {what.version}"
        return None

    def _drop_moot_rung(self, what: Request, why: str):
        self.rung_failures += 1  # the loop's request ends without a candidate
        self.last_result = f"dropped {what.describe()}: {why}"
        self.log("info", self.last_result)

    def _handle(self, what: Request) -> bool:
        """Check one request and offer its candidate to the loop, or log why not. False: a load that
        can wait gave way to another request (the room gate); the caller asks again after it."""
        rung, label = bool(what.rung), what.describe()
        why = self._moot(what)
        if why is not None:  # before any warm-up plan takes CPU from the loop
            self._drop_moot_rung(what, why)
            return True
        if not rung and not self._await_room():
            return False
        cpu0 = time.thread_time()
        try:
            cand = self._prepare(what)
            for _ in range(self.RECHECKS):
                if rung or self._budget_held(cand):
                    break
                if not self._await_room():  # the loop just stepped: a rung of its own may be on the way
                    return False
                cand = self._prepare(what)
            self.last_cpu_s = time.thread_time() - cpu0
            if cand.below:
                checks = f"from the standby (loaded and warmed earlier over {cand.shadow_plans} plans"
            else:
                checks = (f"passed checks (p50 {_ms(cand.p50_s)}, p99 {_ms(cand.p99_s)} over {cand.shadow_plans} "
                          f"{'warm-up' if rung and not what.up else 'shadow'} plans, {cand.stopped} more stopped at "
                          f"the end of their slack, counted as over it")
            self.last_result = (f"{label} {checks}; {_ms(self.last_cpu_s)} of the hot-swap thread's CPU); swapping at "
                                f"the next tick")
            # Logged before the candidate is offered: this low-priority thread must not hold the GIL
            # (formatting, logging) while the swap tick's plan waits for it, as it would if it were
            # preempted in there. Once offered, it only goes back to waiting for the next request.
            # Only this thread makes a candidate ready, so the check cannot be overtaken before the offer.
            why = self._moot(what)
            if why is not None:  # an update came ready (or went in) while this rung warmed up
                self.retire(cand.planner)
                self._drop_moot_rung(what, why)
                return True
            self.log("info", self.last_result)
            with self._lock:
                superseded, self._ready = self._ready, cand
            if superseded is not None:  # never taken by the loop: freed like any old model
                self.retire(superseded.planner)
        except Exception as e:  # noqa: BLE001 - any failure must leave the running model alone
            self.rung_failures += rung
            self.rejected += not rung
            why = str(e) if isinstance(e, SwapRejected) else f"failed unexpectedly: {type(e).__name__}: {e}"
            self.last_cpu_s = time.thread_time() - cpu0
            self.last_result = f"rejected {label}: {why} ({_ms(self.last_cpu_s)} of the hot-swap thread's CPU)"
            if what.up:  # it did not fit now; the loop may try again later
                self.log("info", self.last_result + "; staying at the running budget")
            else:
                self.log("error", self.last_result + "; the running model keeps acting")
        finally:
            self._probe = None
        return True

    def _budget_held(self, cand: Candidate) -> bool:
        """A new version is checked at the budget the loop ran when the check began. True if it still
        runs it; if the loop stepped meanwhile (its plans overran beside a busy CPU), the candidate
        is retired and False returned, to be checked again at the loop's budget now: installed as it
        is, it would bring back the budget that just overran (seen on the busy 2-core AMD machine:
        the tick after such a swap missed its deadline). A version without a rung at the new budget
        (a bare .onnx file, another ladder) is then refused, naming the budgets it has."""
        checked, running = cand.planner.contract.budget.label(), self.current()[0].contract.budget.label()
        if checked == running:
            return True
        self.log("info", f"model update {cand.version} was checked at {checked}; the loop stepped to {running} "
                         f"meanwhile: checking it again at {running}")
        self.retire(cand.planner)
        return False

    def _prepare(self, what: Request) -> Candidate:
        source = what.path
        if what.announcement is not None:
            try:
                with self._work(LOADING):
                    source = str(materialise(what.announcement, self.cache_dir))
            except (StoreError, OSError, ValueError) as e:
                raise SwapRejected(str(e)) from e
            if Path(source).parent == self.cache_dir:
                self._prune_cache(source)
        version = what.version
        if what.rung and not what.up:  # a step down the loop could not take from the standby itself
            held = self.standby.take(version, source, label=what.rung)  # (it was still being brought up)
            if held is not None:
                return held
        running, obs = self.current()
        with self._work(LOADING):
            planner = load_matching(source, running, self.threads, self.seed, budget_label=what.rung or None)
        try:
            if what.up:
                return self._check(planner, version, source, expected_s=what.expected_s, step_up=True)
            if what.rung:
                return self._warm_rung(planner, version, source, obs)
            return self._check(planner, version, source)
        except SwapRejected:
            self.retire(planner)  # its session is freed in a tick's slack, like any old model's
            raise

    def _prune_cache(self, new: str):
        ready = self._ready  # checked, waiting for the loop to take it
        in_use = {new, *(self.in_use() if self.in_use is not None else ()), *([ready.source] if ready else [])}
        try:
            removed = prune_cache(self.cache_dir, self.cache_keep, in_use)
        except OSError as e:  # a cache that cannot be pruned is no reason to refuse the model
            self.log("error", f"could not prune the model cache {self.cache_dir}: {e}")
            return
        if removed:
            self.log("info", f"model cache {self.cache_dir}: removed {', '.join(p.name for p in removed)} (keeping "
                             f"the {self.cache_keep} newest and those the planner runs or may roll back to)")

    def _check(self, planner: OnnxPlanner, version: str, source: str, expected_s: float | None = None,
               step_up: bool = False) -> Candidate:
        probe = self._shadow_plans(planner, expected_s, step_up)
        lat = probe.timed()
        p50, p99 = quantile(lat, 0.5), quantile(lat, 0.99)
        if step_up:  # the rule the start-up choice applies: its p99 must fit
            if p99 > self.limit_s:
                raise SwapRejected(f"p99 {_ms(p99)} (p50 {_ms(p50)}) over {len(lat)} shadow plans ({probe.stopped} "
                                   f"stopped at the end of their slack) exceeds the {self.limit_s * 1e3:.2f} ms limit")
            return checked_candidate(planner, probe, version, source, rung_change=True, step_up=True)
        # On a busy CPU the candidate and the running model are slowed alike, so the running model's
        # own plans over the same window are the fair yardstick: the candidate may not be more than
        # 25% slower than them.
        live = self._live()
        if p50 > self.limit_s and not (np.isfinite(live) and p50 <= 1.25 * live):
            raise SwapRejected(f"median latency {_ms(p50)} (p99 {_ms(p99)}; {probe.stopped} of {len(lat)} shadow plans "
                               f"stopped at the end of their slack) exceeds the {self.limit_s * 1e3:.2f} ms limit for "
                               f"{planner.contract.budget.label()} and the running model's {live * 1e3:.2f} ms over the "
                               f"same window by more than 25%")
        return checked_candidate(planner, probe, version, source)

    def _warm_rung(self, planner: OnnxPlanner, version: str, source: str, obs) -> Candidate:
        """RUNG_WARM_PLANS plans on this low-priority thread, each checked for finite outputs; no
        latency bar (the loop's governor judges the new rung on its live plans, and steps on if needed)."""
        probe = warm_up(planner, obs, self.RUNG_WARM_PLANS, stopping=self._stop.is_set,
                        each=lambda: self._work(BACKGROUND_PLANS))
        return checked_candidate(planner, probe, version, source, rung_change=True)

    def _prepare_standby(self, want: Request) -> bool:
        """Load the next smaller rung below `want.below` and warm it with RUNG_WARM_PLANS shadow plans
        (in the slack: the loop is well, or it would have stepped down), then hold it for the loop.
        Not the standby any more by then (the loop installed something else): retired instead. A
        failure is no fault: a step down then loads its rung as before. False: it waits for room
        behind another request (the room gate), and is asked for again after it."""
        if not self.standby.needs(want):
            return True  # superseded by a later wish, or already held
        if self._moot(want) is not None:
            return True  # another version runs or is about to: the loop asks for its standby once installed
        smaller = next_smaller_rung(want.path, want.below)
        if smaller is None:
            self.standby.result = f"no standby: {want.path} has no rung smaller than {want.below}"
            return True
        if not self._await_room(gone=lambda: not self.standby.still_wanted(want)):
            return False
        cpu0, label = time.thread_time(), smaller.budget.label()
        try:
            running, _ = self.current()
            with self._work(LOADING):
                planner = load_matching(want.path, running, self.threads, self.seed, budget_label=label)
            try:
                probe = self._warm_standby(planner, want)
            except SwapRejected:
                self.retire(planner)
                raise
            if probe is None:  # the loop moved on meanwhile (installed another model or rung)
                self.retire(planner)
                return True
        except Exception as e:  # noqa: BLE001 - a missing standby only makes the next step down slower
            why = str(e) if isinstance(e, SwapRejected) else f"{type(e).__name__}: {e}"
            self.standby.failed(f"no standby {label} of {want.version}: {why}; a step down will load it then",
                                time.thread_time() - cpu0)
            self.log("info", self.standby.result)
            return True
        finally:
            self._probe = None
        cand = checked_candidate(planner, probe, want.version, want.path, rung_change=True)
        cand.below = want.below
        self.standby.cpu_s = time.thread_time() - cpu0
        ready = (f"standby {label} of {want.version} ready ({cand.shadow_plans} warm-up plans; "
                 f"{_ms(self.standby.cpu_s)} of the hot-swap thread's CPU)")
        if not self.standby.hold(want, cand, ready):  # the loop moved on meanwhile
            self.retire(planner)
            return True
        self.log("info", ready)
        return True

    def _request_waiting(self) -> bool:
        """A request other than a standby (or the stop) is queued; peeked at, not taken."""
        with self.requests.mutex:
            return any(w is None or not w.below for w in self.requests.queue)

    def _warm_standby(self, planner: OnnxPlanner, want: Request) -> ShadowProbe | None:
        """The standby's RUNG_WARM_PLANS plans (zeros, then the latest observation; finite outputs), as
        shadow plans in the slack after ticks. Unlike a candidate's check it is in no hurry: it runs
        them here, beside the loop, only once another request waits, so as not to hold it up (for a
        step down that will take this standby, they are the plans it would run anyway, minus the load),
        or after STANDBY_IDLE_S with no slack that fits (a loop that overruns steps down well before
        that, and then wants another standby). None once the loop wants another standby."""
        probe = ShadowProbe(planner, warmup=1, runs=self.RUNG_WARM_PLANS - 1)
        self._last_fit = time.monotonic()
        self._probe = probe
        while not probe.done.wait(0.05):
            if self._stop.is_set():
                raise SwapRejected("planner is shutting down")
            if not self.standby.still_wanted(want):
                return None
            if self._request_waiting() or time.monotonic() - self._last_fit > self.STANDBY_IDLE_S:
                self._step_beside_loop(probe)
        if probe.error is not None:
            raise probe.error
        return probe

    def _shadow_plans(self, planner: OnnxPlanner, expected_s: float | None = None, step_up: bool = False) -> ShadowProbe:
        """Hand the candidate to the control loop's slack (offer_slack) and wait for its checks.
        Where the loop gives no room for a whole plan for IDLE_S (it is not planning, or its plans
        take most of the period: the slack after a tick can never hold another), the plans run
        here instead, on this low-priority thread beside the loop, and are timed in this thread's
        CPU time: it yields the CPU to the loop, and waiting for a core is not the candidate's cost."""
        probe = ShadowProbe(planner, self.warmup, self.runs, expected_s, step_up)
        self._last_fit = time.monotonic()  # give a ticking loop IDLE_S to take it up
        self._probe = probe
        deadline = time.monotonic() + self.probe_timeout_s
        while not probe.done.wait(0.05):
            if self._stop.is_set():
                raise SwapRejected("planner is shutting down")
            if time.monotonic() > deadline:
                live = self._live()
                raise SwapRejected(f"no room to check the candidate within {self.probe_timeout_s:g} s: "
                                   f"{len(probe.latencies)} of {self.runs} timed plans fitted in the slack between ticks, "
                                   f"{probe.stopped} were stopped at its end "
                                   f"(the running model plans in {live * 1e3:.2f} ms)")
            if time.monotonic() - self._last_fit > self.IDLE_S:
                self._step_beside_loop(probe)
        if probe.error is not None:
            raise probe.error
        return probe

    def _step_beside_loop(self, probe: ShadowProbe):
        """One of a probe's plans on this thread, beside the loop, timed in this thread's CPU time.
        Beside a loop that ticks (it offered slack within IDLE_S) the plan waits for the next tick to
        publish (offer_slack), so that it overlaps the next live plan only by what the slack could not
        hold. Started at any moment instead, with a rung near its limit and a core half busy elsewhere
        on the 2-core AMD machine, 20% of the ticks next to such plans ran over the limit, against 3%
        of the others (session 23). A loop that does not tick gets the plan at once."""
        if time.monotonic() - self._last_offer < self.IDLE_S:
            self._after_tick.clear()  # a tick that published before now is no start signal: its slack is spent
            if not self._after_tick.wait(self.IDLE_S):
                return  # the loop stopped ticking: the next call plans at once
        with self._work(BACKGROUND_PLANS):
            probe.step(self.current()[1], cpu_time=True)
