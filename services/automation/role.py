"""Starts the automation role in a process: the rule runner (a follower of the log, one active per
database) and the webhook sender (in every process of the role), each on a thread of its own."""

from __future__ import annotations

import threading
from typing import Any

from services.automation.runner import FOLLOWER_NAME, automation_follower
from services.automation.webhooks import WebhookSender
from services.platform.clock import Clock
from services.platform.logs import get_logger

log = get_logger(__name__)


def start_automation(sb: Any) -> None:  # a services.bootstrap.Switchboard (a layer above)
    settings = sb.settings
    store = sb.open_store()
    follower = automation_follower(store, Clock(settings.clock_file).now, settings.marketing_consent)
    _thread(sb, follower.run_forever, FOLLOWER_NAME)
    if not settings.webhook_secret:
        log.warning("webhook_secret_missing", hint="set SWITCHBOARD_WEBHOOK_SECRET: webhooks wait unsent until then")
        return
    sender = WebhookSender(
        store,
        settings.webhook_secret,
        retry_base=settings.webhook_retry_base_seconds,
        max_attempts=settings.webhook_max_attempts,
        timeout=settings.webhook_timeout_seconds,
    )
    _thread(sb, sender.run_forever, "webhooks")


def _thread(sb: Any, target: Any, name: str) -> None:
    thread = threading.Thread(target=target, args=(sb.stop_event,), name=name, daemon=True)
    thread.start()
    sb.threads.append(thread)
