"""User-facing errors: what went wrong, which config key it concerns, and how to fix it."""

from __future__ import annotations


class HyraxError(Exception):
    """A problem with the user's input that Hyrax reports in one message and exits with code 2.

    Example:
        >>> raise HyraxError("train.epochs must be positive", key="train.epochs", fix="set train.epochs=5")
    """

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.key = key
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """The message as printed to the user."""
        lines = [f"Error{f' in {self.key}' if self.key else ''}: {self.message}"]
        if self.fix:
            lines.append(f"Fix: {self.fix}")
        return "\n".join(lines)


class NonFiniteLossError(HyraxError):
    """The training loss became NaN or infinite."""
