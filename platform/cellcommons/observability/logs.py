"""Structured JSON log lines, one per request, with a request id and the principal's institution.

Never logged: tokens, Authorization headers, cookies, secrets, presigned URLs. The access line is built from an
allowlist (path *template*, never the raw path or query string, and no headers but the request id); the
formatter also scrubs bearer tokens, JWTs and signed query strings from every message as a second line of defence
against a careless `log.info(f"... {url}")` elsewhere.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

ACCESS_LOGGER = "cellcommons.access"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SCRUB = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # a presigned URL: keep scheme, host and path (useful), drop the whole query string (the credential)
    (re.compile(r"\?[^\s\"']*(?i:x-amz-signature|x-amz-credential|signature=)[^\s\"']*"), "?[redacted]"),
]
# Fields a log record may carry into the JSON line (passed with `extra=`); anything else is ignored.
FIELDS = ("request_id", "method", "path", "operation", "status", "duration_ms", "institution")


@dataclass
class RequestInfo:
    request_id: str
    method: str
    path: str = "unmatched"
    operation: str | None = None
    institution: str | None = None


_request: ContextVar[RequestInfo | None] = ContextVar("cellcommons_request", default=None)


def current_request() -> RequestInfo | None:
    return _request.get()


def bind(info: RequestInfo):
    """Make `info` the current request's; returns the token for `unbind`."""
    return _request.set(info)


def unbind(token) -> None:
    _request.reset(token)


def note_institution(slug: str | None) -> None:
    """Called where the principal is resolved, so the access line names who asked (the slug is not a secret)."""
    if (info := _request.get()) is not None:
        info.institution = slug


def request_id(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is short and plain (it is echoed and logged), else a fresh one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if (info := _request.get()) is not None:
            line["request_id"] = info.request_id  # so any line written during a request can be joined to it
        line.update({k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None})
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process, replacing uvicorn's own access log, which prints raw paths
    with their query strings (an OAuth callback's `code`, for one). Idempotent."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # uvicorn's plain-text handlers; the root's JSON handler takes over
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def access(info: RequestInfo, status: int, seconds: float) -> None:
    quiet = info.path in ("/metrics", "/healthz", "/readyz")  # probes and scrapes every few seconds: debug only
    logging.getLogger(ACCESS_LOGGER).log(
        logging.DEBUG if quiet else logging.INFO,
        "request",
        extra={
            "request_id": info.request_id,
            "method": info.method,
            "path": info.path,
            "operation": info.operation,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "institution": info.institution,
        },
    )
