"""One error tree; each family carries its documented exit code (docs/cli.md, "Exit codes").

The CLI catches SlotctlError in exactly one place and prints its message as one
line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

OK = 0
DEPLOY_FAILED = 1  # rolled back, host healthy on the old slot
BAD_INPUT = 2  # bad input or configuration, nothing changed
AUDIT_FAILED = 3
LOCKED = 4
QUIESCE_TIMEOUT = 5
NEEDS_OPERATOR = 6

# Worst first: the exit code of a run over several hosts is its worst host's.
SEVERITY = (NEEDS_OPERATOR, LOCKED, QUIESCE_TIMEOUT, DEPLOY_FAILED, AUDIT_FAILED, BAD_INPUT, OK)


def worst(codes: list[int]) -> int:
    return min(codes, key=SEVERITY.index) if codes else OK


class SlotctlError(Exception):
    exit_code = BAD_INPUT

    def __init__(self, message: str) -> None:
        # One line, always: a key or value from the user's input may hold a newline (the fuzzer found one).
        message = " ".join(part.strip() for part in message.splitlines()) if "\n" in message or "\r" in message else message
        super().__init__(message)
        self.message = message


class InputError(SlotctlError):
    """The user's inventory, arguments, repository or lockfile are wrong."""

    exit_code = BAD_INPUT


class BuildError(SlotctlError):
    """Building the inactive slot failed; the active slot was never touched."""

    exit_code = BAD_INPUT


class SystemdError(SlotctlError):
    """systemd refused or could not be reached."""

    exit_code = NEEDS_OPERATOR


class SandboxError(SlotctlError):
    exit_code = 1
