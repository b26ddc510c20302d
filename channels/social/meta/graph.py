"""The outbound Graph API client: replies through the WhatsApp Cloud API, Messenger and Instagram."""

from __future__ import annotations

from typing import Any

import httpx

from channels.errors import ProviderError, http_failure, transport_failure

DEFAULT_GRAPH_BASE = "https://graph.facebook.com/v21.0"


# Graph API error codes that mean "later": throttling and transient failures.
_RETRYABLE_CODES = {1, 2, 4, 17, 32, 341, 613, 80007, 130429, 131056}


class MetaClient:
    """Sends replies through the Graph API: WhatsApp Cloud API, Messenger and Instagram."""

    def __init__(
        self,
        access_token: str,
        *,
        graph_base: str = DEFAULT_GRAPH_BASE,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ):
        self._graph_base = graph_base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def send_whatsapp(self, phone_number_id: str, to_wa_id: str, text: str) -> str:
        """Sends a text from our number `phone_number_id`; returns the `wamid` of the message."""
        to = to_wa_id.strip()
        if to.lower().startswith("whatsapp:"):
            to = to[len("whatsapp:") :]
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.lstrip("+"),
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        payload = await self._post(f"{self._graph_base}/{phone_number_id}/messages", body)
        return self._wamid(payload)

    async def send_whatsapp_template(self, phone_number_id: str, to_wa_id: str, template: dict[str, Any]) -> str:
        """Sends a message template (`{"name", "language": {"code"}, "components"?}`, approved at
        Meta beforehand): the only message WhatsApp lets a business start outside the 24-hour window."""
        to = to_wa_id.strip().removeprefix("whatsapp:").lstrip("+")
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        }
        payload = await self._post(f"{self._graph_base}/{phone_number_id}/messages", body)
        return self._wamid(payload)

    @staticmethod
    def _wamid(payload: dict[str, Any]) -> str:
        messages = payload.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            message_id = messages[0].get("id")
            if isinstance(message_id, str) and message_id:
                return message_id
        raise ProviderError(False, "meta answered without a message id")

    async def send_messenger(self, recipient_id: str, text: str) -> str:
        """Sends a reply to a Messenger user (page-scoped id); returns the message id."""
        return await self._send_page_message(recipient_id, text)

    async def send_instagram(self, recipient_id: str, text: str) -> str:
        """Sends a reply to an Instagram user (Instagram-scoped id); returns the message id."""
        return await self._send_page_message(recipient_id, text)

    async def _send_page_message(self, recipient_id: str, text: str) -> str:
        body = {
            "recipient": {"id": recipient_id},
            "messaging_type": "RESPONSE",
            "message": {"text": text},
        }
        payload = await self._post(f"{self._graph_base}/me/messages", body)
        message_id = payload.get("message_id")
        if isinstance(message_id, str) and message_id:
            return message_id
        raise ProviderError(False, "meta answered without a message id")

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise transport_failure("meta", exc) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            error = payload.get("error") if isinstance(payload, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            transient = isinstance(error, dict) and error.get("is_transient") is True
            retryable = (
                response.status_code >= 500
                or response.status_code in (408, 429)
                or transient
                or code in _RETRYABLE_CODES
            )
            raise http_failure(
                "meta",
                response,
                provider_code=str(code) if code is not None else None,
                retryable=retryable,
            )
        if not isinstance(payload, dict):
            raise ProviderError(False, "meta answered without JSON", status=response.status_code)
        return payload

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> MetaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
