"""Outgoing webhooks over httpx, behind an SSRF guard at the socket level.

The guard is an httpcore network backend: it resolves the host itself, checks every
address, then connects to an address it checked. httpcore still uses the URL's host name for
TLS (SNI and certificate check) and httpx for the Host header, so nothing changes for the
receiver, and a DNS answer that changes between check and connect (rebinding) cannot slip
through because no second lookup happens.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterable

import httpcore
import httpx

from relance_feedback.domain.addresses import Allowlist, IpAddress, check_addresses, parse_ip
from relance_feedback.domain.delivery import AttemptOutcome, HttpReply, TransportFailure
from relance_feedback.errors import DestinationRefused

DEFAULT_TIMEOUT_S = 15.0
USER_AGENT = "Relance-Webhooks/1"


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the SSRF policy (and allow-list) accepts."""

    def __init__(self, allowlist: Allowlist, inner: httpcore.AsyncNetworkBackend | None = None):
        self._allowlist = allowlist
        self._inner = inner or httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int, limit_s: float | None) -> list[IpAddress]:
        literal = parse_ip(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses: list[IpAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = parse_ip(str(sockaddr[0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore backend interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.resolve(host, port, timeout)
        refused = check_addresses(host, addresses, self._allowlist)
        if refused is not None:
            address, reason = refused
            raise DestinationRefused(host, str(address), reason)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore backend interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused(path, path, "unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections all go through `GuardedNetworkBackend`."""

    def __init__(self, allowlist: Allowlist, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=False)
        )
        # Replace the default pool with one on the guarded backend; no proxy is ever used
        # (a proxy would make the connect-time check meaningless).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            network_backend=GuardedNetworkBackend(allowlist),
            max_connections=20,
            max_keepalive_connections=10,
        )


def webhook_client(
    allowlist: Allowlist,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The client for support webhooks: guarded, no redirects, no proxies from the env."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allowlist, verify=verify),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        headers={"user-agent": USER_AGENT},
    )


class HttpWebhookSender:
    """`WebhookSender` over a guarded httpx client. The response body is never read."""

    def __init__(self, client: httpx.AsyncClient, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self._client = client
        self._timeout_s = timeout_s
        self.last_duration_s = 0.0

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptOutcome:
        started = time.monotonic()
        try:
            # The overall deadline bounds a server that trickles bytes forever.
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream(
                    "POST", url, content=body, headers=headers
                ) as response:
                    return HttpReply(response.status_code, response.headers.get("retry-after"))
        except DestinationRefused:
            return TransportFailure("refused_destination")
        except (TimeoutError, httpx.TimeoutException):
            return TransportFailure("timeout")
        except httpx.ConnectError:
            return TransportFailure("connect")
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return TransportFailure("protocol")
        finally:
            self.last_duration_s = time.monotonic() - started
