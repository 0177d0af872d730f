"""User-facing errors.

Library code raises :class:`UserError` (a ``ValueError``) for bad input that a user can fix; the CLI turns it
into one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from a user: a one-line, actionable message."""


def unknown_choice(kind: str, value: object, valid: Iterable[object]) -> UserError:
    """Error for a name that is not one of ``valid``; the message lists the valid choices."""
    choices = ", ".join(str(v) for v in valid)
    return UserError(f"unknown {kind} {value!r}; valid choices: {choices}")


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
