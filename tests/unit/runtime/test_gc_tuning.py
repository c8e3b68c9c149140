"""GC thresholds: parsed from settings with a clear error, applied once startup is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from relance_runtime.gc_tuning import parse_thresholds, tune_gc
from relance_runtime.settings import CommonSettings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_thresholds_parse_or_keep_the_defaults() -> None:
    assert parse_thresholds("50000, 20,100") == (50000, 20, 100)
    assert parse_thresholds("") is None


@pytest.mark.parametrize("text", ["1,2", "0,10,10", "a,b,c", "-5,10,10", "1,2,3,4"])
def test_bad_thresholds_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CommonSettings(gc_thresholds=text)
    assert "gc_thresholds" in str(caught.value)
    assert "three positive integers" in str(caught.value)


def test_tuning_freezes_what_exists_and_sets_the_thresholds(restore_gc: None) -> None:
    survivor = [object() for _ in range(10)]
    tune_gc((12345, 11, 7))
    assert gc.get_threshold() == (12345, 11, 7)
    assert gc.get_freeze_count() > len(survivor)
    tune_gc(None)  # empty setting: thresholds left as they are, still frozen
    assert gc.get_threshold() == (12345, 11, 7)
