"""Token bucket, streaming body limits, API keys."""

from __future__ import annotations

import base64
import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_ingest.domain.rate_limit import RateLimiter, take
from relance_ingest.errors import BadBody, BodyTooLarge
from relance_ingest.http.body_limit import LimitedBody
from relance_runtime.auth import (
    AuthFailed,
    CachedKeyStore,
    ChainedKeyStore,
    StaticKeyStore,
    authenticate,
    ensure_dev_keys,
    hash_key,
    parse_basic_auth,
    parse_keys,
)
from relance_runtime.errors import ConfigError


def test_bucket_refills_at_rate_up_to_burst() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    assert all(limiter.take("k", 1, 0.0).allowed for _ in range(5))
    refused = limiter.take("k", 1, 0.0)
    assert not refused.allowed
    assert refused.retry_after_s == 1
    assert limiter.take("k", 1, 0.1).allowed
    assert not limiter.take("k", 1, 0.1).allowed
    assert limiter.take("other", 1, 0.1).allowed


def test_cost_above_burst_passes_on_a_full_bucket() -> None:
    assert take(None, 500, 0.0, rate=1, burst=100).allowed


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 20)), max_size=40))
def test_bucket_never_admits_more_than_burst_plus_refill(steps: list[tuple[float, int]]) -> None:
    rate, burst = 10.0, 30.0
    limiter = RateLimiter(rate=rate, burst=burst)
    now, admitted = 0.0, 0
    for dt, cost in steps:
        now += dt
        if limiter.take("k", cost, now).allowed:
            admitted += cost
    assert admitted <= burst + rate * now + 1e-6


def test_limited_body_plain_and_gzip() -> None:
    plain = LimitedBody(10, gzip=False)
    plain.feed(b"12345")
    plain.feed(b"67890")
    assert plain.finish() == b"1234567890"
    with pytest.raises(BodyTooLarge):
        plain.feed(b"x")
    packed = LimitedBody(100, gzip=True)
    data = gzip.compress(b"a" * 100)
    for i in range(0, len(data), 3):
        packed.feed(data[i : i + 3])
    assert packed.finish() == b"a" * 100


def test_gzip_bomb_stops_at_the_limit_with_bounded_output() -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)
    assert len(bomb) < 250_000
    body = LimitedBody(512_000, gzip=True)
    with pytest.raises(BodyTooLarge):
        body.feed(bomb)
    assert sum(len(p) for p in body._parts) <= 512_000


def test_truncated_or_invalid_gzip_is_bad_body() -> None:
    truncated = LimitedBody(1000, gzip=True)
    truncated.feed(gzip.compress(b"hello" * 50)[:20])
    with pytest.raises(BadBody):
        truncated.finish()
    with pytest.raises(BadBody):
        LimitedBody(1000, gzip=True).feed(zlib.compress(b"not gzip framing"))


def b64(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (b64("wk:"), "wk"),
        (b64("wk"), "wk"),
        (b64("wk:secret"), "wk"),
        ("basic " + base64.b64encode(b"wk:").decode(), "wk"),
        (b64(":"), None),
        ("Basic ###", None),
        ("Bearer abc", None),
        ("", None),
        (None, None),
        (b64("x" * 300 + ":"), None),
    ],
)
def test_basic_auth_username_is_the_key(header: str | None, key: str | None) -> None:
    assert parse_basic_auth(header) == key


async def test_static_keys_with_shops_kinds_and_rotation() -> None:
    store = StaticKeyStore.from_settings("shopA:old, shopA:new, bare", "shopA:adm")
    assert await store.shop_for("write", "old") == "shopA"
    assert await store.shop_for("write", "new") == "shopA"
    assert await store.shop_for("write", "bare") == "default"
    assert await store.shop_for("write", "adm") is None  # an admin key cannot write
    assert await store.shop_for("admin", "adm") == "shopA"
    assert await store.shop_for("admin", "old") is None


def test_keys_are_kept_as_digests_only() -> None:
    (key,) = parse_keys("s:supersecret", "write")
    assert key.key_hash == hash_key("supersecret")
    assert "supersecret" not in repr(key)
    with pytest.raises(ConfigError):
        parse_keys(":nokey", "write")


async def test_authenticate_and_chain_and_cache() -> None:
    first = StaticKeyStore.from_settings("a:k1", "")
    second = StaticKeyStore.from_settings("b:k2", "")
    chain = ChainedKeyStore(first, second)
    assert await authenticate(chain, "write", b64("k2:")) == "b"
    with pytest.raises(AuthFailed):
        await authenticate(chain, "write", b64("k3:"))
    with pytest.raises(AuthFailed):
        await authenticate(chain, "write", None)
    clock = [0.0]
    cached = CachedKeyStore(first, ttl_s=10, monotonic=lambda: clock[0])
    assert await cached.shop_for("write", "k1") == "a"
    assert await cached.shop_for("write", "nope") is None


def test_dev_keys_are_created_only_when_none_is_set() -> None:
    fresh = ensure_dev_keys("", "")
    assert set(fresh.created) == {"write", "admin"}
    assert fresh.write_keys == f"default:{fresh.created['write']}"
    kept = ensure_dev_keys("s:w1", "")
    assert set(kept.created) == {"admin"}
    assert kept.write_keys == "s:w1"
