"""Responses on the wire as a plain HTTP/1.1 client reads them: keep-alive answers with and without
a body, `Expect: 100-continue`, and a stream's head before its first event (the server sends a
response's head with its body: services/server.py `_HeadWithBody`)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.e2e


async def _response(reader: asyncio.StreamReader, has_body: bool = True) -> tuple[bytes, dict, bytes]:
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
        length = int(headers.get(b"content-length", b"0")) if has_body else 0
        return lines[0], headers, await reader.readexactly(length)


async def test_keep_alive_answers_with_and_without_a_body(server):
    host, port = server.http
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for method in ("GET", "HEAD", "GET"):
            writer.write(f"{method} /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, headers, body = await _response(reader, has_body=method == "GET")
            if method == "GET":
                assert status == b"HTTP/1.1 200 OK", status
                assert headers[b"x-content-type-options"] == b"nosniff"
                assert body and body.startswith(b"{")
            else:  # an answer to HEAD carries no body (here a 405: /health is GET only)
                assert status.startswith(b"HTTP/1.1 405"), status
    finally:
        writer.close()


async def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(server):
    host, port = server.http
    body = b'{"email": "nobody@example.com", "password": "wrong"}'
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        status, _, answer = await _response(reader)
        assert status.startswith(b"HTTP/1.1 401"), (status, answer)
    finally:
        writer.close()


async def test_a_stream_sends_its_head_before_any_event(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        ticket = (await client.post("/api/v1/events/ticket")).json()["ticket"]
    host, port = server.http
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /api/v1/events?ticket={ticket} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in head
    finally:
        writer.close()
