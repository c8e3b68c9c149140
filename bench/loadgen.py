"""A minimal keep-alive HTTP/1.1 client for the load generators.

httpx costs more CPU than the server under test, and the load generator shares the
machine's 2 cores with it; requests are encoded before the clock starts.
"""

from __future__ import annotations

import asyncio
import base64


class RawConnection:
    """One keep-alive connection; `post` sends a pre-encoded request, returns the status."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> RawConnection:
        address, port = base_url.removeprefix("http://").rstrip("/").split(":")
        return cls(*await asyncio.open_connection(address, int(port)))

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def basic_auth(key: str) -> str:
    return base64.b64encode(f"{key}:".encode()).decode()


def post_request(base_url: str, path: str, auth: str, body: bytes) -> bytes:
    """The bytes of `POST path` with a JSON body and Basic auth (`basic_auth(key)`)."""
    host = base_url.removeprefix("http://").rstrip("/")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
