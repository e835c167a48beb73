"""What the benchmark scripts share: where the corpora are, and how a script skips.

The scripts import the *installed* rnnkit (`pip install .`, or `pip install -e .` in a
checkout). Nothing here puts the source tree on sys.path: a script's own folder comes
first there, and it holds no package, so a script runs the same from any directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The `shared` folder beside the repository (../shared), or $RNNKIT_SHARED.
SHARED = Path(os.environ.get("RNNKIT_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def data_dir(corpus: str) -> Path:
    return SHARED / "data" / corpus


def first_missing(*paths: Path) -> Path | None:
    """The first of `paths` that does not exist, or None when all do."""
    return next((path for path in paths if not path.exists()), None)


def skip(missing: str) -> int:
    """Say on one stderr line what is missing; the exit status for a clean skip (0)."""
    print(f"skipped: {missing}", file=sys.stderr, flush=True)
    return 0


def positive_int(text: str) -> int:
    """argparse type for counts and sizes that must be at least 1."""
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for sizes where 0 means "none"."""
    return whole_number(text, 0)


def whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return value
