"""ClickHouse's errors as its HTTP interface reports them: code, text, HTTP status."""

from __future__ import annotations

import re

ERROR_CODE = re.compile(r"Code: (\d+)\.")

# the codes this server raises itself (the engine raises the rest)
UNKNOWN_SETTING = 115
SYNTAX_ERROR = 62
BAD_ARGUMENTS = 36
READONLY = 164
CANNOT_DECOMPRESS = 271
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
INVALID_SESSION_TIMEOUT = 374
AUTHENTICATION_FAILED = 516
NOT_IMPLEMENTED = 48
STD_EXCEPTION = 1001
UNKNOWN_TABLE = 60  # the engine's: the server answers some of them itself (system_tables)

#: ClickHouse's HTTP status for an exception code (everything else is 500), as its HTTPHandler maps them
HTTP_STATUS = {
    62: 400, 36: 400, 27: 400, 26: 400, 33: 400, 38: 400, 41: 400, 72: 400, 117: 400, 130: 400, 456: 400, 457: 400,
    115: 400, 271: 400, 374: 400, 6: 400, 69: 400, 53: 400,
    60: 404, 81: 404, 47: 404, 46: 404, 16: 404, 372: 404,
    164: 403, 497: 403, 516: 403, 192: 403, 193: 403, 194: 403,
    159: 504, 209: 504, 210: 504,
    202: 503, 373: 500,
}  # fmt: skip


class ClickHouseError(Exception):
    """An error to answer the way ClickHouse does: its code, its text, its HTTP status."""

    def __init__(self, code: int, message: str, name: str = "") -> None:
        self.code = code
        text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message}"
        if name and not text.rstrip().endswith(")"):
            text += f" ({name})"
        super().__init__(text)

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """chDB raises its own types with ClickHouse's text; anything else is a coded std exception."""
        if isinstance(exc, ClickHouseError):
            return exc
        text = str(exc).strip()
        start = text.find("Code: ")
        text = text[start:] if start > 0 else text
        match = ERROR_CODE.search(text)
        if match is None:
            return cls(STD_EXCEPTION, f"{type(exc).__name__}: {text}", "STD_EXCEPTION")
        return cls(int(match.group(1)), text)

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)
