"""A small local HTTP server standing in for a partner system (REDCap, Castor EDC) in the connector tests.

Subclasses answer requests in the partner's documented shapes (`answer`); the base adds what every test needs:
127.0.0.1 on a free port, a log of the requests, and scripted faults (`fail_next`), e.g. 429 with Retry-After.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from tests.sync.conftest import SLUG, recorder

from cellcommons.sync import service
from cellcommons.sync.resilience import RetryPolicy
from cellcommons.sync.runtime import SyncRuntime


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class Answer:
    status: int
    body: bytes | str | object = b""
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain; charset=utf-8")
        return json.dumps(self.body).encode(), self.headers.get("Content-Type", "application/json")


class PartnerServer:
    def __init__(self):
        self.requests: list[Request] = []
        self.faults: list[tuple[str, Answer]] = []  # (path prefix, answer), each used once
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                form = dict(parse_qsl(body)) if "form-urlencoded" in self.headers.get("Content-Type", "") else {}
                request = Request(self.command, parts.path, dict(parse_qsl(parts.query)), form, dict(self.headers))
                with server.lock:
                    server.requests.append(request)
                    answer = server._fault(request) or server.answer(request)
                payload, content_type = answer.payload()
                self.send_response(answer.status)
                for name, value in {**answer.headers, "Content-Type": content_type}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, path: str, answer: Answer) -> None:
        """Answer the next request whose path starts with `path` with `answer` (once)."""
        with self.lock:
            self.faults.append((path, answer))

    def _fault(self, request: Request) -> Answer | None:
        for index, (path, answer) in enumerate(self.faults):
            if request.path.startswith(path):
                del self.faults[index]
                return answer
        return None

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


THROTTLED = Answer(429, {"error": "too many requests"}, {"Retry-After": "2"})


async def register(env, name: str, connector: str, config: dict, secrets: dict[str, str]) -> None:
    """Add a source of the test institution the way `sync add-source` does (secrets sealed)."""
    async with env.database.unit_of_work() as session:
        await service.add_source(session, env.settings, name=name, connector=connector, institution_slug=SLUG,
                                 schedule="0 * * * *", config=config, secrets=secrets)  # fmt: skip


def recording_runtime(env, sleeps: list[float]) -> SyncRuntime:
    return SyncRuntime(
        env.database, env.settings, retry=RetryPolicy(attempts=3, base=0.1, cap=5), sleep=recorder(sleeps)
    )
