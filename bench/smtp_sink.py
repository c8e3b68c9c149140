"""A lean SMTP sink for benchmarks: accepts every message, keeps none, counts them.

    uv run --frozen python bench/smtp_sink.py --port 2525

A real MTA runs on another machine; on this 2-core box the sink shares the cores with
what is measured, so it should cost as little as it can. aiosmtpd (the tests' server)
spends about 0.6 ms of CPU per message; this one parses only what a sink must: the
command verbs, the DATA terminator (CRLF.CRLF), and replies in order, so a pipelining
client (RFC 2920) gets its replies as one write. It still speaks SMTP: EHLO/HELO, MAIL,
RCPT, DATA, RSET, NOOP, QUIT; anything else gets 502, and a DATA without a MAIL and a
RCPT gets 503, as RFC 5321 says.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Final, cast

GREETING: Final = b"220 sink.relance.test ESMTP ready\r\n"
EHLO_PIPELINING: Final = (
    b"250-sink.relance.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250 SIZE 52428800\r\n"
)
EHLO_PLAIN: Final = (
    b"250-sink.relance.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
)
MAX_LINE: Final = 4096
MAX_MESSAGE: Final = 52428800


class SinkSession(asyncio.Protocol):
    def __init__(self, counter: list[int], pipelining: bool) -> None:
        self._counter = counter
        self._ehlo = EHLO_PIPELINING if pipelining else EHLO_PLAIN
        self._buffer = bytearray()
        self._in_data = False
        self._mail = False
        self._rcpts = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self._transport
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        replies: list[bytes] = []
        while True:
            if self._in_data:
                # The message starts right after the 354 line, so its terminator is either
                # CRLF.CRLF inside it or a lone ".CRLF" for an empty message.
                if self._buffer.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    end = self._buffer.find(b"\r\n.\r\n")
                    skip = 5
                    if end == -1:
                        if len(self._buffer) > MAX_MESSAGE:
                            replies.append(b"552 5.3.4 message too big\r\n")
                            self._close(replies)
                            return
                        break
                del self._buffer[: end + skip]
                self._in_data = False
                self._mail, self._rcpts = False, 0
                self._counter[0] += 1
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = self._buffer.find(b"\r\n")
            if end == -1:
                if len(self._buffer) > MAX_LINE:
                    replies.append(b"500 5.5.2 line too long\r\n")
                    self._close(replies)
                    return
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            verb = line[:4].upper()
            if verb == b"MAIL":
                self._mail, self._rcpts = True, 0
                replies.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                if self._mail:
                    self._rcpts += 1
                    replies.append(b"250 2.1.5 Ok\r\n")
                else:
                    replies.append(b"503 5.5.1 need MAIL first\r\n")
            elif verb == b"DATA":
                if self._mail and self._rcpts:
                    self._in_data = True
                    replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                else:
                    replies.append(b"503 5.5.1 need MAIL and RCPT first\r\n")
            elif verb in (b"EHLO", b"HELO"):
                self._mail, self._rcpts = False, 0
                replies.append(self._ehlo if verb == b"EHLO" else b"250 sink.relance.test\r\n")
            elif verb == b"RSET":
                self._mail, self._rcpts = False, 0
                replies.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                replies.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                self._close(replies)
                return
            else:
                replies.append(b"502 5.5.2 command not recognized\r\n")
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))

    def _close(self, replies: list[bytes]) -> None:
        if self._transport is not None:
            self._transport.write(b"".join(replies))
            self._transport.close()


async def serve(port: int, pipelining: bool, counter: list[int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkSession(counter, pipelining), "127.0.0.1", port, backlog=512
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run(port: int, pipelining: bool = True) -> None:
    """Serve until SIGTERM (the bench runs it in a child process)."""
    import uvloop

    counter = [0]
    uvloop.run(serve(port, pipelining, counter))
    print(f"smtp sink: {counter[0]} messages accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    args = parser.parse_args()
    run(args.port, not args.no_pipelining)


if __name__ == "__main__":
    main()
