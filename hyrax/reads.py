"""A read-only view of the run config that remembers which keys its readers looked at.

Components receive the config this way (Hyrax's classes read their settings from it, e.g.
`config["model"]["HyraxCNN"]["output_classes"]`), so a key the user set that no constructor
parameter takes and nothing read can be reported instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class ConfigView(Mapping):
    """A nested, read-only mapping over a plain config dict; `reads` collects the dotted keys read."""

    def __init__(self, data: Mapping[str, Any], reads: set[str] | None = None, prefix: str = "") -> None:
        self._data, self._prefix = data, prefix
        self.reads: set[str] = reads if reads is not None else set()

    def _wrap(self, key: str, value: Any) -> Any:
        path = f"{self._prefix}{key}"
        self.reads.add(path)
        if isinstance(value, Mapping):
            return ConfigView(value, self.reads, f"{path}.")
        if isinstance(value, list):
            return tuple(self._wrap_item(path, v) for v in value)
        return value

    def _wrap_item(self, path: str, value: Any) -> Any:
        return ConfigView(value, self.reads, f"{path}.") if isinstance(value, Mapping) else value

    def __getitem__(self, key: str) -> Any:
        return self._wrap(key, self._data[key])

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.reads.add(f"{self._prefix}{key}")
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        for key in self._data:
            self.reads.add(f"{self._prefix}{key}")  # whoever walks the keys may use any of them
            yield key

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ConfigView({dict(self._data)!r})"


def was_read(key: str, reads: set[str]) -> bool:
    """Whether `key` (dotted) or anything inside it was read (passing a section through on the way to a
    key inside it is not reading that section's other keys)."""
    return key in reads or any(r.startswith(key + ".") for r in reads)
