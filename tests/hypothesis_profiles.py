"""Hypothesis profiles: `suite` (small, derandomized: `make test` stays fast and reproducible)
and `fuzz` (large, random: `make fuzz`), chosen by HYPOTHESIS_PROFILE.

FUZZ_EXAMPLES sets the fuzz profile's examples per property (500 unless set). A property that
costs a database write per example asks for a fraction of the profile's count via `examples()`.
"""

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 500)

# Properties share function-scoped fixtures (an API client, settings) across their examples
# on purpose; nothing is persisted between runs (the suite must not depend on past runs).
_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("suite", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "suite")


def examples(fraction: float = 1.0) -> int:
    """The loaded profile's example count scaled by `fraction` (at least 5)."""
    return max(5, int(settings.default.max_examples * fraction))
