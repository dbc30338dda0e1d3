"""Errors that tell the operator which setting is wrong and what to do about it."""

from __future__ import annotations


class NovaError(RuntimeError):
    """Base class for errors meant to be read by a person, not parsed."""


class ConfigError(NovaError):
    """A setting is missing or has a value that cannot work."""

    def __init__(self, setting: str, value: object, problem: str, hint: str = "") -> None:
        self.setting = setting
        self.value = value
        message = f"{setting}={value!r}: {problem}"
        if hint:
            message += f" — {hint}"
        super().__init__(message)


class ServiceUnavailable(NovaError):
    """A configured service did not answer; names the setting that points at it."""

    def __init__(self, service: str, address: str, setting: str, detail: str, timeout_s: float) -> None:
        self.service = service
        self.address = address
        self.setting = setting
        super().__init__(
            f"{service} at {address} ({setting}) did not answer within {timeout_s:g} s: {detail} "
            "— is `nova stack up` running, or does the setting point at the right server?"
        )
