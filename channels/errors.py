"""What can go wrong at a channel's edge, inbound (a bad request) and outbound (a provider refusing).

Inbound errors carry the HTTP answer the contract prescribes: the HTTP layer turns a `ChannelError`
into status `status` with the body `{"error": code, "detail": detail}`. Details name the problem,
never the personal data in the request.
"""

from __future__ import annotations

import httpx


class ChannelError(Exception):
    """A request a channel endpoint refuses; nothing of it is recorded."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str = "", *, status: int | None = None, code: str | None = None):
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.detail = detail or self.code
        super().__init__(self.detail)


class Malformed(ChannelError):
    status = 400
    code = "malformed"


class Unauthorized(ChannelError):
    status = 401
    code = "unauthorized"


class TooLarge(ChannelError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(ChannelError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(ChannelError):
    """Switchboard cannot store the message now (JetStream full, without quorum, or unreachable):
    503 with `Retry-After`, nothing accepted; the provider's retry is recorded once."""

    status = 503
    code = "unavailable"

    def __init__(self, detail: str = "could not store the message, retry later", *, retry_after: int = 5):
        super().__init__(detail)
        self.retry_after = retry_after


class ProviderError(Exception):
    """An outbound call to a provider failed.

    `retryable` says whether sending the same request again may succeed (timeouts, 5xx, rate limits)
    or would fail the same way (a refused recipient, bad credentials): the caller retries the first
    kind with backoff and records the second as a failed reply.
    """

    def __init__(
        self,
        retryable: bool,
        detail: str,
        *,
        status: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
        in_doubt: bool = False,
    ):
        self.retryable = retryable
        # The request may have reached the provider all the same (no answer after it went out):
        # the outbound ledger settles such an attempt before anything is sent again.
        self.in_doubt = in_doubt
        self.detail = detail
        self.status = status
        self.provider_code = provider_code
        self.retry_after = retry_after
        super().__init__(detail)

    def __repr__(self) -> str:
        return f"ProviderError(retryable={self.retryable!r}, detail={self.detail!r})"


def transport_failure(provider: str, exc: httpx.HTTPError) -> ProviderError:
    """A request that got no HTTP answer. Always retryable.

    Only the exception's class is named: httpx's messages carry the URL, and a Telegram URL holds the
    bot token.
    """
    sure_not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return ProviderError(True, f"{provider}: {type(exc).__name__}", in_doubt=not sure_not_sent)


def http_failure(
    provider: str,
    response: httpx.Response,
    *,
    provider_code: str | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """A non-2xx answer: 5xx, 408 and 429 are worth retrying, any other 4xx is not."""
    status = response.status_code
    if retryable is None:
        retryable = status >= 500 or status in (408, 429)
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = None
    detail = f"{provider} answered HTTP {status}"
    if provider_code:
        detail += f" (code {provider_code})"
    return ProviderError(retryable, detail, status=status, provider_code=provider_code, retry_after=retry_after)
