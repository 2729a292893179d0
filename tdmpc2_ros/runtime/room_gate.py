"""The room gate: a load beside the control loop that can wait (a new model version, a standby)
waits until the loop has room for it. Pure Python; the hot-swap thread asks it before each such load.

Room is the loop's answer (the planner's `_room_to_load`): it has planned for a while with every
plan well within its limit (ladder.RungGovernor.roomy), or is not planning. A load takes CPU from
the loop whatever its thread's priority (a loading thread at nice +10 delayed the loop's plans by
up to 6.2 ms at p99 on the 2-core AMD machine), and the misses left next to swap work in session
18's busy runs came while a new version loaded beside a rung that had just overrun.

A load waits at most `wait_s` from its first try, then goes anyway (counted in loads_without_room).
Meanwhile it gives way to work the loop waits for (a budget step, a newer version): the caller's
`give_way` says when, and asks again after that work, with the clock still running. A budget step
is never gated: the loop waits for it.
"""

from __future__ import annotations

import time


class RoomGate:
    POLL_S = 0.02  # how often a load waiting for room asks again (the caller's give_way sleeps it)

    def __init__(self, room=None, wait_s: float = 0.0, log=None, clock=time.monotonic):
        self.clock = clock
        self.room = room  # callable -> True while the loop has room for a load beside it; None: no gate
        self.wait_s = float(wait_s)  # 0: no gate
        self.log = log  # log(level, text), or None
        self._since: float | None = None  # when the load now waiting for room first asked
        self.loads_waited = 0  # loads that found no room and waited for it
        self.loads_without_room = 0  # of those, loaded after wait_s without it
        self.last_wait_s = 0.0

    def open(self, give_way) -> bool:
        """Before a load that can wait. True: load now (room, no gate, or wait_s spent since this load
        first asked). False: `give_way()` (polled every POLL_S, and expected to sleep that long) said
        the load must give way; the caller asks again later, and the wait goes on from where it was."""
        if self.room is None or self.wait_s <= 0:
            return True
        if self._since is None:
            if self.room():
                self.last_wait_s = 0.0
                return True
            self._since = self.clock()
            self.loads_waited += 1
        while True:
            waited = self.clock() - self._since
            roomy = self.room()
            if roomy or waited >= self.wait_s:
                self._since, self.last_wait_s = None, waited
                if not roomy:
                    self.loads_without_room += 1
                    if self.log is not None:
                        self.log("info", f"the loop had no room for a load for {waited:.1f} s (plans near the limit): "
                                         f"loading beside it anyway")
                return True
            if give_way():
                return False

    def nothing_waits(self):
        """No load waits for room any more (it was dropped): the next one starts its own wait."""
        self._since = None
