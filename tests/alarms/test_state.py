"""The ISA-18.2 alarm state machine: every transition, shelving, suppression, service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarms.state import (
    ACKED,
    NORMAL,
    OUT_OF_SERVICE,
    RTN_UNACK,
    SHELVED,
    SUPPRESSED,
    UNACK,
    AlarmState,
    AuditRecord,
    RuleInfo,
    annunciates,
)
from model.errors import AlarmActionError
from model.records import AlarmEvent

T0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def machine() -> AlarmState:
    return AlarmState(RuleInfo("r1", "source S1 co2_rate_t_h", "threshold", "U1", "High rate"))


def cond(a: AlarmState, level: int, minute: float = 0.0, value: float = 0.0) -> AlarmEvent:
    return a.condition(level, value, 180.0, at(minute), f"level {level}", f"级别 {level}")


def moves(events: list[AlarmEvent]) -> list[tuple[str, str, str]]:
    return [(e.cause, e.previous_ack_state, e.ack_state) for e in events]


def test_normal_unack_ack_normal() -> None:
    a = machine()
    assert (a.state, a.ack_state) == ("normal", NORMAL)
    up = cond(a, 2, 0, 196.96)
    assert (up.previous, up.state, up.previous_ack_state, up.ack_state) == (
        "normal", "alarm", NORMAL, UNACK)
    assert (up.value, up.limit, up.cause, up.kind, up.area) == (
        196.96, 180.0, "condition", "threshold", "U1")
    assert up.message == "level 2 [rule r1: High rate]"
    assert up.message_zh == "级别 2［规则 r1：High rate］"
    audit, ack = a.acknowledge("alice", "seen, checking analyser", at(1))
    assert audit == AuditRecord(at(1), "alice", "acknowledge", "r1", "seen, checking analyser")
    assert (ack.cause, ack.previous_ack_state, ack.ack_state) == ("acknowledge", UNACK, ACKED)
    # The condition is unchanged by an acknowledgement; the event carries who and why.
    assert (ack.previous, ack.state, ack.value, ack.limit) == ("alarm", "alarm", 196.96, 180.0)
    assert (ack.user, ack.comment) == ("alice", "seen, checking analyser")
    assert ack.message == "acknowledged by alice: seen, checking analyser [rule r1: High rate]"
    down = cond(a, 0, 2)
    assert (down.previous, down.state, down.ack_state) == ("alarm", "normal", NORMAL)
    assert a.last_event is down


def test_unack_returns_then_ack_to_normal() -> None:
    a = machine()
    cond(a, 1)
    back = cond(a, 0, 1)
    assert (back.previous_ack_state, back.ack_state) == (UNACK, RTN_UNACK)
    _, ack = a.acknowledge("bob", "transient", at(2))
    assert (ack.previous_ack_state, ack.ack_state, ack.state) == (RTN_UNACK, NORMAL, "normal")


def test_realarm_from_returned_unack() -> None:
    a = machine()
    cond(a, 2)
    cond(a, 0, 1)
    again = cond(a, 1, 2)
    assert (again.previous_ack_state, again.ack_state, again.state) == (
        RTN_UNACK, UNACK, "warning")


def test_rise_needs_new_ack_fall_keeps_it() -> None:
    a = machine()
    cond(a, 1)
    a.acknowledge("alice", "ok", at(1))
    worse = cond(a, 2, 2)
    assert (worse.previous, worse.state, worse.ack_state) == ("warning", "alarm", UNACK)
    a.acknowledge("alice", "ok", at(3))
    better = cond(a, 1, 4)
    assert (better.previous, better.state, better.ack_state) == ("alarm", "warning", ACKED)
    # Unacknowledged alarm falling to warning stays unacknowledged.
    b = machine()
    cond(b, 2)
    assert cond(b, 1, 1).ack_state == UNACK


def test_ack_and_shelve_need_user_and_comment() -> None:
    a = machine()
    cond(a, 2)
    with pytest.raises(AlarmActionError, match=r"^acknowledge alarm rule 'r1': needs a user$"):
        a.acknowledge("", "looked at it", at(1))
    with pytest.raises(AlarmActionError, match=r"needs a comment$"):
        a.acknowledge("alice", "   ", at(1))
    with pytest.raises(AlarmActionError, match=r"needs a user and a comment$"):
        a.acknowledge(" ", "", at(1))
    for bad in (("", "c"), ("u", "")):
        with pytest.raises(AlarmActionError, match=r"^shelve alarm rule 'r1': needs a"):
            a.shelve(*bad, at(60), at(1))
    a.shelve("u", "c", at(60), at(1))
    with pytest.raises(AlarmActionError, match=r"^unshelve alarm rule 'r1': needs a comment"):
        a.unshelve("u", "", at(2))
    with pytest.raises(AlarmActionError, match="remove from service alarm rule 'r1': needs a"):
        a.remove_from_service("", "x", at(2))
    # Nothing changed by the rejected actions.
    assert (a.acked, a.shelved_until, a.out_of_service) == (False, at(60), False)
    # Names are stored stripped.
    audit, _ = a.acknowledge("  alice ", " ok  ", at(3))
    assert (audit.user, audit.comment) == ("alice", "ok")


def test_nothing_to_acknowledge() -> None:
    a = machine()
    with pytest.raises(AlarmActionError, match=r"has nothing to acknowledge \(state normal\)"):
        a.acknowledge("alice", "x", at(0))
    cond(a, 1)
    a.acknowledge("alice", "x", at(1))
    with pytest.raises(AlarmActionError,
                       match=r"nothing to acknowledge \(state active-acknowledged\)"):
        a.acknowledge("bob", "x", at(2))


def test_times_must_be_aware() -> None:
    a = machine()
    with pytest.raises(ValueError, match="timezone-aware"):
        a.condition(1, 1.0, 1.0, datetime(2024, 5, 1), "", "")
    cond(a, 1)
    with pytest.raises(ValueError, match="acknowledge time must be a timezone-aware"):
        a.acknowledge("u", "c", datetime(2024, 5, 1))


def test_shelve_and_expiry() -> None:
    a = machine()
    cond(a, 2, 0)
    audit, ev = a.shelve("carol", "analyser drift, tech on the way", at(30), at(1))
    assert audit == AuditRecord(at(1), "carol", "shelve", "r1",
                                "analyser drift, tech on the way", at(30))
    assert (ev.cause, ev.previous_ack_state, ev.ack_state, ev.shelved_until) == (
        "shelve", UNACK, SHELVED, at(30))
    assert ev.message.startswith("shelved by carol until 2024-05-01 00:30 UTC: analyser drift")
    assert not annunciates(ev)
    # Condition changes while shelved are journaled, not announced.
    low = cond(a, 1, 5)
    assert (low.ack_state, annunciates(low)) == (SHELVED, False)
    assert a.expire(at(29.9)) is None
    done = a.expire(at(30))
    assert done is not None
    assert (done.cause, done.previous_ack_state, done.ack_state, done.user) == (
        "shelve_expired", SHELVED, UNACK, "")
    assert done.shelved_until is None
    # Still active and unacknowledged: announced again when the shelf ends.
    assert annunciates(done)
    assert a.expire(at(31)) is None


def test_rose_and_cleared_while_shelved_leaves_nothing() -> None:
    a = machine()
    a.shelve("carol", "commissioning", at(60), at(0))
    up = cond(a, 2, 1)
    assert (up.ack_state, a.acked) == (SHELVED, False)
    cond(a, 0, 2)
    _, ev = a.unshelve("carol", "done", at(3))
    assert (ev.cause, ev.ack_state) == ("unshelve", NORMAL)
    assert not annunciates(ev)


def test_rose_while_shelved_is_unacknowledged_after() -> None:
    a = machine()
    cond(a, 1, 0)
    a.acknowledge("alice", "ok", at(0))
    a.shelve("alice", "noisy", at(60), at(1))
    cond(a, 2, 2)  # worse while shelved
    _, ev = a.unshelve("alice", "back", at(3))
    assert (ev.ack_state, annunciates(ev)) == (UNACK, True)


def test_acknowledged_alarm_unshelved_stays_acknowledged() -> None:
    a = machine()
    cond(a, 2)
    a.acknowledge("alice", "ok", at(0))
    a.shelve("alice", "known", at(10), at(1))
    ev = a.expire(at(10))
    assert ev is not None and ev.ack_state == ACKED and not annunciates(ev)


def test_shelve_limits() -> None:
    a = machine()
    with pytest.raises(AlarmActionError, match="is not after"):
        a.shelve("u", "c", at(0), at(0))
    with pytest.raises(AlarmActionError, match=r"at most 1 day, 0:00:00 ahead, not 1 day, 0:01"):
        a.shelve("u", "c", at(24 * 60 + 1), at(0))
    with pytest.raises(AlarmActionError, match="is not shelved"):
        a.unshelve("u", "c", at(0))
    # Shelving again moves the expiry.
    a.shelve("u", "c", at(10), at(0))
    _, ev = a.shelve("u", "longer", at(20), at(5))
    assert (ev.previous_ack_state, ev.ack_state, a.shelved_until) == (SHELVED, SHELVED, at(20))


def test_suppression_while_stopped() -> None:
    a = machine()
    assert a.suppress(False, at(0)) is None
    on = a.suppress(True, at(0))
    assert on is not None
    assert (on.cause, on.previous_ack_state, on.ack_state) == ("suppress", NORMAL, SUPPRESSED)
    assert on.message == "suppressed: unit U1 stopped (F) [rule r1: High rate]"
    assert a.suppress(True, at(1)) is None
    # The unit trips, the value drops: journaled while suppressed, not announced.
    trip = cond(a, 2, 1)
    assert (trip.ack_state, annunciates(trip)) == (SUPPRESSED, False)
    cond(a, 0, 2)
    off = a.suppress(False, at(3))
    assert off is not None
    assert (off.cause, off.ack_state, annunciates(off)) == ("unsuppress", NORMAL, False)
    # Active at restart: unacknowledged and announced.
    a.suppress(True, at(4))
    cond(a, 1, 5)
    off = a.suppress(False, at(6))
    assert off is not None and (off.ack_state, annunciates(off)) == (UNACK, True)


def test_suppressed_and_shelved_modes_order() -> None:
    a = machine()
    a.suppress(True, at(0))
    _, ev = a.shelve("u", "c", at(10), at(1))
    assert (ev.previous_ack_state, ev.ack_state) == (SUPPRESSED, SHELVED)
    ev2 = a.expire(at(10))
    assert ev2 is not None and ev2.ack_state == SUPPRESSED


def test_out_of_service() -> None:
    a = machine()
    cond(a, 2)
    audit, ev = a.remove_from_service("eng", "CEMS maintenance", at(1))
    assert audit.action == "out_of_service"
    assert (ev.cause, ev.previous_ack_state, ev.ack_state) == ("out_of_service", UNACK,
                                                               OUT_OF_SERVICE)
    with pytest.raises(AlarmActionError, match="is out of service"):
        cond(a, 0, 2)
    with pytest.raises(AlarmActionError, match="out of service: nothing to acknowledge"):
        a.acknowledge("op", "x", at(2))
    with pytest.raises(AlarmActionError, match="out of service: it cannot be shelved"):
        a.shelve("op", "x", at(20), at(2))
    with pytest.raises(AlarmActionError, match="already out of service"):
        a.remove_from_service("eng", "x", at(2))
    audit, back = a.return_to_service("eng", "calibrated", at(3))
    assert audit == AuditRecord(at(3), "eng", "return_to_service", "r1", "calibrated")
    assert (back.previous, back.state, back.ack_state) == ("alarm", "normal", NORMAL)
    with pytest.raises(AlarmActionError, match="is not out of service"):
        a.return_to_service("eng", "x", at(4))


def test_condition_must_change() -> None:
    a = machine()
    with pytest.raises(ValueError, match="no change"):
        cond(a, 0)
    with pytest.raises(ValueError, match="no change"):
        cond(a, 3)


def test_annunciates() -> None:
    a = machine()
    up = cond(a, 2)
    assert annunciates(up)  # new alarm
    _, ack = a.acknowledge("u", "c", at(1))
    assert not annunciates(ack)
    assert annunciates(cond(a, 0, 2))  # the return to normal is announced too


# --- restore from the last journaled event ----------------------------------------------

def _shelve(a: AlarmState, minute: float) -> None:
    a.shelve("op", "check", at(30), at(minute))


RESTORE_CASES = {
    # name: (what happened, (level, ack_state, base_state, shelved_until, suppressed))
    "active unacknowledged": (lambda a: cond(a, 2, 1), (2, UNACK, UNACK, None, False)),
    "returned unacknowledged": (lambda a: (cond(a, 2, 1), cond(a, 0, 2)),
                                (0, RTN_UNACK, RTN_UNACK, None, False)),
    "acknowledged then shelved": (
        lambda a: (cond(a, 2, 1), a.acknowledge("op", "seen", at(2)), _shelve(a, 3)),
        (2, SHELVED, ACKED, at(30), False)),
    "rose while shelved": (lambda a: (_shelve(a, 1), cond(a, 2, 2)),
                           (2, SHELVED, UNACK, at(30), False)),
    "acknowledged while shelved": (
        lambda a: (cond(a, 2, 1), _shelve(a, 2), a.acknowledge("op", "seen", at(3))),
        (2, SHELVED, ACKED, at(30), False)),
    "suppressed": (lambda a: (cond(a, 2, 1), a.suppress(True, at(2))),
                   (2, SUPPRESSED, UNACK, None, True)),
    "suppressed under a shelf": (
        lambda a: (cond(a, 1, 1), a.acknowledge("op", "seen", at(2)), _shelve(a, 3),
                   a.suppress(True, at(4))),
        # The base state is not in the event: unacknowledged, as the condition is active.
        (1, SHELVED, UNACK, at(30), True)),
    "out of service while suppressed": (
        lambda a: (cond(a, 1, 1), a.suppress(True, at(2)),
                   a.remove_from_service("eng", "maintenance", at(3))),
        (1, OUT_OF_SERVICE, UNACK, None, True)),
    # Ambiguous: it fell while shelved; acknowledged before (here) or not, the event
    # cannot tell. Restored unacknowledged while active …
    "fell while shelved": (
        lambda a: (cond(a, 2, 1), a.acknowledge("op", "seen", at(2)), _shelve(a, 3),
                   cond(a, 1, 4)),
        (1, SHELVED, UNACK, at(30), False)),
    # … and with nothing to acknowledge once normal (here it was returned-unacknowledged).
    "returned while shelved": (lambda a: (cond(a, 2, 1), _shelve(a, 2), cond(a, 0, 3)),
                               (0, SHELVED, NORMAL, at(30), False)),
    "removed": (lambda a: (cond(a, 2, 1), _shelve(a, 2), a.remove("eng", "obsolete", at(3))),
                (0, NORMAL, NORMAL, None, False)),
}


@pytest.mark.parametrize("case", RESTORE_CASES)
def test_restore_from_the_last_event(case: str) -> None:
    happen, want = RESTORE_CASES[case]
    a = machine()
    happen(a)
    assert a.last_event is not None
    b = machine()
    b.restore(a.last_event)
    assert (b.level, b.ack_state, b.base_state, b.shelved_until, b.suppressed) == want
    assert b.out_of_service == (want[1] == OUT_OF_SERVICE)
    assert b.last_event is a.last_event
    assert (b.value, b.limit) == (a.value, a.limit)


def test_restored_state_goes_on_like_the_original() -> None:
    """Where the event tells everything, the same actions give the same events."""
    for case in ("rose while shelved", "acknowledged then shelved", "suppressed",
                 "out of service while suppressed", "returned unacknowledged"):
        happen, _ = RESTORE_CASES[case]
        a = machine()
        happen(a)
        assert a.last_event is not None
        b = machine()
        b.restore(a.last_event)
        out = []
        for s in (a, b):
            events: list[AlarmEvent | None] = []
            if s.out_of_service:
                events += [s.suppress(False, at(10)),
                           s.return_to_service("eng", "done", at(11))[1], cond(s, 2, 12)]
            else:
                if s.level:
                    events.append(cond(s, 0, 10))  # cleared while masked: left or not?
                events += [s.suppress(False, at(11)), s.expire(at(30)), cond(s, 1, 31)]
            out.append([(e.cause, e.state, e.ack_state) for e in events if e is not None])
        assert out[0] == out[1], case
        assert out[0], case


def test_remove_ends_in_normal_with_who_and_why() -> None:
    a = machine()
    cond(a, 2, 1)
    a.remove_from_service("eng", "maintenance", at(2))
    with pytest.raises(AlarmActionError, match="remove alarm rule 'r1': needs a comment"):
        a.remove("eng", " ", at(3))
    e = a.remove("eng", "rule obsolete", at(3))
    assert (e.cause, e.previous, e.state, e.previous_ack_state, e.ack_state) == (
        "removed", "alarm", "normal", OUT_OF_SERVICE, NORMAL)
    assert (e.user, e.comment, e.shelved_until) == ("eng", "rule obsolete", None)
    assert e.message == "rule removed by eng: rule obsolete [rule r1: High rate]"
    assert e.message_zh == "规则已由 eng 删除：rule obsolete［规则 r1：High rate］"
    assert not annunciates(e)


def test_comment_and_confirm_change_nothing_but_are_journaled_and_audited() -> None:
    a = machine()
    cond(a, 2)
    a.shelve("olga", "noisy", at(60), at(1))
    rec, ev = a.add_comment("olga", " lab sample taken ", at(2))
    assert rec == AuditRecord(at(2), "olga", "comment", "r1", "lab sample taken")
    assert (ev.cause, ev.state, ev.ack_state, ev.previous_ack_state, ev.comment) == (
        "comment", "alarm", SHELVED, SHELVED, "lab sample taken")
    assert (a.ack_state, a.acked, a.shelved_until) == (SHELVED, False, at(60))
    assert not annunciates(ev)
    rec, ev = a.add_comment("olga", "cause removed", at(3), action="confirm")
    assert (rec.action, ev.cause, ev.message) == (
        "confirm", "confirm", "confirmed by olga: cause removed [rule r1: High rate]")
    with pytest.raises(AlarmActionError, match="needs a comment"):
        a.add_comment("olga", " ", at(4))
    with pytest.raises(ValueError, match="comment or confirm"):
        a.add_comment("olga", "x", at(4), action="shelve")
