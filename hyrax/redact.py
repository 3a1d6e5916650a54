"""Secrets kept out of everything Hyrax writes: logs, MLflow params, tags and artifacts.

A tracking URI may carry a password (`http://user:pw@host`) or a token in its query
(`?token=...`). `redact` masks them in any text written to MLflow or printed; `install_log_redaction`
does it for every log record of the process, Hydra's own included (its launcher logs each job's
overrides), so log calls pass secrets-bearing values as they are. `hyrax-run`, its jobs and the
`Hyrax` API install it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# user:password@ in a URL, and the values of query or key=value pairs whose names say "secret".
# (Hydra escapes the colons of an override's value: `http\://alice\:pw@host`.)
_USERINFO = re.compile(r"(?P<lead>//[^:/@\s'\"]*?\\?:)(?P<secret>[^@/\s'\"]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<name>\b[\w-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key))"
    r"(?P<sep>=|%3D|:\s*)(?P<secret>[^&\s'\",;}]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with URL passwords and the values of token/password/secret/api-key parameters masked."""
    if not isinstance(text, str) or not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['lead']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)


def redact_values(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a flat mapping with every string value redacted."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}


def install_log_redaction() -> None:
    """Mask secrets in every log record this process makes from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "hyrax_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return record

    factory.hyrax_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
