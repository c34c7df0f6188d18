"""Login throttling and failed-login auditing, shared by the web HMI and the OPC UA server.

Failures count within `window_s` (5 min), under three rules; each rule, once its
threshold is reached, delays the next attempt exponentially after the last failure:

* an address and a user name together: after 5 failures 60 s, doubling with every
  further failure (60, 120, 240 … at most 15 min);
* an address, whatever names it tries: after 20 failures 1 s, doubling;
* a user name, whatever addresses try it: after 20 failures 1 s, doubling, but only for an
  address that has itself failed that name at least twice (one typo is forgiven).

So failures from one address never make another address wait, and an account cannot be
locked by someone else: the right password of a user from an address that has not been
guessing that name is always checked. A delayed attempt is refused without its password
being checked (HTTP 429 with Retry-After; Bad_UserAccessDenied on OPC UA). Attempts in
flight count against the limits, so a burst of parallel guesses cannot slip past them.

Password checks (scrypt, ~50 ms of CPU) run in a worker thread, one at a time per
throttle: a flood never holds the event loop and never takes more than one core.

Audit: failed and refused logins are summed up in one entry per address and
`audit_window_s` (60 s), so a flood cannot fill the audit log: action "login_failed",
target "remote:<address>", user the one name tried (or "*" for several), detail
{"remote", "count" (= failed + refused), "failed" (wrong passwords checked), "refused"
(refused unchecked), "users" (the first MAX_NAMES_LISTED names tried), "users_total",
"from"/"to" (first and last attempt, UTC), "blocked_s" (the longest delay a failure
started, if any), and the caller's `extra`}. The window opens with an address's first
failure and its entry is written when it closes (or at `flush`, on stop), so an entry
appears up to `audit_window_s` after the failure; a kill -9 loses the open windows.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

from model.accounts import User
from model.protocols import Authenticator

log = logging.getLogger(__name__)

Clock = Callable[[], float]

MAX_NAMES_LISTED: Final = 10  # user names a summary entry lists
_MAX_DOUBLINGS: Final = 30  # 2**30 s is far beyond any cap: keeps the power finite


@runtime_checkable
class FailureAuditor(Protocol):
    """Where failed logins are recorded (server.audit.AuditLog fits it); thread-safe."""

    def append(self, user: str, action: str, target: str,
               detail: Mapping[str, Any] | None = None,
               t: datetime | None = None) -> object:
        """Append one entry."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    """After `after` failures within the window, wait `delay_s`·2^(failures − after)."""

    after: int
    delay_s: float

    def delay(self, failures: int, cap_s: float) -> float:
        """The wait after the last of `failures` failures (0 below the threshold)."""
        if failures < self.after:
            return 0.0
        return min(cap_s, self.delay_s * 2.0 ** min(failures - self.after, _MAX_DOUBLINGS))


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What one login attempt came to."""

    user: User | None  # the account, if the password was right
    retry_after_s: int | None = None  # refused unchecked: try again in this many seconds
    refused_for: str = ""  # when refused: "name" (this name from here) or "address"


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    pending: int = 0  # attempts begun and not ended

    def recent(self, now: float, window_s: float) -> int:
        while self.times and now - self.times[0] >= window_s:
            self.times.popleft()
        return len(self.times)


@dataclass(slots=True)
class _Summary:
    """Failures and refusals of one address waiting to become one audit entry."""

    audit: FailureAuditor
    extra: dict[str, Any]
    first: datetime
    last: datetime
    failed: int = 0
    refused: int = 0
    names: dict[str, None] = field(default_factory=dict)  # ordered set, first MAX listed
    names_total: int = 0
    blocked_s: float | None = None  # the longest delay a failure of the window started
    timer: asyncio.TimerHandle | None = None


_Key = tuple[str, ...]


class LoginThrottle:
    """The login rules of the module docstring, for one server (web or OPC UA)."""

    def __init__(self, *, pair: Rule = Rule(5, 60.0), address: Rule = Rule(20, 1.0),
                 name: Rule = Rule(20, 1.0), name_grace: int = 1, window_s: float = 300.0,
                 max_delay_s: float = 900.0, audit_window_s: float = 60.0,
                 clock: Clock = time.monotonic, max_keys: int = 30_000) -> None:
        self.pair, self.address, self.name = pair, address, name
        self.name_grace = name_grace
        self.window_s = window_s
        self.max_delay_s = max_delay_s
        self.audit_window_s = audit_window_s
        self.clock = clock
        self.max_keys = max_keys
        self._state: dict[_Key, _Failures] = {}
        self._summaries: dict[str, _Summary] = {}
        self._writes: set[asyncio.Task[object]] = set()
        self._checks: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        # Since start, for /metrics: attempts refused unchecked, and wrong passwords.
        self.refused_total = 0
        self.failed_total = 0

    # ----------------------------------------------------------- counting (sync)

    @staticmethod
    def _keys(address: str, name: str) -> tuple[_Key, _Key, _Key]:
        folded = name.strip().casefold()
        return ("pair", address, folded), ("address", address), ("name", folded)

    def _rules(self, address: str, name: str, now: float) -> list[tuple[_Key, Rule, str]]:
        """The rules that apply to an attempt from `address` as `name`, with their keys."""
        pair, addr, nm = self._keys(address, name)
        rules = [(pair, self.pair, "name"), (addr, self.address, "address")]
        st = self._state.get(pair)
        if st is not None and st.recent(now, self.window_s) > self.name_grace:
            rules.append((nm, self.name, "name"))
        return rules

    def begin(self, address: str, name: str) -> tuple[int, str] | None:
        """Start an attempt: None if its password may be checked (then call `failed`,
        `succeeded` or `cancel`), else (seconds to wait, "name" or "address")."""
        now = self.clock()
        refusal: tuple[int, str] | None = None
        for key, rule, kind in self._rules(address, name, now):
            st = self._state.get(key)
            if st is None:
                continue
            n = st.recent(now, self.window_s)
            wait = 0.0
            if n >= rule.after:
                wait = st.times[-1] + rule.delay(n, self.max_delay_s) - now
                budget = 1  # after a delay, one attempt at a time
            else:
                budget = rule.after - n
            if wait <= 0 and st.pending >= budget:
                wait = 1.0  # attempts in flight may complete the limit
            if wait > 0:
                secs = max(1, math.ceil(wait))
                if refusal is None or secs > refusal[0]:
                    refusal = (secs, kind)
        if refusal is not None:
            return refusal
        for key in self._keys(address, name):
            self._state.setdefault(key, _Failures()).pending += 1
        return None

    def failed(self, address: str, name: str) -> float | None:
        """A wrong password: the delay it started (seconds), None if none."""
        now = self.clock()
        for key in self._keys(address, name):
            st = self._state.setdefault(key, _Failures())
            st.pending = max(0, st.pending - 1)
            st.times.append(now)
        delay = 0.0
        for key, rule, _ in self._rules(address, name, now):
            delay = max(delay, rule.delay(self._state[key].recent(now, self.window_s),
                                          self.max_delay_s))
        self._prune(now)
        return delay if delay > 0 else None

    def succeeded(self, address: str, name: str) -> None:
        """A right password: this address's failures for the name are forgotten (not the
        address's nor the name's, or a guesser could reset them with an own account)."""
        self.cancel(address, name)
        self._state.pop(self._keys(address, name)[0], None)

    def cancel(self, address: str, name: str) -> None:
        """An attempt that ended without an answer (an error): neither failed nor right."""
        for key in self._keys(address, name):
            st = self._state.get(key)
            if st is not None:
                st.pending = max(0, st.pending - 1)

    def address_failures(self, address: str) -> int:
        """Failures from `address` within the window."""
        st = self._state.get(("address", address))
        return 0 if st is None else st.recent(self.clock(), self.window_s)

    def _prune(self, now: float) -> None:
        if len(self._state) <= self.max_keys:
            return
        for key in [k for k, s in self._state.items()
                    if not s.pending and not s.recent(now, self.window_s)]:
            del self._state[key]
        # A flood of names: forget the oldest keys (the address rule still holds it back).
        for key in [k for k, s in self._state.items() if not s.pending][
                :max(0, len(self._state) - self.max_keys)]:
            del self._state[key]

    # ----------------------------------------------------- checking and audit (async)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._checks is None or self._checks[0] is not loop:
            self._checks = (loop, asyncio.Semaphore(1))
        return self._checks[1]

    async def check(self, users: Authenticator, audit: FailureAuditor | None, address: str,
                    name: str, password: str, *, via: str = "web",
                    extra: Mapping[str, Any] | None = None) -> LoginResult:
        """Throttle, check the password in a worker thread, and audit a failure.

        `via` names the protocol in logs; `extra` is added to the audit details. An
        exception of the user store or the audit log propagates.
        """
        refusal = self.begin(address, name)
        if refusal is not None:
            self.refused_total += 1
            if audit is not None:
                self._summarize(audit, address, name, extra, refused=1)
            return LoginResult(None, refusal[0], refusal[1])
        try:
            async with self._semaphore():
                user = await asyncio.to_thread(users.authenticate, name, password)
        except BaseException:
            self.cancel(address, name)
            raise
        if user is not None:
            self.succeeded(address, name)
            return LoginResult(user)
        self.failed_total += 1
        delay = self.failed(address, name)
        if delay is not None:
            log.warning("%s logins as %r from %s delayed %.0f s (%d failures from there "
                        "within %.0f s)", via, name, address, delay,
                        self.address_failures(address), self.window_s)
        if audit is not None:
            self._summarize(audit, address, name, extra, failed=1, blocked_s=delay)
        return LoginResult(None)

    def _summarize(self, audit: FailureAuditor, address: str, name: str,
                   extra: Mapping[str, Any] | None, *, failed: int = 0,
                   refused: int = 0, blocked_s: float | None = None) -> None:
        """Count one failure or refusal into the address's open audit window."""
        now = datetime.now(UTC)
        s = self._summaries.get(address)
        if s is None:
            s = self._summaries[address] = _Summary(audit, dict(extra or {}), now, now)
            s.timer = asyncio.get_running_loop().call_later(
                self.audit_window_s, self._write_summary, address)
        s.last = now
        s.failed += failed
        s.refused += refused
        if blocked_s is not None:
            s.blocked_s = max(s.blocked_s or 0.0, blocked_s)
        if name not in s.names:
            s.names_total += 1
            if len(s.names) < MAX_NAMES_LISTED:
                s.names[name] = None

    def _write_summary(self, address: str) -> None:
        s = self._summaries.pop(address, None)
        if s is None:
            return
        if s.timer is not None:
            s.timer.cancel()
        names = list(s.names)
        detail: dict[str, Any] = {
            "remote": address, "count": s.failed + s.refused, "failed": s.failed,
            "refused": s.refused, "users": names, "users_total": s.names_total,
            "from": s.first.isoformat(), "to": s.last.isoformat(), **s.extra}
        if s.blocked_s is not None:
            detail["blocked_s"] = s.blocked_s
        user = names[0] if s.names_total == 1 else "*"
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(
            s.audit.append, user, "login_failed", f"remote:{address}", detail))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[object]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit of failed logins not written: %s", task.exception())

    async def flush(self) -> None:
        """Write every pending summary entry now and wait for the writes (at stop)."""
        for address in list(self._summaries):
            self._write_summary(address)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
