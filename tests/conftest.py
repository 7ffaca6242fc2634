"""Hypothesis profiles: derandomised in CI, a random search locally.

- ``ci`` (loaded when the environment variable ``CI`` is set and not ``0``/``false``/``no``/
  ``off``; ``.ci/run`` sets it): every run draws the same examples (``derandomize``), no
  example database is read or written, a failure prints the blob that reproduces it
  (``@reproduce_failure``), no deadline and no too-slow health check (CI machines are slow
  and noisy: timing must not decide a run). A rare draw can no longer fail one clone's run
  and pass the next; known-bad inputs are pinned with ``@example`` in the tests themselves.
- ``dev`` (otherwise): Hypothesis's default search, different examples each run, with the
  local ``.hypothesis/`` database replaying earlier failures.

``HYPOTHESIS_PROFILE=<name>`` overrides the choice (e.g. ``HYPOTHESIS_PROFILE=dev`` to search
under ``CI=true``). Tests' own ``@settings(max_examples=...)`` still apply on top.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Hypothesis loads its own "ci" profile by itself whenever CI is in the environment (even
# CI=false), and a profile without a parent inherits the one loaded: both of ours start from
# Hypothesis's "default" so that "dev" really searches.
_BASE = settings.get_profile("default")
settings.register_profile("ci", _BASE, derandomize=True, database=None, print_blob=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.register_profile("dev", _BASE)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _truthy(os.environ.get("CI")) else "dev"))
