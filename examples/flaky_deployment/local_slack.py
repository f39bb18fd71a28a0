"""A local stand-in for Slack, and the ``tripwire`` command with its Slack plugin pointed at it.

1. ``SlackReceiver``: an HTTP server on 127.0.0.1 answering like Slack's incoming-webhook endpoint
   (``200 ok``) and keeping every POST (path, body), for the demo and its test; no Slack workspace.
2. ``python local_slack.py RECEIVER_URL ARGS...`` runs ``tripwire ARGS...`` (``server start`` here) with
   apprise's Slack plugin sending to ``RECEIVER_URL/services/...`` instead of https://hooks.slack.com
   (``NotifySlack.webhook_url``; nothing else changes). Demo only: with a real workspace run
   ``tripwire server start`` itself and store your real webhook in the block.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SlackReceiver", "main"]


class SlackReceiver:
    """Answers "ok" to every POST and keeps (path, body); thread-safe to read with ``messages()``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def messages(self) -> list[str]:
        """Each message received as one line: every ``text`` of Slack's JSON payload, else the raw body."""
        out = []
        for _, body in list(self.received):
            try:
                out.append(" | ".join(_texts(json.loads(body))))
            except ValueError:
                out.append(body.decode(errors="replace"))
        return out

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _texts(value: Any) -> list[str]:
    """The ``text`` strings of a Slack payload, in order (blocks and attachments nest them)."""
    if isinstance(value, dict):
        own = value.get("text")
        found = [own] if isinstance(own, str) else []
        return found + [t for v in value.values() if v is not own for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def main(argv: list[str]) -> None:
    """``local_slack.py RECEIVER_URL ARGS...``: ``tripwire ARGS...`` sending Slack messages locally."""
    from apprise.plugins.slack import NotifySlack

    from tripwire.cli.main import app

    receiver_url, *args = argv
    NotifySlack.webhook_url = f"{receiver_url.rstrip('/')}/services"  # demo only (note 2)
    app(args=args, prog_name="tripwire")


if __name__ == "__main__":
    main(sys.argv[1:])
