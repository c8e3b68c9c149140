from __future__ import annotations

import pytest

from relance_runtime.tokens import InvalidToken, TokenSigner

OLD = TokenSigner({"k0": b"old-secret-0123456789"}, "k0")
NEW = TokenSigner({"k1": b"new-secret-0123456789", "k0": b"old-secret-0123456789"}, "k1")


def test_a_token_carries_its_claims_for_its_purpose() -> None:
    token = NEW.mint("click", {"s": "shop", "m": "m1", "u": "https://shop.example/a?b=1"})
    assert NEW.verify("click", token) == {"s": "shop", "m": "m1", "u": "https://shop.example/a?b=1"}
    assert token.isascii()
    assert "/" not in token
    assert "+" not in token


def test_a_token_for_one_purpose_is_refused_for_another() -> None:
    token = NEW.mint("click", {"m": "m1"})
    with pytest.raises(InvalidToken, match="purpose"):
        NEW.verify("unsub", token)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.replace(".", "..", 1),
        lambda t: "k9" + t[2:],
        lambda t: t.split(".")[0] + ".e30." + t.split(".")[2],
        lambda t: "x" * 5000,
        lambda t: "",
    ],
)
def test_tampered_tokens_are_refused(mangle: object) -> None:
    token = NEW.mint("open", {"m": "m1"})
    with pytest.raises(InvalidToken):
        NEW.verify("open", mangle(token))  # type: ignore[operator]


def test_keys_rotate_old_tokens_still_verify() -> None:
    old_token = OLD.mint("unsub", {"c": "u1"})
    assert NEW.verify("unsub", old_token) == {"c": "u1"}
    assert NEW.mint("unsub", {"c": "u1"}).startswith("k1.")


def test_setting_format_and_validation() -> None:
    signer = TokenSigner.from_setting("k2:a-long-enough-secret-x, k1:another-long-secret-y")
    assert signer.mint("open", {}).startswith("k2.")
    with pytest.raises(ValueError, match="at least 16"):
        TokenSigner({"k": b"short"}, "k")
    with pytest.raises(ValueError, match="look like"):
        TokenSigner.from_setting("no-colon-here")
