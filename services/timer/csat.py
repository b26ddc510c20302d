"""The CSAT survey: when a case in a queue with `csat` on is resolved, a survey goes out through its
channel, once per resolution.

A `Follower` (one active per database) reads the log; for each `case.Resolved` of a case still
resolved, whose queue has `csat` on and that has no survey out yet, it appends to the case a
`ReplyRequested` by "csat" (the question and, for email and chat, the rating links of
`GET /csat/{token}?score=N` when `SWITCHBOARD_PUBLIC_URL` is set) and a `CsatRequested` open until
the resolution + 7 days. The relay sends the reply like any other. What the follower appends commits
with its position, and the case takes a survey at most once per resolution, so a crash or a second
timer sends nothing twice. A resolution older than `STALE` when read (a follower starting on an
old log) sends nothing: a survey about last month's conversation is noise.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from events.case import CaseResolved
from services.domain.case import Case
from services.domain.config import Queue
from services.domain.csat import SURVEY_WINDOW, csat_key, sign_token, survey_text
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower, Handler

FOLLOWER_NAME = "csat-survey"
STALE = timedelta(days=1)


def survey_handler(master_key: bytes, public_url: str | None, clock: Callable[[], datetime]) -> Handler:
    key = csat_key(master_key)
    base = public_url.rstrip("/") if public_url else None

    def handle(tx: Transaction, items: Sequence[tuple[Any, ...]]) -> None:
        now = clock()
        cases: dict[UUID, Case] = {}  # loaded in this batch, with what this batch appended to them
        csat_queues: dict[str, bool] = {}
        for _position, event, _redacted in items:
            if type(event) is not CaseResolved or now - event.occurred_at > STALE:
                continue
            case = cases.get(event.stream_id)
            if case is None:
                case = cases[event.stream_id] = Case.replay(event.stream_id, tx.store.load(event.stream_id))
            if case.status != "resolved" or case.csat_until is not None:
                continue
            if case.queue not in csat_queues:
                csat_queues[case.queue] = _surveys(tx.store, case.queue)
            if not csat_queues[case.queue]:
                continue
            until = event.occurred_at + SURVEY_WINDOW
            link = None
            if base is not None:
                token = sign_token(key, case.id, until)
                link = lambda score, token=token: f"{base}/csat/{token}?score={score}"  # noqa: E731
            reply_id = uuid.uuid5(case.id, f"csat:{event.id}")
            case.request_reply(reply_id, survey_text(case.channel, link), "csat", now)
            case.request_csat(reply_id, until, now)
            tx.append(case.collect())

    return handle


def _surveys(store: EventStore, queue: str) -> bool:
    stream_id = Queue.stream_id(queue)
    events = store.load(stream_id)
    config = Queue.replay(stream_id, events).config if events else None
    return bool(config and config.csat)


def csat_follower(store: EventStore, master_key: bytes, public_url: str | None) -> Follower:
    handle = survey_handler(master_key, public_url, lambda: datetime.now(UTC))
    return Follower(store, FOLLOWER_NAME, handle)


def start_csat_surveys(sb: Any) -> None:  # a services.bootstrap.Switchboard (a layer above)
    """Started by the timer role: the survey follower, in a thread of this process until sb stops."""
    follower = csat_follower(sb.open_store(), sb.settings.master_key_bytes, sb.settings.public_url)
    thread = threading.Thread(target=follower.run_forever, args=(sb.stop_event,), name=FOLLOWER_NAME, daemon=True)
    thread.start()
    sb.threads.append(thread)
