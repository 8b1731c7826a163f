"""Where the team's shared test data lives: `../shared` beside the checkout, when present.

CI has it; a user's fresh clone does not, so tests that read it skip there.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"


def corpus_file(*parts: str) -> Path:
    """Return a path under shared/corpus, or skip the test when shared/ is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared/ is only beside CI and team checkouts)")
    return path
