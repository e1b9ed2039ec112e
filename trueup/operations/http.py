"""The HTTP endpoint of `trueup run`, on aiohttp (default 127.0.0.1 only).

- ``/metrics``: Prometheus text format (gauges of current state refreshed first);
- ``/healthz``: 200 while the process's event loop is responsive (its heartbeat is recent);
- ``/readyz``: 200 once every account's startup reconciliation ended with its gate READY,
  else 503 with each account's gate and reasons;
- ``/v1/gate/{account}``: 200 with the gate JSON when READY, 503 with the gate's reasons
  while RECONCILING or BLOCKED (ask it before sending a new order); 404 for an account
  this daemon does not reconcile;
- ``/v1/status``: the JSON of ``trueup status``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Final

try:
    from aiohttp import web
except ImportError as e:  # pragma: no cover - the ops extra is not installed
    msg = "trueup's HTTP endpoint needs the ops extra: pip install 'trueup[ops]'"
    raise ImportError(msg) from e

import msgspec

from trueup.blocking import in_worker_thread
from trueup.domain.gate import GateState
from trueup.ledger import Ledger
from trueup.operations.metrics import CONTENT_TYPE, Metrics
from trueup.operations.status import gate_report, status_report

__all__ = ["HEARTBEAT_STALE_SECONDS", "Endpoint"]

HEARTBEAT_STALE_SECONDS: Final = 10.0
"""A heartbeat older than this means the event loop is stuck: /healthz answers 503."""


class Endpoint:
    """The routes, over the daemon's ledger, metrics and startup state."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        *,
        accounts: dict[str, str],
        started: Callable[[str], bool],
        heartbeat: Callable[[], float],
    ) -> None:
        """`accounts`: account id by config name; `started(account_id)`: startup reconciliation done."""
        self.ledger = ledger
        self.metrics = metrics
        self.accounts = accounts
        self.started = started
        self.heartbeat = heartbeat
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/metrics", self.scrape),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/v1/gate/{account}", self.gate),
                web.get("/v1/status", self.status),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; the port bound (for port 0)."""
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def scrape(self, _: web.Request) -> web.Response:
        """The metrics, gauges of current state read first."""
        await in_worker_thread(self.metrics.refresh, self.ledger)
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, _: web.Request) -> web.Response:
        """200 while the loop's heartbeat is recent."""
        age = time.monotonic() - self.heartbeat()
        ok = age < HEARTBEAT_STALE_SECONDS
        return web.json_response(
            {"alive": ok, "heartbeat_age_seconds": round(age, 3)}, status=200 if ok else 503
        )

    async def readyz(self, _: web.Request) -> web.Response:
        """200 once every account started up with its gate READY."""

        def judge() -> dict[str, Any]:
            out = {}
            for account in self.accounts.values():
                report = gate_report(self.ledger, account)
                if not self.started(account):
                    report["gate"] = str(GateState.RECONCILING)
                    report["reasons"] = ["startup reconciliation not finished", *report["reasons"]]
                out[account] = report
            return out

        gates = await in_worker_thread(judge)
        ready = all(g["gate"] == GateState.READY for g in gates.values())
        return web.json_response({"ready": ready, "accounts": gates}, status=200 if ready else 503)

    async def gate(self, request: web.Request) -> web.Response:
        """One account's gate: 200 when READY, 503 with its reasons otherwise."""
        name = request.match_info["account"]
        account = self.accounts.get(name, name if name in self.accounts.values() else None)
        if account is None:
            return web.json_response({"error": f"no account {name!r} in this daemon"}, status=404)
        report = await in_worker_thread(gate_report, self.ledger, account)
        if not self.started(account):
            report["gate"] = str(GateState.RECONCILING)
            report["reasons"] = ["startup reconciliation not finished", *report["reasons"]]
        return web.json_response(report, status=200 if report["gate"] == GateState.READY else 503)

    async def status(self, _: web.Request) -> web.Response:
        """The JSON of `trueup status`."""
        report = await in_worker_thread(status_report, self.ledger, None)
        return web.json_response(report, dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(msgspec.to_builtins(value), default=str)
