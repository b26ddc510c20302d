"""The HTTP surface: channel endpoints (gateway role) and the agent API and console (api role).

Both are Litestar route groups over one `Services` object built by the composition root; a process
serves the groups of the roles it runs. The handlers live in a module per seam: `health` (every
role), `customers`, `cases`, `live` (SSE), `metrics` and `console` (api role), the channel adapters
in `channels/` (gateway role); `errors` turns exceptions into the contract's error body, `context`
is what every handler stands on (services, tokens, roles). This module only assembles them.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from channels.chat_gateway import CHAT_HANDLERS, ChatTokenMiddleware
from channels.errors import ChannelError
from channels.proxies import trusted_networks
from services.api import (
    agents,
    attributes,
    automations,
    campaigns,
    canned,
    cases,
    console,
    csat,
    customer_data,
    customers,
    health,
    live,
    merges,
    metrics,
    queries,
    queues,
    search,
    segments,
    sla,
    whoami,
)
from services.api.context import Services
from services.api.errors import (
    channel_error_handler,
    conflict_handler,
    domain_error_handler,
    http_error_handler,
    invalid_cursor_handler,
    not_found_handler,
)
from services.api.freshness import ReadYourWrites
from services.api.headers import SecurityHeadersMiddleware
from services.api.hygiene import RejectControlCharacters
from services.api.widget import WIDGET_HANDLERS, ChatCorsMiddleware
from services.core.commands import NotFound
from services.domain.aggregate import DomainError
from services.platform.eventstore.store import ConcurrencyError

GATEWAY_HANDLERS = [
    *CHAT_HANDLERS,
    *WIDGET_HANDLERS,
    csat.rating_link,
    customer_data.unsubscribe_link,
    customer_data.unsubscribe_one_click,
]
API_HANDLERS = [
    customers.lookup_customer,
    customers.search_customers,
    customers.get_customer,
    customers.get_timeline,
    cases.get_cases,
    cases.get_case,
    cases.reply,
    cases.assign,
    customers.get_attachment,
    cases.resolve,
    cases.reopen,
    cases.add_note,
    cases.add_tags,
    cases.prioritize,
    cases.snooze,
    queues.put_queue,
    queues.list_queues,
    queues.transfer,
    live.events_ticket,
    live.live_events,
    metrics.cc_metrics,
    search.search_everything,
    merges.list_merge_suggestions,
    merges.accept_merge_suggestion,
    merges.reject_merge_suggestion,
    merges.merge_customers,
    whoami.who_am_i,
    console.console,
    console.console_js,
    console.console_css,
    *canned.HANDLERS,
    *attributes.HANDLERS,
    *segments.HANDLERS,
    *campaigns.HANDLERS,
    csat.record_csat,
    customer_data.set_consent,
    customer_data.post_activity,
    *agents.AGENT_HANDLERS,
    sla.put_sla_policy,
    sla.get_sla_policies,
    *automations.HANDLERS,
]
COMMON_HANDLERS = [health.health, health.ready, health.prometheus, health.asyncapi]


def build_app(services: Services, roles: tuple[str, ...], extra_handlers: list | None = None) -> Litestar:
    trusted_networks(services.settings.trusted_proxies)  # a malformed setting stops the start, not a request
    handlers = list(COMMON_HANDLERS)
    if "gateway" in roles:
        handlers += GATEWAY_HANDLERS + list(extra_handlers or [])
    if "api" in roles:
        handlers += API_HANDLERS
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={
            ChannelError: channel_error_handler,
            HTTPException: http_error_handler,
            DomainError: domain_error_handler,
            NotFound: not_found_handler,
            queries.InvalidCursor: invalid_cursor_handler,
            ConcurrencyError: conflict_handler,
        },
        openapi_config=OpenAPIConfig(title="Switchboard", version="1.0.0", path="/schema"),
        request_max_body_size=services.settings.max_body_bytes,
        middleware=[
            SecurityHeadersMiddleware,
            RejectControlCharacters,
            *([ChatCorsMiddleware, ChatTokenMiddleware] if "gateway" in roles else []),
            ReadYourWrites,
        ],
        debug=False,
    )
    app.state.services = services
    return app
