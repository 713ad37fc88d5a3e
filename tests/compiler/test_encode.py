"""Tests for compiler.encode: loading tokenizers, reading JSON Lines."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.encode import _load_forked, _load_tokenizer, _load_without_torch, _loads_for, _orjson_loads, load_tokenizer
from mixlang.diagnostics import MixError


def _forked(directory: str):
    import multiprocessing

    return _load_forked(multiprocessing.get_context("forkserver"), directory)


_LOADERS = {"new interpreter": _load_without_torch, "forked from the fork server": _forked}


@pytest.mark.parametrize("loader", _LOADERS)
@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_plain_model", "templated"])
def test_loading_without_torch_gives_the_same_setup(request: pytest.FixtureRequest, model_fixture: str,
                                                     loader: str) -> None:
    """A process that hides torch loads exactly what transformers loads with torch."""
    directory = str(request.getfixturevalue(model_fixture))
    hidden = _LOADERS[loader](directory)
    assert hidden is not None
    assert hidden == _load_tokenizer(directory)


@pytest.mark.parametrize("loader", _LOADERS)
def test_a_tokenizer_that_cannot_load_still_gives_the_real_error(tmp_path: pathlib.Path, loader: str) -> None:
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    assert _LOADERS[loader](str(tmp_path)) is None
    with pytest.raises(MixError, match="E701|cannot load tokenizer"):
        load_tokenizer(str(tmp_path))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.integers(min_value=2**60, max_value=2**70)
                     | st.floats() | st.text(), lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=5), st.booleans())
def test_json_lines_are_read_exactly_as_json_reads_them(values, ascii_only):
    """orjson where it reads the same as json: integers beyond 64 bits, NaN, lone surrogates
    and duplicate keys come out as json gives them."""
    lines = [json.dumps(v, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") for v in values]
    loads = _loads_for(b"\n".join(lines))
    for line in lines:
        assert repr(loads(line)) == repr(json.loads(line))


def test_a_block_without_long_numbers_is_read_by_orjson():
    """The guard is not always on: the test above would pass with json alone."""
    assert _loads_for(b'{"a": 1234567890123456789}\n') is json.loads
    assert _loads_for(b'{"a": 123456789012345678, "b": "x"}\n') is _orjson_loads
    assert _orjson_loads(b'{"a": 1, "a": NaN}') == {"a": pytest.approx(float("nan"), nan_ok=True)}


def test_a_wider_word_cache_gives_the_same_ids(tiny_model: pathlib.Path) -> None:
    """Workers let the BPE model remember more words than its default; with a cache of a few
    words (so it fills at once, and words are merged again) and a large one, the examples'
    texts twice over give the ids of the tokenizer as its files configure it."""
    from tokenizers import Tokenizer, models

    from compiler.encode import widen_word_cache

    root = pathlib.Path(__file__).resolve().parents[2] / "examples" / "data"
    texts = [line for path in sorted(root.rglob("*.jsonl")) for line in path.read_text().splitlines()[:200]]
    plain = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    expected = [e.ids for e in plain.encode_batch_fast(texts)]
    for words in (3, 1_000_000):
        wide = widen_word_cache(Tokenizer.from_file(str(tiny_model / "tokenizer.json")), words)
        assert [e.ids for e in wide.encode_batch_fast(texts + texts)] == expected + expected
    level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    assert widen_word_cache(level) is level  # a model without a word cache is left as it is
