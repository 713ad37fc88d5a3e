"""Tests for compiler.encode's tokenizer loading."""

from __future__ import annotations

import pathlib

import pytest

from compiler.encode import _load_tokenizer, _load_without_torch, load_tokenizer
from mixlang.diagnostics import MixError


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_plain_model", "templated"])
def test_loading_without_torch_gives_the_same_setup(request: pytest.FixtureRequest, model_fixture: str) -> None:
    """The child process that hides torch loads exactly what transformers loads with torch."""
    directory = str(request.getfixturevalue(model_fixture))
    hidden = _load_without_torch(directory)
    assert hidden is not None
    assert hidden == _load_tokenizer(directory)


def test_a_tokenizer_that_cannot_load_still_gives_the_real_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    assert _load_without_torch(str(tmp_path)) is None
    with pytest.raises(MixError, match="E701|cannot load tokenizer"):
        load_tokenizer(str(tmp_path))
