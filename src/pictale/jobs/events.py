"""A job's event log: written by the worker thread, read by any number of SSE streams (replay, then live)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

TERMINAL = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True)
class JobEvent:
    seq: int
    type: str
    """queued, started, step, done, failed, cancelled."""
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at, **self.data}


class EventLog:
    """Append-only and thread-safe; `stream()` replays from any point and then follows live events."""

    def __init__(self) -> None:
        self._events: list[JobEvent] = []
        self._cond = threading.Condition()
        self._closed = False

    def emit(self, type: str, /, **data: Any) -> JobEvent:
        with self._cond:
            event = JobEvent(len(self._events), type, data)
            self._events.append(event)
            if type in TERMINAL:
                self._closed = True
            self._cond.notify_all()
            return event

    @property
    def closed(self) -> bool:
        return self._closed

    def drop_previews(self) -> None:
        """Old events keep their steps but let go of their preview images (a finished job's log stays small)."""
        with self._cond:
            self._events = [_without_preview(e) for e in self._events]

    def snapshot(self) -> list[JobEvent]:
        with self._cond:
            return list(self._events)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until an event with seq >= `after` exists or the log is closed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._events) > after or self._closed, timeout)

    async def stream(self, start: int = 0, *, poll: float = 1.0) -> AsyncIterator[JobEvent]:
        """Events from `start` on, until the terminal one. The waiting happens in a worker thread."""
        i = start
        while True:
            with self._cond:
                pending = self._events[i:]
                closed = self._closed
            for event in pending:
                yield event
                i += 1
            if closed and not pending:
                return
            if not pending:
                await asyncio.to_thread(self.wait, i, poll)


def _without_preview(event: JobEvent) -> JobEvent:
    if "preview" not in event.data:
        return event
    return replace(event, data={k: v for k, v in event.data.items() if k != "preview"})
