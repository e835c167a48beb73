"""Domain exceptions. Each subclasses a builtin so callers can catch either.

The CLI catches `RnnkitError` at the command boundary and prints its message as a
one-line `Error: ...`; nothing below the CLI prints.
"""


class RnnkitError(Exception):
    """Base class for every error rnnkit raises on purpose."""


class KernelError(RnnkitError, ValueError):
    """The C kernel (or its wrapper) rejected its arguments."""


class CorpusError(RnnkitError, ValueError):
    """A text file cannot be used: missing, empty, binary or not UTF-8."""


class ModelFileError(RnnkitError, ValueError):
    """A model file is missing, corrupt, truncated, of a future version or of the wrong kind."""


class ArpaError(ModelFileError):
    """An ARPA file is malformed; the message names the line."""


class VocabularyError(RnnkitError, ValueError):
    """A token or id is outside the model's vocabulary."""


class ConfigError(RnnkitError, ValueError):
    """A setting is out of range: order, smoothing, unit, k, pruning, sizes."""


class OutputError(RnnkitError, ValueError):
    """An output file cannot or must not be written: not a regular file, one of the
    command's inputs, read-only, or the write failed."""
