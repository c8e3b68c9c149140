"""Sender throughput: render + track + DKIM + SMTP to a local sink, through SendMessage.

    uv run --frozen python bench/sender.py [--messages 3000] [--pool 8] [--processes 1] [--no-dkim]

The SMTP sink (aiosmtpd, accepts everything) runs in a child process so it does not share
the sender's core. The ledger is the in-memory store: this measures the sender, not
PostgreSQL. `--processes N` runs N sender processes side by side (how the service scales:
one consumer-group member each) and reports their combined rate. The load average before
the run is recorded: the machine is shared. Writes bench/results/sender.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relance_runtime.clock import SystemClock
from relance_runtime.tokens import TokenSigner
from relance_sender.adapters.memory_store import MemorySenderStore
from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import DkimKey, EmailBuilder, SenderIdentity
from relance_sender.rendering.renderer import Renderer, ShopProfile, SocialProfile
from relance_sender.services import SendMessage

RESULTS = Path(__file__).resolve().parent / "results" / "sender.json"


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


def run_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    while True:
        time.sleep(3600)


class NullBus:
    def __init__(self) -> None:
        self.count = 0

    async def publish(self, events: Any) -> None:
        self.count += len(events)

    async def publish_raw(self, messages: Any) -> None:
        return None


def context(n: int) -> dict[str, Any]:
    return {
        "contact": {"email": f"contact{n}@example.org", "first_name": "Zoé"},
        "cart": {
            "items": [
                {"name": "Pull en laine", "quantity": 2, "price": "49.90"},
                {"name": "Bonnet", "quantity": 1, "price": "19.00"},
            ],
            "total": "118.80",
            "currency": "EUR",
            "url": "https://shop.example/cart",
            "clear_at": "2025-03-05T10:00:00Z",
        },
    }


def request(n: int) -> SendRequest:
    return SendRequest.from_json(
        {
            "message_id": f"bench-{n}",
            "shop_id": "shop-1",
            "contact_key": f"u-{n}",
            "plan": "abandoned_cart",
            "step": "reminder_2",
            "variant": None,
            "channel": "email",
            "purpose": "marketing",
            "locale": "fr",
            "context": context(n),
        }
    )


def builder(dkim_on: bool) -> EmailBuilder:
    dkim_key = None
    if dkim_on:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        dkim_key = DkimKey("s1", "shop.example", pem)
    return EmailBuilder(
        renderer=Renderer(
            shop=ShopProfile(
                name="Maison Dupont",
                url="https://shop.example",
                support_url="https://shop.example/aide",
                review_url="https://shop.example/avis",
                postal_address="1 rue de la Paix, Paris",
                social=(SocialProfile("Instagram", "https://instagram.com/md"),),
            )
        ),
        signer=TokenSigner({"k1": b"0123456789abcdef0123"}, "k1"),
        public_url="https://relance.example",
        identity=SenderIdentity(
            marketing_from="Maison Dupont <news@shop.example>",
            transactional_from="Maison Dupont <commandes@shop.example>",
            message_id_domain="mail.shop.example",
        ),
        dkim_key=dkim_key,
    )


def build_only(emails: EmailBuilder, count: int) -> float:
    now = datetime.now(UTC)
    start = time.perf_counter()
    for n in range(count):
        emails.build(request(n), to=f"contact{n}@example.org", now=now)
    return count / (time.perf_counter() - start)


async def end_to_end(emails: EmailBuilder, port: int, count: int, pool: int) -> float:
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?pool={pool}"))
    bus = NullBus()
    use_case = SendMessage(
        store=MemorySenderStore(),
        emails=emails,
        renderer=emails._renderer,
        email_transport=smtp,
        sms_transport=None,
        publisher=bus,
        clock=SystemClock(),
        owner="bench",
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            result = await use_case.handle(request(queue.get_nowait()))
            assert result.kind == "sent", result

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(pool * 2)))
    elapsed = time.perf_counter() - start
    await smtp.close()
    assert bus.count == count
    return count / elapsed


def _share(port: int, count: int, pool: int, dkim_on: bool, out: Any) -> None:
    emails = builder(dkim_on)
    started = time.time()
    asyncio.run(end_to_end(emails, port, count, pool))
    out.put((count, started, time.time()))


def parallel(port: int, count: int, pool: int, dkim_on: bool, processes: int) -> float:
    out: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_share, args=(port, count // processes, pool, dkim_on, out))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    total = sum(r[0] for r in results)
    return total / (max(r[2] for r in results) - min(r[1] for r in results))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--no-dkim", action="store_true")
    args = parser.parse_args()
    port = free_port()
    sink = multiprocessing.Process(target=run_sink, args=(port,), daemon=True)
    sink.start()
    time.sleep(1.0)
    try:
        figures: dict[str, Any] = {
            "messages": args.messages,
            "pool": args.pool,
            "processes": args.processes,
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        }
        plain = builder(False)
        figures["build_per_s_no_dkim"] = round(build_only(plain, min(args.messages, 2000)), 1)
        if not args.no_dkim:
            signed = builder(True)
            figures["build_per_s_dkim"] = round(build_only(signed, min(args.messages, 500)), 1)
        emails = plain if args.no_dkim else builder(True)
        figures["dkim"] = not args.no_dkim
        if args.processes > 1:
            rate = parallel(port, args.messages, args.pool, not args.no_dkim, args.processes)
        else:
            rate = asyncio.run(end_to_end(emails, port, args.messages, args.pool))
        figures["end_to_end_per_s"] = round(rate, 1)
        figures["goal_per_s"] = 1000
        figures["cores"] = os.cpu_count()
        figures["at"] = datetime.now(UTC).isoformat()
    finally:
        sink.terminate()
        sink.join()
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
