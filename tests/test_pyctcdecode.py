"""pyctcdecode, the speech decoder that calls kenlm.Model one word at a time, on rnnkit.kenlm.

A seeded synthetic CTC logit matrix over a five-letter alphabet is decoded with an ARPA
that rnnkit trains on a tiny word corpus: through the real kenlm module, and through
rnnkit.kenlm put in kenlm's place (`pyctcdecode.language_model.kenlm = rnnkit.kenlm`).
The beams and their scores must be the same. An rnnkit RNN then decodes the same matrix.
"""

from __future__ import annotations

import math

import kenlm
import numpy as np
import pyctcdecode.language_model
import pytest
from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

import rnnkit.kenlm as rk
from rnnkit.ngram import NgramModel
from rnnkit.train import TrainConfig, train

LABELS = ["", "a", "b", "c", "d", "e", " "]  # "" is the CTC blank
WORDS = ["bad", "bed", "cab", "dab", "add", "bead", "deed", "ace", "dace", "cede", "bee", "dee"]
SPOKEN = "bad cab bead"
# frames where the acoustics cannot tell a from e: the language model decides
CONFUSED = {0: "bd", 1: "ae", 4: "cd", 5: "ae", 8: "bd", 9: "ae", 10: "ae"}


def corpus() -> list[str]:
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(2, 6))) for _ in range(80)]
    return lines + [SPOKEN] * 5


def logits() -> np.ndarray:
    """Two frames per letter and a blank frame after each, seeded noise on every class."""
    rng = np.random.default_rng(11)
    frames = [c for letter in SPOKEN for c in (letter, letter, "")]
    matrix = rng.normal(0.0, 1.0, size=(len(frames), len(LABELS)))
    for t, label in enumerate(frames):
        heard = CONFUSED.get(t // 3, label) if label else [label]
        for letter in heard:
            matrix[t, LABELS.index(letter)] += 6.0
    return matrix


def decode(model, **options) -> list[tuple]:
    decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(LABELS),
                                   LanguageModel(model, WORDS, alpha=0.7, beta=1.0))
    return [(text, logit_score, lm_score)
            for text, _, _, logit_score, lm_score in decoder.decode_beams(logits(), beam_width=16, beam_prune_logp=-20.0, **options)]


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "words.arpa"
    NgramModel.train(corpus(), order=3, unit="word").write_arpa(path)
    return path


def test_same_beams_through_kenlm_and_rnnkit_kenlm(arpa, monkeypatch):
    real = decode(kenlm.Model(str(arpa)))
    monkeypatch.setattr(pyctcdecode.language_model, "kenlm", rk)
    ours = decode(rk.Model(str(arpa)))
    assert [beam[0] for beam in ours] == [beam[0] for beam in real]
    assert [beam[1:] for beam in ours] == [pytest.approx(beam[1:], abs=1e-4) for beam in real]
    # the language model picks the spoken text over the acoustically best one
    assert real[0][0] == SPOKEN != max(real, key=lambda beam: beam[1])[0] and len(real) > 5


def test_an_rnn_decodes_as_the_language_model(arpa, tmp_path, monkeypatch):
    """A word RNN in kenlm's place: a different beam list, every beam a valid decoding."""
    monkeypatch.setattr(pyctcdecode.language_model, "kenlm", rk)
    rnn = train(corpus(), None, TrainConfig(unit="word", hidden=16, bptt=8, batch=8, epochs=3, seed=1,
                                             threads=1))
    rnn.save(tmp_path / "rnn.model")
    ngram_beams = decode(rk.Model(str(arpa)))
    for prune_history in (False, True):  # prune_history reads `order` (unbounded for an RNN)
        beams = decode(rk.Model(tmp_path / "rnn.model"), prune_history=prune_history)
        assert beams and beams != ngram_beams
        assert all(set(text) <= set("".join(LABELS)) and text == " ".join(text.split()) for text, _, _ in beams)
        assert all(math.isfinite(logit) and math.isfinite(combined) for _, logit, combined in beams)
        assert [b[2] for b in beams] == sorted((b[2] for b in beams), reverse=True)
