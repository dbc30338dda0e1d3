"""Errors that tell the operator which setting is wrong and what to do about it, never its secrets."""

from __future__ import annotations

import re

# names of configuration keys whose values are secrets (librdkafka, DSNs, URLs, cloud credentials)
_SECRET_NAME = r"[\w.\-]*(?:password|passwd|pwd|secret|token|api[_.\-]?key|access[_.\-]?key|credentials?)[\w.\-]*"
_SECRETS = (
    # scheme://user:password@host  (URLs and DSNs)
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^:/@\s'\"]*:)[^@\s'\"]+@"), r"\1***@"),
    # "sasl.password": "..."  /  'sasl.password': '...'  (JSON, Python reprs)
    (re.compile(rf"(?i)(\"{_SECRET_NAME}\"\s*:\s*\")(?:[^\"\\]|\\.)*\""), r'\1***"'),
    (re.compile(rf"(?i)('{_SECRET_NAME}'\s*:\s*')(?:[^'\\]|\\.)*'"), r"\1***'"),
    # ?password=... &token=...  and libpq keyword form password=...
    (re.compile(rf"(?i)(\b{_SECRET_NAME}\s*=\s*)[^&\s'\",;]+"), r"\1***"),
    # Authorization: Bearer ...
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/=\-]+"), r"\1***"),
)


_SECRET_SETTING = re.compile(rf"(?i){_SECRET_NAME}")


def redact_secrets(text: str) -> str:
    """`text` with passwords, tokens and keys masked: URLs, DSNs, query strings, JSON and reprs."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class NovaError(RuntimeError):
    """Base class for errors meant to be read by a person, not parsed."""


class ConfigError(NovaError):
    """A setting is missing or has a value that cannot work; secrets in the value are masked."""

    def __init__(self, setting: str, value: object, problem: str, hint: str = "") -> None:
        self.setting = setting
        if _SECRET_SETTING.search(setting):  # the whole value is the secret
            value = "***"
        self.value = redact_secrets(value) if isinstance(value, str) else value
        message = f"{setting}={value!r}: {problem}"
        if hint:
            message += f" — {hint}"
        super().__init__(redact_secrets(message))


class ServiceUnavailable(NovaError):
    """A configured service did not answer; names the setting that points at it."""

    def __init__(self, service: str, address: str, setting: str, detail: str, timeout_s: float) -> None:
        self.service = service
        self.address = redact_secrets(address)
        self.setting = setting
        super().__init__(
            redact_secrets(
                f"{service} at {address} ({setting}) did not answer within {timeout_s:g} s: {detail} "
                "— is `nova stack up` running, or does the setting point at the right server?"
            )
        )
