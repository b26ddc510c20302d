"""The classifier in a process of its own, at the lowest CPU priority: what the classifier role uses.

Tokenising for the TF-IDF holds the GIL, and training takes seconds of CPU: in the process of
`switchboard up`, beside the core and the projector, the role's work competes with ingest
(tests/benchmarks/ingest.py measures it). In a worker process it has its own interpreter, and once
trained (at the parent's priority: seconds, once) it serves at niceness `SWITCHBOARD_CLASSIFIER_NICE`
(default 19), taking the CPU the ingest path leaves over: ingest runs first, classification catches up.

The worker is spawned (not forked: the parent has threads and connections) when the role starts
(or again on the next batch after it died), as a daemon process (it ends with its parent), trains its model there
(services.intelligence.classify, from the shipped data or the given training file), and is shared
by every Switchboard of the process (one per training file and niceness). Texts go to it over a
local pipe and nothing else; nothing leaves the machine. If it dies, or the caller is stopping, the
call raises `ClassifierUnavailable` (a ConnectionError: the follower retries the batch later and
quarantines nothing); the next call starts a new worker.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog

from services.intelligence.classify import Classification, default_classifier

log = structlog.get_logger(__name__)

NICE = 19  # the default niceness of the worker: it runs on CPU nobody else wants


class ClassifierUnavailable(ConnectionError):
    """The worker process died, could not start, or the caller is stopping; try again later."""


def _serve(conn: Any, training: str | None, nice: int) -> None:  # pragma: no cover — runs in the worker
    # Trained at the parent's priority, once, then lowered: trained at niceness 19 on a busy machine
    # the model was never ready (the ingest bench: a minute of backlog, not one message classified).
    classifier = default_classifier(training)
    if nice:
        os.nice(nice)
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return
        conn.send([(c.language, c.sentiment, c.intent, c.confidence) for c in classifier.classify_many(texts)])


class ClassifierProcess:
    def __init__(self, training: str | None = None, nice: int = NICE):
        self.training = training
        self.nice = nice
        self._proc: Any = None
        self._conn: Any = None
        self._started: float | None = None  # when the current worker started, until its first answer
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._stop_worker()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve, args=(child, self.training, self.nice), daemon=True, name="switchboard-classifier"
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._started = time.monotonic()
        log.info("classifier_worker_started", pid=proc.pid, nice=self.nice)

    def _stop_worker(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def classify_many(self, texts: Sequence[str], stop: threading.Event | None = None) -> list[Classification]:
        """The texts' classifications, from the worker (started if need be). `stop` set while waiting:
        ClassifierUnavailable (the worker is left to finish, the answer dropped with it)."""
        with self._lock:
            self._ensure()
            try:
                self._conn.send(list(texts))
                while not self._conn.poll(0.2):
                    if not self._proc.is_alive():
                        raise EOFError
                    if stop is not None and stop.is_set():
                        self._stop_worker()  # its answer would come to the next caller
                        raise ClassifierUnavailable("stopping")
                rows = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._stop_worker()
                log.warning("classifier_worker_stopped")
                raise ClassifierUnavailable("the classifier worker process stopped") from exc
            if self._started is not None:  # the first answer: trained and serving
                log.info("classifier_worker_ready", seconds=round(time.monotonic() - self._started, 1))
                self._started = None
        return [Classification(*row) for row in rows]

    def start(self) -> None:
        """Starts the worker now (it trains while the rest starts up), unless it runs already."""
        with self._lock:
            self._ensure()

    def bound(self, stop: threading.Event) -> _Bound:
        """This worker, giving up its waits when `stop` is set (a Switchboard's stop event)."""
        return _Bound(self, stop)

    def close(self) -> None:
        with self._lock:
            self._stop_worker()


class _Bound:
    def __init__(self, worker: ClassifierProcess, stop: threading.Event):
        self.worker = worker
        self.stop = stop

    def classify_many(self, texts: Sequence[str]) -> list[Classification]:
        return self.worker.classify_many(texts, self.stop)


_shared: dict[tuple[str | None, int], ClassifierProcess] = {}
_shared_lock = threading.Lock()


def shared_process(training: str | None = None, nice: int = NICE) -> ClassifierProcess:
    """The process-wide worker for a training file (None: the shipped data), made on first use."""
    with _shared_lock:
        key = (training, nice)
        if key not in _shared:
            _shared[key] = ClassifierProcess(training, nice)
        return _shared[key]
