"""Findings already reported and pinned by an xfail(strict=True) test in
tests/test_robustness.py: the random tests and the fuzz campaign count a case
whose every problem matches one of these as "known" instead of failing on it
again. Remove an entry when its bug is fixed (its xfail test then fails: XPASS)."""

from __future__ import annotations

import re
from typing import Any

#: (label, regular expression every problem of the case must match)
KNOWN: list[tuple[str, str]] = [
    ("A: unaligned MMIO access split into several exits (max-exits overrun)",
     r"^run: stopped for max-exits \d+ after \d+ exits$"),
    ("B: (--fast only) the rest of the block runs after the exit that ended the run",
     r"^run: \d+ exit\(s\) logged after the exit that ended the run"),
]


def match(result: dict[str, Any]) -> str | None:
    """The label of the known finding `result` is, or None."""
    problems = result.get("problems") or []
    if not problems:
        return None
    for label, pattern in KNOWN:
        if all(re.search(pattern, p) for p in problems):
            return label
    return None
