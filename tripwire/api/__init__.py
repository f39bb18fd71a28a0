"""The HTTP API (FastAPI): events intake, history and live tail, health; bearer-token auth."""

from __future__ import annotations

from tripwire.api.app import close_live_streams, create_app

__all__ = ["close_live_streams", "create_app"]
