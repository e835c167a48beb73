"""vocab: fixed special ids, deterministic ordering, encode/decode, model-file lists."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rnnkit.errors import VocabularyError
from rnnkit.vocab import BOS, EOS, UNK, Vocab


def test_specials_first_then_by_frequency():
    """<unk>=0, <s>=1, </s>=2, then descending count with ties by first occurrence."""
    vocab = Vocab.build([["b", "a", "c"], ["a", "c", "d"], ["a"]])
    assert vocab.tokens == [UNK, BOS, EOS, "a", "c", "b", "d"]
    assert (vocab.id(UNK), vocab.id(BOS), vocab.id(EOS)) == (0, 1, 2)


def test_first_occurrence_order_and_counter_input():
    """sort='first' keeps first-occurrence order (KenLM's); a Counter works as input."""
    vocab = Vocab.build([["b", "a", "a"]], sort="first")
    assert vocab.tokens[3:] == ["b", "a"]
    assert Vocab.build(Counter({"x": 1, "y": 3})).tokens[3:] == ["y", "x"]


def test_min_count_max_vocab_and_specials_in_data():
    """min_count and max_vocab cap the vocabulary; specials in the data are not duplicated."""
    data = [["a", "a", "b", "<unk>", "<s>", "c", "c", "c"]]
    assert Vocab.build(data, min_count=2).tokens[3:] == ["c", "a"]
    assert Vocab.build(data, max_vocab=4).tokens == [UNK, BOS, EOS, "c"]
    with pytest.raises(ValueError):
        Vocab.build(data, max_vocab=2)


def test_encode_decode():
    """encode gives int32 with unknown -> 0; decode inverts; bad ids raise VocabularyError."""
    vocab = Vocab.build([["나는", "버스를", "탔다"]])
    ids = vocab.encode(["나는", "없음", "탔다"])
    assert ids.dtype == np.int32 and ids.tolist() == [3, 0, 5]
    assert vocab.decode(ids) == ["나는", UNK, "탔다"]
    assert "나는" in vocab and "없음" not in vocab and len(vocab) == 6
    with pytest.raises(VocabularyError, match="outside"):
        vocab.token(6)
    with pytest.raises(VocabularyError):
        vocab.decode([1, -1])


def test_list_round_trip_and_validation():
    """to_list/from_list round-trips; a list without the specials or with duplicates is refused."""
    vocab = Vocab.build([["x", "y"]])
    assert Vocab.from_list(vocab.to_list()) == vocab
    with pytest.raises(VocabularyError, match="start with"):
        Vocab.from_list(["x", UNK, BOS, EOS])
    with pytest.raises(VocabularyError, match="duplicate"):
        Vocab.from_list([UNK, BOS, EOS, "x", "x"])
