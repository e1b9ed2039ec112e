"""A `trueup run` process (and a Prometheus) for the end-to-end tests: started, read, stopped."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from trueup.adapters.paper.broker import PaperBroker

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = check()
        except (OSError, ValueError) as e:  # not up yet, or a half-written answer
            last = e
        else:
            last = got
            if got:
                return got
        time.sleep(every)
    msg = f"timed out after {timeout}s waiting for {what}; last: {last!r}"
    raise AssertionError(msg)


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample in an exposition, or None when absent."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def paper_config(tmp: Path, *, period: float = 0.5, startup_delay: float = 1.5, extra: str = "") -> Path:
    path = tmp / "trueup.toml"
    path.write_text(
        f"""preset = "aggressive"
store = "sqlite:///{tmp / "trueup.db"}"
log_format = "json"
startup_delay = {startup_delay}
period = {period}
inflight_interval = {period}
[http]
port = 0
[accounts.paper]
broker = "paper"
account_id = "PAPER"
state = "{tmp / "paper.db"}"
position_policy = "alert"
seed = 11
faults = {{ drop = 0.2, duplicate = 0.2, delay = 0.2, reorder = 0.2 }}
step_every = 0.2
{extra}"""
    )
    return path


class Daemon:
    """`trueup run --config PATH` in its own process; stderr collected line by line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.lines: list[str] = []
        self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, our command
            [sys.executable, "-m", "trueup.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=config.parent,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(wait_for("the daemon to listen", self._port, timeout=30))
        self.base = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _port(self) -> str | None:
        if self.proc.poll() is not None:
            msg = f"trueup run exited {self.proc.returncode}: {self.lines[-5:]}"
            raise AssertionError(msg)
        for line in self.lines:
            if m := LISTENING.search(line):
                return m[1]
        return None

    def metrics(self) -> str:
        status, body = get(self.base + "/metrics")
        assert status == 200
        return body

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def shift(tmp: Path, symbol: str, qty: int) -> None:
    """A fault injected by hand: the paper broker's position moves without an order or a fill."""
    with PaperBroker(tmp / "paper.db", account="PAPER") as broker:
        broker.shift_position(symbol, Decimal(qty), Decimal(100))


class WebhookReceiver:
    """A stdlib HTTP server on 127.0.0.1 that answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.received = 0
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                box.received += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


class Prometheus:
    """Debian's prometheus binary on 127.0.0.1, scraping one target every second."""

    def __init__(self, tmp: Path, target: str, rules: Path) -> None:
        assert PROMETHEUS, (
            "prometheus is not installed (apt-get install -y prometheus; make test installs it)"
        )
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules.resolve()}
scrape_configs:
  - job_name: trueup
    static_configs:
      - targets: ["{target}"]
"""
        )
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(  # noqa: S603 - the system's prometheus binary
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for("prometheus to be ready", lambda: get(self.base + "/-/ready")[0] == 200, timeout=60)

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = get(self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, body
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
