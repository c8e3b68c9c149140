from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_feedback.domain.addresses import (
    Allowlist,
    check_addresses,
    parse_ip,
    parse_ipv4_loose,
    refusal_reason,
)
from relance_feedback.errors import InvalidAllowlist


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "ipv4-mapped ipv6"),
        ("::ffff:8.8.8.8", "ipv4-mapped ipv6"),
        ("64:ff9b::a9fe:a9fe", "ipv6 embedding a refused ipv4 (link-local)"),
        ("2002:7f00:1::1", "ipv6 embedding a refused ipv4 (loopback)"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.0x1.02", "10.1.0.2"),
        ("2852039166", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
    ],
)
def test_ip_literals_in_every_form_are_read_as_the_address_they_are(host: str, address: str):
    assert parse_ip(host) == ipaddress.ip_address(address)
    assert refusal_reason(parse_ip(host)) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["example.com", "256.1.1.1.1", "1.2.3.256", "08.1.1.1", ""])
def test_host_names_and_malformed_numbers_are_not_ip_literals(host: str) -> None:
    assert parse_ipv4_loose(host) is None


@given(st.integers(0, 2**32 - 1))
def test_decimal_hex_and_octal_integers_agree(value: int) -> None:
    expected = ipaddress.IPv4Address(value)
    assert parse_ipv4_loose(str(value)) == expected
    assert parse_ipv4_loose(hex(value)) == expected
    assert parse_ipv4_loose("0" + oct(value)[2:]) == expected
    assert parse_ipv4_loose(".".join(str(b) for b in expected.packed)) == expected


def test_every_resolved_address_is_checked() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    private = ipaddress.ip_address("10.0.0.5")
    assert check_addresses("x.example", [public], Allowlist()) is None
    assert check_addresses("x.example", [public, private], Allowlist()) == (private, "private")


def test_the_allow_list_takes_hosts_ips_and_cidrs() -> None:
    allow = Allowlist.parse("support.internal, 10.0.0.0/8 127.0.0.1 ::1 0x7f000002")
    loop = ipaddress.ip_address("127.0.0.1")
    assert (
        check_addresses("Support.Internal.", [ipaddress.ip_address("192.168.0.9")], allow) is None
    )
    assert check_addresses("x", [ipaddress.ip_address("10.9.9.9")], allow) is None
    assert check_addresses("2130706433", [loop], allow) is None
    assert check_addresses("x", [ipaddress.ip_address("::1")], allow) is None
    assert check_addresses("x", [ipaddress.ip_address("127.0.0.2")], allow) is None
    refused = check_addresses("x", [ipaddress.ip_address("127.0.0.3")], allow)
    assert refused == (ipaddress.ip_address("127.0.0.3"), "loopback")
    assert check_addresses("x", [ipaddress.ip_address("169.254.169.254")], allow) is not None


@pytest.mark.parametrize("entry", ["http://x.example/", "a/b/c", "user@host"])
def test_malformed_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(InvalidAllowlist):
        Allowlist.parse(entry)
