"""The room gate (runtime/room_gate.py): when a load that can wait goes ahead beside the loop, on a
fake clock that the caller's give_way advances as the hot-swap thread's sleep would."""

from __future__ import annotations

from tdmpc2_ros.runtime.room_gate import RoomGate


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def gate_with(answers, wait_s=1.0):
    """A gate whose loop answers `answers` in turn (then the last one for ever), and what it logged."""
    clock, said, logged = Clock(), list(answers), []

    def room():
        return said.pop(0) if len(said) > 1 else said[0]

    return RoomGate(room, wait_s, lambda level, text: logged.append((level, text)), clock), clock, logged


def sleeping(clock, give_way_after=None):
    """give_way as the hot-swap thread's: sleeps POLL_S, and says give way once `give_way_after` polls are done."""
    polls = [0]

    def give_way():
        polls[0] += 1
        clock.t += RoomGate.POLL_S
        return give_way_after is not None and polls[0] >= give_way_after

    return give_way, polls


def test_no_gate_loads_at_once_whatever_the_loop_says():
    for gate in (RoomGate(None, 10.0), RoomGate(lambda: False, 0.0)):
        assert gate.open(lambda: (_ for _ in ()).throw(AssertionError("never polled")))
        assert (gate.loads_waited, gate.loads_without_room) == (0, 0)


def test_room_at_the_first_ask_loads_without_waiting():
    gate, clock, logged = gate_with([True])
    give_way, polls = sleeping(clock)
    assert gate.open(give_way) and polls == [0]
    assert (gate.loads_waited, gate.loads_without_room, gate.last_wait_s, logged) == (0, 0, 0.0, [])


def test_a_load_waits_until_the_loop_shows_room():
    gate, clock, logged = gate_with([False, False, False, False, True])
    give_way, polls = sleeping(clock)
    assert gate.open(give_way)
    assert polls == [3] and gate.loads_waited == 1 and gate.loads_without_room == 0 and logged == []
    assert abs(gate.last_wait_s - 3 * RoomGate.POLL_S) < 1e-9


def test_a_load_with_no_room_goes_after_wait_s_counted_and_logged():
    gate, clock, logged = gate_with([False], wait_s=0.5)
    give_way, polls = sleeping(clock)
    assert gate.open(give_way)
    assert gate.loads_waited == 1 and gate.loads_without_room == 1 and 0.5 <= gate.last_wait_s < 0.5 + RoomGate.POLL_S
    assert len(logged) == 1 and logged[0][0] == "info" and "no room for a load for 0.5 s" in logged[0][1]


def test_a_load_that_gives_way_keeps_its_clock_and_is_counted_once():
    gate, clock, _ = gate_with([False], wait_s=0.5)
    give_way, _ = sleeping(clock, give_way_after=5)
    assert not gate.open(give_way)  # a request the loop waits for came: hand the load back
    clock.t += 0.3  # that request took its time; the load's wait runs on meanwhile
    give_way, polls = sleeping(clock)
    assert gate.open(give_way) and gate.loads_without_room == 1 and gate.loads_waited == 1
    assert polls[0] < 10  # 0.5 s from its first ask, not from this one (which would be 25 polls)
    # Dropped while waiting: the next load starts a wait of its own.
    gate2, clock2, _ = gate_with([False], wait_s=0.5)
    assert not gate2.open(sleeping(clock2, give_way_after=1)[0])
    gate2.nothing_waits()
    clock2.t += 10.0
    give_way, polls = sleeping(clock2)
    assert gate2.open(give_way) and gate2.loads_waited == 2 and polls[0] >= 24
