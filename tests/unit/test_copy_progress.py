"""What the copy service tells its progress: only bytes that move count as moved.

A blob already at the target (or mounted there) moves no byte: it is reported as not moved,
never through ``advance``; the bar takes it out of its total (tests/integration/
test_cli_progress.py sees that drawn). And ``--debug``'s request log shows no secret of a URL.
"""

from __future__ import annotations

import threading

from memory_bundles import build_bundle, transports

from bundler.adapters.memory import MemoryStore
from bundler.adapters.registry.client import loggable_url
from bundler.model.plan import TransferPlan
from bundler.services.copy import Progress, copy
from bundler.services.transports import memory_location


class Counting(Progress):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.planned_bytes = 0
        self.advanced = 0
        self.not_moved_bytes = 0

    def planned(self, plan: TransferPlan) -> None:
        self.planned_bytes += plan.blob_bytes

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.advanced += nbytes

    def not_moved(self, nbytes: int) -> None:
        with self.lock:
            self.not_moved_bytes += nbytes


def test_a_second_copy_moves_nothing_and_says_so() -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = build_bundle(stores)
    with transports(stores) as t:
        first, again = Counting(), Counting()
        for progress in (first, again):
            source = t.open_source(memory_location(bundle.store_name, bundle.tag))
            target = t.open_target(memory_location("copy", "demo"))
            result = copy(source, target, progress=progress)
    assert first.planned_bytes > 0
    assert (first.advanced, first.not_moved_bytes) == (first.planned_bytes, 0)
    assert result.blobs_copied == 0 and result.blobs_skipped == result.blobs
    assert (again.advanced, again.not_moved_bytes) == (0, again.planned_bytes)


def test_request_log_urls_lose_their_query_and_user_info() -> None:
    upload = "https://user:secret@registry.example:5000/v2/app/blobs/uploads/u?_state=tok&digest=x"
    assert loggable_url(upload) == "https://registry.example:5000/v2/app/blobs/uploads/u?…"
    assert loggable_url("http://127.0.0.1:5000/v2/") == "http://127.0.0.1:5000/v2/"
