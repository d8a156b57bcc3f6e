"""Health and Prometheus metrics of the verifier daemon, served on a loopback port.

`GET /healthz` answers JSON (`{"status": "ok"|"degraded"|"stopping", ...}`, HTTP 200, or 503 while the
chain has not answered for a while); `GET /metrics` answers the Prometheus text format (0.0.4). Hand-written
(a few counters and gauges) so the daemon needs no extra dependency.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LabelKey = tuple[tuple[str, str], ...]


class Metrics:
    """Counters and gauges with optional labels; thread-safe."""

    def __init__(self, prefix: str = "proofreg_verifier") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = {}
        self._kinds: dict[str, str] = {}
        self._help: dict[str, str] = {}

    def declare(self, name: str, kind: str, help_text: str) -> None:
        with self._lock:
            self._kinds[name] = kind
            self._help[name] = help_text
            self._values.setdefault(name, {})

    def inc(self, metric: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(metric, {})
            series[key] = series.get(key, 0.0) + amount

    def set(self, metric: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values.setdefault(metric, {})[key] = float(value)

    def get(self, metric: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(metric, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                full = f"{self.prefix}_{name}"
                if name in self._help:
                    lines.append(f"# HELP {full} {self._help[name]}")
                    lines.append(f"# TYPE {full} {self._kinds[name]}")
                for key, value in sorted(self._values[name].items()):
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{full}{{{labels}}} {value:g}" if labels else f"{full} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HealthServer:
    """`/healthz` and `/metrics` on 127.0.0.1 (never another interface: they are for the local operator)."""

    def __init__(self, port: int, metrics: Metrics, health: Callable[[], tuple[int, dict[str, Any]]],
                 host: str = "127.0.0.1") -> None:
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    code, body, ctype = 200, metrics_ref.render().encode(), "text/plain; version=0.0.4"
                elif self.path.startswith("/healthz") or self.path == "/":
                    code, data = health_ref()
                    body, ctype = json.dumps(data, sort_keys=True).encode(), "application/json"
                else:
                    code, body, ctype = 404, b"not found\n", "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
