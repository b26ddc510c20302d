"""Errors of ours that a client can act on get the contract's JSON body and a 4xx, not a 500."""

from __future__ import annotations

import pytest
from litestar import get
from litestar.testing import TestClient

from services.api.app import build_app
from services.api.context import Services
from services.platform.eventstore.store import ConcurrencyError
from services.platform.settings import Settings
from services.platform.streams import Names

pytestmark = pytest.mark.unit


@get("/test/race")
async def race() -> None:
    raise ConcurrencyError("case 1 version 7 taken")


def test_a_write_that_lost_every_retry_is_a_409_to_retry():
    app = build_app(Services(settings=Settings(), names=Names()), ("gateway",), [race])
    with TestClient(app) as client:
        response = client.get("/test/race")
    assert response.status_code == 409
    assert response.json() == {"error": "conflict", "detail": "the case changed while the command ran; retry"}
    assert response.headers["retry-after"] == "1"


def test_a_malformed_trusted_proxies_setting_stops_the_start():
    with pytest.raises(ValueError, match="SWITCHBOARD_TRUSTED_PROXIES: 'proxy.internal'"):
        build_app(Services(settings=Settings(trusted_proxies="10.0.0.0/8,proxy.internal"), names=Names()), ("gateway",))
