"""SpawnGate: bounded booting, one spawn per reactor turn, dialogs first."""

from __future__ import annotations

from twisted.internet.task import Clock

from libchat.runtimes.spawning import SpawnGate


def gate(limit: int = 2, hold: float = 1.0) -> tuple[SpawnGate, Clock, list[str]]:
    clock = Clock()
    return SpawnGate(clock, limit, hold), clock, []


def test_spawns_at_once_while_a_slot_is_free() -> None:
    g, _, spawned = gate(limit=2)
    g.request("a", lambda: spawned.append("a"))
    g.request("b", lambda: spawned.append("b"))
    assert spawned == ["a", "b"]
    assert g.booting() == 2


def test_waits_for_a_released_slot_then_spawns_one_per_turn() -> None:
    g, clock, spawned = gate(limit=1)
    for key in "abc":
        g.request(key, lambda key=key: spawned.append(key))
    assert spawned == ["a"]
    assert g.queued() == 2
    g.release("a")
    assert spawned == ["a"]  # not inside release(): on the next reactor turn
    clock.advance(0)
    assert spawned == ["a", "b"]
    clock.advance(0)
    assert spawned == ["a", "b"]  # b still boots
    g.release("b")
    clock.advance(0)
    assert spawned == ["a", "b", "c"]


def test_dialogs_go_before_prestarts() -> None:
    g, clock, spawned = gate(limit=1)
    g.request("busy", lambda: spawned.append("busy"))
    g.request("warm", lambda: spawned.append("warm"), urgent=False)
    g.request("dialog", lambda: spawned.append("dialog"))
    g.release("busy")
    clock.advance(0)
    assert spawned == ["busy", "dialog"]


def test_a_program_that_never_connects_holds_its_slot_only_for_the_hold_time() -> None:
    g, clock, spawned = gate(limit=1, hold=1.0)
    g.request("stuck", lambda: spawned.append("stuck"))
    g.request("next", lambda: spawned.append("next"))
    clock.advance(0.9)
    assert spawned == ["stuck"]
    clock.advance(0.1)
    clock.advance(0)
    assert spawned == ["stuck", "next"]


def test_a_cancelled_request_is_never_spawned() -> None:
    g, clock, spawned = gate(limit=1)
    g.request("a", lambda: spawned.append("a"))
    g.request("gone", lambda: spawned.append("gone"))
    g.release("gone")
    g.release("a")
    clock.advance(0)
    assert spawned == ["a"]
    assert g.queued() == 0


def test_limit_zero_is_unbounded() -> None:
    g, _, spawned = gate(limit=0)
    for key in range(50):
        g.request(key, lambda key=key: spawned.append(key))
    assert spawned == list(range(50))


def test_close_cancels_every_timer() -> None:
    g, clock, spawned = gate(limit=1)
    g.request("a", lambda: spawned.append("a"))
    g.request("b", lambda: spawned.append("b"))
    g.close()
    assert clock.getDelayedCalls() == []
    clock.advance(5)
    assert spawned == ["a"]
