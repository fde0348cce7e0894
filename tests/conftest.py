"""Hypothesis runs derandomized by default so `make test` gives the same verdict on every machine.

Set `LEDGER_HYPOTHESIS=explore` to draw fresh random examples (and `LEDGER_FUZZ_EXAMPLES` for more
of them) when hunting for new failures.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("explore" if os.environ.get("LEDGER_HYPOTHESIS") == "explore" else "ci")
