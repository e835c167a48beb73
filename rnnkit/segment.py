"""The segmenters behind the morph and spm units: Kiwi morphemes and SentencePiece pieces.

Both packages are optional (`pip install 'rnnkit[ko]'`: kiwipiepy, whose model ships
as the kiwipiepy_model package, sentencepiece and protobuf, which sentencepiece needs to
say where each piece lies in the text). Without them a Tokenizer for these units says
which command installs them, in one line.

A segmenter cuts a line into *segments*: consecutive substrings of the line, so that
their concatenation is the line itself, whatever the segmenter normalises internally.
units.py turns segments into units (the space rule lives there).

    Kiwi           each token's span (start, len in the NFC line), and the space just
                   before it if there is one, is a cut; tokens whose spans overlap (a
                   contraction: 했 = 하 + 었, 아닌 = 아니 + ㄴ) make one segment, so a
                   segment is never smaller than a syllable Kiwi analysed as a whole.
                   Text between tokens (other spaces) is a segment of its own.
    SentencePiece  each piece's span (begin, end: UTF-8 byte offsets in the line) is a
                   cut, so a piece's *surface* is the segment, not its normalised form
                   (a model trained with NFKC still gives back the original characters);
                   text a piece does not cover (spaces the model drops) is a segment.

A Kiwi tokenizer is identified by kiwipiepy's model type (recorded with the package
version: another version may analyse some lines differently); a SentencePiece one by
its model's bytes, which travel in the rnnkit model file.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import re
from typing import Sequence

import numpy as np

from .errors import ConfigError, ModelFileError

INSTALL = "pip install 'rnnkit[ko]'"
SPM_TYPES = ("unigram", "bpe")
# SentencePiece's advice for languages with many characters (Korean, Chinese, Japanese):
# the rarest 0.05% of character occurrences are left out of the pieces (they stay in the
# text as segments of their own).
SPM_CHARACTER_COVERAGE = 0.9995
MAX_SPM_VOCAB = 1_000_000
KIWI_MODEL_TYPE = "cong"   # Kiwi's default model since kiwipiepy 0.22, named so every file records it
# what each unit imports: module, and the package that installs it
PACKAGES = {"morph": [("kiwipiepy", "kiwipiepy")],
            "spm": [("sentencepiece", "sentencepiece"), ("google.protobuf", "protobuf")]}


def require(module: str, package: str, unit: str):
    """Import `module` or say, in one line, which command installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"unit {unit!r} needs the {package} package, which is not installed: "
                          f"{INSTALL}") from None


def cut(sequence, spans: Sequence[tuple[int, int]]) -> list:
    """`sequence` (str or bytes) cut at the boundaries of `spans` (start, end); spans
    that overlap are one piece, and what lies between spans is a piece too. The pieces
    are consecutive and cover the whole sequence, by construction."""
    cuts, group_end = [0], 0
    for start, end in sorted(spans):
        if start >= group_end:      # no overlap with the spans before: a boundary on each side
            cuts += [group_end, start]
        group_end = max(group_end, end)
    cuts += [group_end, len(sequence)]
    bounds = sorted({min(max(c, 0), len(sequence)) for c in cuts})
    return [sequence[a:b] for a, b in zip(bounds, bounds[1:])]


def require_unit(unit: str) -> None:
    """Check, before any work, that the packages a unit needs are installed."""
    for module, package in PACKAGES.get(unit, ()):
        require(module, package, unit)


# ---------------------------------------------------------------- Kiwi

@functools.lru_cache(maxsize=2)
def _kiwi(model_type: str):
    """One Kiwi per model type and process: loading its model takes about a second."""
    kiwipiepy = require("kiwipiepy", "kiwipiepy", "morph")
    try:
        return kiwipiepy.Kiwi(model_type=model_type)
    except (ValueError, OSError, RuntimeError) as exc:
        raise ConfigError(f"kiwipiepy {kiwipiepy.__version__} cannot load its {model_type!r} model: "
                          f"{_first_line(exc)}") from None


class KiwiSegmenter:
    """Morphemes from Kiwi (kiwipiepy), at Kiwi's default analysis options."""

    def __init__(self, settings: dict | None = None):
        settings = settings or {}
        self.kiwipiepy = require("kiwipiepy", "kiwipiepy", "morph")
        self.model_type = settings.get("model_type", KIWI_MODEL_TYPE)

    def _analyser(self):
        return _kiwi(self.model_type)

    def key(self) -> tuple:
        return ("kiwi", self.model_type)

    def settings(self) -> dict:
        return {"segmenter": "kiwi", "model_type": self.model_type, "kiwipiepy": self.kiwipiepy.__version__}

    def arrays(self) -> dict:
        return {}

    def segments_many(self, lines: list[str]) -> list[list[str]]:
        # Kiwi analyses a list of lines on its worker threads; the result is the same
        tokens = self._analyser().tokenize(lines) if lines else []
        return [cut(line, [(_with_space_before(line, t.start), t.start + t.len) for t in analysed])
                for line, analysed in zip(lines, tokens)]


def _with_space_before(line: str, start: int) -> int:
    """A morpheme's segment starts with the space (U+0020) before it, if there is one."""
    return start - 1 if start > 0 and line[start - 1] == " " else start


# ---------------------------------------------------------------- SentencePiece

class SentencePieceSegmenter:
    """Pieces of a SentencePiece model (its bytes are the tokenizer's identity)."""

    def __init__(self, model: bytes, settings: dict | None = None, source: str = "the model file"):
        require_unit("spm")   # protobuf too: the pieces' offsets come as a protobuf
        spm = require("sentencepiece", "sentencepiece", "spm")
        self.model = bytes(model)
        self.source = (settings or {}).get("source", source)
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(self.model)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelFileError(f"{source}: not a SentencePiece model ({_first_line(exc)})") from None

    def key(self) -> tuple:
        return ("spm", self.model)

    def settings(self) -> dict:
        return {"segmenter": "sentencepiece", "pieces": self.processor.GetPieceSize(), "source": self.source}

    def arrays(self) -> dict:
        return {"spm_model": np.frombuffer(self.model, dtype=np.uint8)}

    def segments_many(self, lines: list[str]) -> list[list[str]]:
        encoded = self.processor.encode(lines, out_type="proto") if lines else []
        out = []
        for line, text in zip(lines, encoded):
            spans = [(piece.begin, piece.end) for piece in text.pieces]   # UTF-8 byte offsets
            out.append([part.decode("utf-8") for part in cut(line.encode("utf-8"), spans)])
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def train_sentencepiece(lines: list[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """A SentencePiece model trained on `lines`, as bytes.

    Trained on the text exactly as given (no normalisation rule, spaces kept as they are,
    no dummy space at the start of a line), so its pieces are pieces of the text. The
    vocabulary size is a soft limit: a small corpus gets the pieces it can support.
    """
    spm = require("sentencepiece", "sentencepiece", "spm")
    if model_type not in SPM_TYPES:
        raise ConfigError(f"SentencePiece model type must be one of {', '.join(SPM_TYPES)}; got {model_type!r}")
    if not 1 <= vocab_size <= MAX_SPM_VOCAB:
        raise ConfigError(f"the SentencePiece vocabulary size must be in 1..{MAX_SPM_VOCAB:,}, got {vocab_size}")
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        raise ConfigError("cannot train a SentencePiece model on a text without non-blank lines")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, character_coverage=SPM_CHARACTER_COVERAGE,
            hard_vocab_limit=False, bos_id=-1, eos_id=-1, unk_id=0,
            num_threads=os.cpu_count() or 1, minloglevel=2)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ConfigError(_spm_failure(exc, vocab_size)) from None
    return model.getvalue()


def _spm_failure(exc: BaseException, vocab_size: int) -> str:
    """SentencePiece's reason in rnnkit's terms where we know it: its own message names
    its own options (vocab_size, character_coverage), which rnnkit users never set."""
    reason = _first_line(exc)
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", reason)
    if needed:
        return (f"--spm-vocab {vocab_size} is too small: SentencePiece keeps every character of this "
                f"corpus as a piece ({int(needed.group(1)):,} of them); give at least that many")
    return f"SentencePiece training failed: {reason}"
