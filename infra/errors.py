"""Errors that belong to the command line rather than to the contracts of topics/.

A run being interrupted by its user is something only a long-running command (demo, up) can see
and only the CLI reacts to (exit 130, no traceback), so it lives here, above the packages that
define the wire contracts.
"""

from __future__ import annotations

from topics.errors import TierflowError


class Interrupted(TierflowError):
    """The user interrupted a run (Ctrl-C); what it started has been stopped."""
