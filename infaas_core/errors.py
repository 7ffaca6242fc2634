"""Errors raised by INFaaS-py.

Hierarchy (every error carries the context needed to act on it)::

    InfaasError                      base of everything this project raises on purpose
    ├── InputError (ValueError)      a bad input file: profile table, trace  -> "<path>:<line>: <column>: <reason>"
    ├── ConfigError (ValueError)     a bad configuration value or an unknown registry name -> "<key>: <reason>"
    ├── NoFeasibleVariant            a query no variant can satisfy (carries the reason and a suggestion)
    └── BackendError                 a backend could not carry out an action (e.g. a worker process died)

``assert`` is used only for internal invariants, never for user input.
"""

from __future__ import annotations


class InfaasError(Exception):
    """Base class of every error INFaaS-py raises on purpose."""


class InputError(InfaasError, ValueError):
    """A bad input file. The message starts ``<path>:<line>:`` and names the column and the reason."""

    def __init__(self, path: str, line: int | None, column: str | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = f"{self.path}:{line if line is not None else 0}:"
        what = f" column '{column}':" if column else ""
        super().__init__(f"{where}{what} {reason}")


class ConfigError(InfaasError, ValueError):
    """A bad configuration value; the message names the key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class UnknownNameError(ConfigError):
    """A name looked up in a registry (policy, latency model, trace kind...) that does not exist."""

    def __init__(self, family: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.family = family
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(family, f"unknown name '{name}'; known: {', '.join(self.known)}")


class NoFeasibleVariant(InfaasError):
    """No variant can satisfy a query's requirements.

    ``reason`` says why; ``suggestion`` names the nearest requirement that could be met
    (as the paper's ``suggestVariant`` does), or is ``None``.
    """

    def __init__(self, reason: str, suggestion: str | None = None) -> None:
        self.reason = reason
        self.suggestion = suggestion
        msg = reason if suggestion is None else f"{reason} (nearest feasible: {suggestion})"
        super().__init__(msg)


class BackendError(InfaasError):
    """A backend could not carry out an action (a worker died, a load failed...)."""
