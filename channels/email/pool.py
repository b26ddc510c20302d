"""Email parsing off the event loop: a small pool of worker processes with a bounded queue.

Why processes and not threads: reading a large HTML body with BeautifulSoup is pure Python and
holds the GIL but for the interpreter's switch interval, so a parsing thread competes with every
other request on the loop (measured on a 48,000-tag message, 0.55 s of parsing: a 5 ms timer on the
loop ticked 46 times beside a parsing thread and 90 times beside a worker process; two parsing
threads would leave the loop a third of the interpreter). A process also contains a parse that runs
out of memory or crashes. Why bounded: each waiting message holds its raw bytes in memory; past
`workers + queue` messages in flight the sender is told to retry later (SMTP 451, HTTP 503 with
Retry-After) instead of the gateway queueing without limit.

Workers start lazily (no process is spawned before the first email) with the "spawn" method: forking
a process that runs an event loop and NATS threads is not safe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from channels.email.parse import EmailBudget, OverBudget, ParsedEmail, parse_email
from channels.email.trust import SenderTrust
from services.platform.logs import get_logger

log = get_logger(__name__)

__all__ = ["EmailParser", "ParserBusy", "ParserFailed", "close_parser", "parser_of"]


class ParserBusy(Exception):
    """Every worker is busy and the queue is full: a temporary condition, the sender retries."""


class ParserFailed(Exception):
    """A worker died while parsing (killed, out of memory): temporary, the pool is rebuilt."""


def _ignore_interrupts() -> None:
    # Ctrl-C goes to the whole process group; the parent stops the pool itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _OutOfTime(BaseException):
    # A BaseException: the parser's lenient `except Exception` fallbacks must not swallow it.
    pass


def _out_of_time(signum, frame) -> None:
    raise _OutOfTime


def _parse(
    raw: bytes, received_at: datetime, budget: EmailBudget, trust: SenderTrust, seconds: float | None = None
) -> ParsedEmail:
    """Runs in a worker's main thread, where a timer signal can interrupt a parse that overruns its
    time budget (pure-Python work is interruptible; that is where a hostile message spends time)."""
    timed = bool(seconds) and hasattr(signal, "setitimer")
    if timed:
        previous = signal.signal(signal.SIGALRM, _out_of_time)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return parse_email(raw, received_at=received_at, budget=budget, trust=trust)
    except _OutOfTime:
        raise OverBudget("parse_seconds", f"more than {seconds:g} seconds to read", structural=True) from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class EmailParser:
    def __init__(self, workers: int, queue: int, seconds: float | None = None):
        self.workers = max(1, workers)
        # The time budget of one parse, counted in the worker (not while queued or spawning).
        self.seconds = seconds
        self.capacity = self.workers + max(0, queue)
        self.in_flight = 0
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_interrupts,
            )
        return self._executor

    async def parse(self, raw: bytes, received_at: datetime, budget: EmailBudget, trust: SenderTrust) -> ParsedEmail:
        """Parses in a worker; raises what `parse_email` raises, `ParserBusy` or `ParserFailed`.

        A message holds its slot until its worker is done with it, not until its caller stops
        waiting: a sender that hangs up mid-parse must not free room for more work than the bound.
        """
        if self.in_flight >= self.capacity:
            raise ParserBusy(f"{self.in_flight} messages are being parsed")
        loop = asyncio.get_running_loop()
        pool = self._pool()
        try:
            future = pool.submit(_parse, raw, received_at, budget, trust, self.seconds)
        except BrokenProcessPool:
            self._discard(pool)
            raise ParserFailed("the parser processes are gone") from None
        self.in_flight += 1
        future.add_done_callback(lambda _: self._release_from_any_thread(loop))
        try:
            return await asyncio.wrap_future(future)
        except _OutOfTime:  # the timer fired between the parse's end and its cancellation
            raise OverBudget("parse_seconds", f"more than {self.seconds:g} seconds to read", structural=True) from None
        except BrokenProcessPool:
            log.error("email_parser_worker_died")
            self._discard(pool)
            raise ParserFailed("a parser process died") from None

    def _release_from_any_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop is closed: nobody counts any more
            pass

    def _release(self) -> None:
        self.in_flight -= 1

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        if self._executor is pool:
            self._executor = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def parser_of(services) -> EmailParser:
    """The process's email parser (created on first use; nothing spawns at start-up)."""
    parser = services.email_parser
    if parser is None:
        settings = services.settings
        parser = services.email_parser = EmailParser(
            settings.email_parse_workers, settings.email_parse_queue, settings.email_parse_seconds
        )
    return parser


async def close_parser(services) -> None:
    """Stops the workers (waiting, off the loop, for a parse under way)."""
    parser = services.email_parser if services is not None else None
    if services is not None:
        services.email_parser = None
    if parser is not None:
        await asyncio.to_thread(parser.close)
