"""The job event log and the expiring file store, on their own."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from pictale.jobs.events import EventLog
from pictale.service.files import FileStore

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 20


def test_event_log_replays_then_follows_until_terminal():
    log = EventLog()
    log.emit("queued", position=1)

    def worker():
        time.sleep(0.05)
        log.emit("started")
        for i in range(3):
            log.emit("step", step=i + 1, total=3)
        log.emit("done")

    threading.Thread(target=worker).start()

    async def collect():
        return [(e.seq, e.type, e.data.get("step")) for e in [e async for e in log.stream()]]

    events = asyncio.run(collect())
    assert events == [
        (0, "queued", None),
        (1, "started", None),
        (2, "step", 1),
        (3, "step", 2),
        (4, "step", 3),
        (5, "done", None),
    ]
    # a late reader gets the whole history and stops at the terminal event
    assert [e.type for e in asyncio.run(_all(log, 4))] == ["step", "done"]


async def _all(log, start):
    return [e async for e in log.stream(start)]


def test_file_store_links_expire_and_only_serve_images(tmp_path):
    store = FileStore(tmp_path, ttl_seconds=60)
    token = store.put(PNG)
    assert token.endswith(".png") and len(token) > 30
    path, media = store.get(token)
    assert path.read_bytes() == PNG and media == "image/png"
    assert store.get("../" + token) is None and store.get("nope.png") is None and store.get(".tmp-x.png") is None
    old = time.time() - 61
    os.utime(path, (old, old))
    assert store.get(token) is None and not path.exists()
    try:
        store.put(b"<html>")
    except ValueError as exc:
        assert "only images" in str(exc)
    else:
        raise AssertionError("non-image stored")
    t2 = store.put(PNG)
    os.utime(tmp_path / t2, (old, old))
    assert store.purge() == 1
