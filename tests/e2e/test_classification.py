"""Classification end to end: an angry Spanish SMS complaint through the real Twilio webhook, the
classifier role running in `switchboard up`'s set of roles (its worker process at the default
priority here: on a busy test machine the lowest one may wait long for a CPU); the timeline item and the case show
language es, sentiment negative, intent complaint, and the metrics count it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.test_channel_sms import PUBLIC_URL, _post_signed, _sms
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, running_server, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # training: minutes on a loaded machine

COMPLAINT = (
    "Es la tercera vez que escribo y nadie me responde. Un servicio pésimo, estoy harta de vuestras "
    "excusas y quiero poner una reclamación formal"
)


async def test_an_angry_spanish_sms_complaint_is_shown_classified(settings, names, admin_headers) -> None:
    async with running_server(settings.with_(public_url=PUBLIC_URL, classifier_nice=0), names) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api:
            assert (await _post_signed(srv, _sms("+34612345678", COMPLAINT))).status_code == 200
            found = await customer(api, "phone", "+34612345678")

            async def classified_items() -> list[dict]:
                return [i for i in await timeline(api, found["id"]) if i["sentiment"] is not None]

            # The worker process trains its model as the server starts: ~10 s of CPU, on a loaded machine
            # (a load average of 20 on 2 cores was seen) minutes.
            [item] = await eventually(classified_items, timeout=300.0)
            assert (item["language"], item["sentiment"], item["intent"]) == ("es", "negative", "complaint")
            assert item["text"] == COMPLAINT

            # The case list and the metrics are other read models than the timeline, written behind it.
            async def case_view():
                return (await api.get(f"/api/v1/cases/{item['case_id']}")).json()

            case = await eventually(case_view, lambda c: c["sentiment"] is not None)
            assert (case["language"], case["sentiment"], case["intent"]) == ("es", "negative", "complaint")

            now = datetime.now(UTC)
            window = {"from": (now - timedelta(days=2)).isoformat(), "to": (now + timedelta(days=1)).isoformat()}

            async def metrics():
                return (await api.get("/api/v1/metrics", params=window)).json()

            totals = await eventually(metrics, lambda t: sum(t["sentiment"].values()) > 0)
            assert totals["sentiment"] == {"negative": 1, "neutral": 0, "positive": 0}
            assert totals["sentiment_series"] == []
            daily = (await api.get("/api/v1/metrics", params={**window, "interval": "day"})).json()
            assert sum(b["negative"] for b in daily["sentiment_series"]) == 1
            assert len(daily["sentiment_series"]) == len(daily["series"])

            # The OpenAPI document declares the new fields.
            schemas = (await api.get("/schema/openapi.json")).json()["components"]["schemas"]
            assert {"language", "sentiment", "intent"} <= set(schemas["TimelineItem"]["properties"])
            assert {"language", "sentiment", "intent"} <= set(schemas["CaseView"]["properties"])
