"""A response's head goes out with its body in one write (services/server.py `_HeadWithBody`), and is
never held past its loop iteration, the end of the response or a close."""

from __future__ import annotations

import asyncio

import pytest

from services.server import _HeadWithBody

pytestmark = pytest.mark.unit

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorded(asyncio.Transport):
    """A transport that keeps what it was given (the writer under test is all that runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_head_and_body_are_one_write():
    transport = Recorded()
    writer = _HeadWithBody(transport, asyncio.get_running_loop())
    writer.write(HEAD)
    writer.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing held
    assert transport.writes == [HEAD + b"{}"]


async def test_a_head_without_a_body_goes_out_in_the_next_loop_iteration():
    transport = Recorded()
    writer = _HeadWithBody(transport, asyncio.get_running_loop())
    writer.write(HEAD)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]
    writer.write(b"data: 1\n\n")  # a stream's later chunks pass straight through
    assert transport.writes == [HEAD, b"data: 1\n\n"]


def test_flush_and_close_send_what_is_held_and_100_continue_is_never_held():
    transport = Recorded()
    writer = _HeadWithBody(transport, asyncio.new_event_loop())
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    writer.write(HEAD)
    writer.flush()
    assert transport.writes[-1] == HEAD
    writer.write(HEAD)
    writer.close()
    assert transport.writes[-1] == HEAD and transport.closed
