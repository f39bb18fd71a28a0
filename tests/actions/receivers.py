"""Local receivers for action tests: an HTTP server with scripted answers and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port

__all__ = ["HttpReceiver", "Received", "SmtpReceiver", "body_text"]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops connections of concurrent runners (1 s SYN retries)


@dataclass(frozen=True)
class Received:
    """One request the HTTP receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a thread; answers ``answers`` in order, then
    ``default``; records every request."""

    def __init__(self, answers: Sequence[int] = (), default: int = 200, reply: bytes = b"ok") -> None:
        self.delay_s = 0.0  # how long to wait before answering
        self.answers = list(answers)
        self.default = default
        self.reply = reply
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._record(Received(self.command, self.path, dict(self.headers), body))
                time.sleep(receiver.delay_s)  # a slow receiver (this is its own thread)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(receiver.reply)))
                self.end_headers()
                self.wfile.write(receiver.reply)

            do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, request: Received) -> int:
        with self._lock:
            self.requests.append(request)
            return self.answers.pop(0) if self.answers else self.default

    def received(self, path_prefix: str = "") -> list[Received]:
        """The requests so far (whose path starts with ``path_prefix``)."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Collect:
    def __init__(self, mails: list[EmailMessage], lock: threading.Lock) -> None:
        self.mails = mails
        self.lock = lock

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.mails.append(mail)  # type: ignore[arg-type]
        return "250 OK"


class SmtpReceiver:
    """A real SMTP server (aiosmtpd ``Controller``) on a free port, keeping every mail it gets."""

    def __init__(self) -> None:
        self.port = free_port()  # port=0 does not work with Controller (TECHNOTES §5)
        self.mails: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.controller = Controller(_Collect(self.mails, self._lock), hostname="127.0.0.1", port=self.port)

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.mails)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def body_text(mail: EmailMessage) -> str:
    """The plain-text body of a mail (apprise may send HTML too)."""
    part = mail.get_body(preferencelist=("plain", "html"))
    return "" if part is None else str(part.get_content())
