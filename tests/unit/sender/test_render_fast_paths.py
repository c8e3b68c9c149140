"""The renderer's shortcuts give what plain Jinja would: copy without Jinja syntax renders
to itself, the sandbox's dict shortcut returns what its getattr returns, and cached money
formatting never mixes types."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from relance_sender.rendering.formatting import format_money
from relance_sender.rendering.renderer import Sandbox, is_plain_text


@given(st.text())
def test_copy_without_jinja_syntax_renders_to_itself(source: str) -> None:
    if not is_plain_text(source):
        return
    for autoescape in (True, False):
        env = SandboxedEnvironment(
            autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True
        )
        assert env.from_string(source).render() == source


def test_braces_or_carriage_returns_are_rendered_by_jinja() -> None:
    assert not is_plain_text("Bonjour {{ first_name }}")
    assert not is_plain_text("{# note #}texte")
    assert not is_plain_text("ligne\r\nsuivante")
    assert is_plain_text("Merci pour votre commande : -20 % !\n")


def outcome(env: SandboxedEnvironment, obj: Any, name: str) -> Any:
    try:
        value = env.getattr(obj, name)
    except SecurityError:
        return "unsafe"
    if isinstance(value, Undefined):
        return "undefined"
    return value


names = st.sampled_from(
    ["items", "keys", "get", "name", "url", "__class__", "__init__", "_private", "copy", "total"]
) | st.text(min_size=1, max_size=8)
mappings = st.dictionaries(names, st.integers() | st.text(max_size=5), max_size=5)


@given(mappings, names)
def test_the_dict_shortcut_returns_what_the_sandbox_returns(
    data: dict[str, Any], name: str
) -> None:
    ours, jinjas = (
        Sandbox(undefined=StrictUndefined),
        SandboxedEnvironment(undefined=StrictUndefined),
    )
    got, expected = outcome(ours, data, name), outcome(jinjas, data, name)
    if callable(expected):  # a bound method: same function of the same dict
        assert getattr(got, "__func__", got) == getattr(expected, "__func__", expected)
    else:
        assert got == expected


def test_a_missing_key_is_still_a_strict_undefined() -> None:
    template = Sandbox(undefined=StrictUndefined).from_string("{{ promo.code }}")
    with pytest.raises(UndefinedError):
        template.render(promo={"discount": "10 %"})


def test_cached_amounts_never_mix_types() -> None:
    assert format_money(1, "EUR", "fr") == "1,00\u00a0€"
    assert format_money(1.0, "EUR", "fr") == "1,00\u00a0€"
    with pytest.raises(ValueError, match="not an amount"):
        format_money(True, "EUR", "fr")  # equal to 1, and cached after it: still refused
    with pytest.raises(ValueError, match="not an amount"):
        format_money(["49.90"], "EUR", "fr")  # unhashable: not cached, still refused
