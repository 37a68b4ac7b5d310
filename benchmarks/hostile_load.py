"""Hostile clients to mix into the load test (``benchmarks/load_test.py --hostile``).

* **fan-out**: each sends, back to back, the document that froze the server (every Node
  level asks feeders and readers, every Edge level source and target, one fragment per
  level, four levels) about one of the model's last heads; every answer must be a
  ``LIMIT_EXCEEDED`` refusal.
* **non-readers**: each asks for the model's JSON export over a socket with a small
  receive window, never reads a byte, and after ``hold_s`` seconds hangs up and does it
  again (the server closes a stalled one by itself after ``client_timeout_s``).

They run in threads of their own, beside the load test's asyncio clients, and count what
they did (:class:`AttackCounts`).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


def fan_out_document(model: str, target: str, levels: int = 4, top: int | None = None) -> str:
    """Every Node level asks feeders and readers (of ``top``, default 10), every Edge level
    source and target, one fragment per level, from node ``target`` of ``model``."""
    arg = "" if top is None else f", top: {top}"
    frags = []
    for i in range(levels):
        nxt = f"...N{i + 1}" if i + 1 < levels else "name"
        frags.append(f"fragment N{i} on Node {{ name feeders(kind: K{arg}) {{ ...E{i} }} "
                     f"readers(kind: K{arg}) {{ ...E{i} }} }}")
        frags.append(f"fragment E{i} on Edge {{ score source {{ {nxt} }} target {{ {nxt} }} }}")
    return (f'{{ node(model: "{model}", name: "{target}") {{ ...N0 }} }} ' + " ".join(frags))


@dataclass
class AttackCounts:
    fan_out_sent: int = 0
    fan_out_refused: int = 0  # answered 200 with LIMIT_EXCEEDED
    fan_out_other: list[str] = field(default_factory=list)
    fan_out_slowest_s: float = 0.0
    non_reader_connections: int = 0

    def line(self) -> str:
        return (f"fan-out: {self.fan_out_sent} sent, {self.fan_out_refused} refused with "
                f"LIMIT_EXCEEDED (slowest {self.fan_out_slowest_s * 1000:.0f} ms), "
                f"{len(self.fan_out_other)} other {self.fan_out_other[:2] or ''}; "
                f"non-readers: {self.non_reader_connections} connections that never read")


class Attackers:
    """``fan_out`` fan-out clients and ``non_readers`` non-reading clients against
    ``url`` until :meth:`stop`."""

    def __init__(self, url: str, host: str, port: int, model: str, target: str, *,
                 fan_out: int = 2, non_readers: int = 6, hold_s: float = 15.0) -> None:
        self.url, self.host, self.port = url, host, port
        self.document = fan_out_document(model, target)
        self.export = f"/export/{model}.json"
        self.hold_s = hold_s
        self.counts = AttackCounts()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = ([threading.Thread(target=self._fan_out, daemon=True)
                          for _ in range(fan_out)]
                         + [threading.Thread(target=self._non_reader, daemon=True)
                            for _ in range(non_readers)])

    def __enter__(self) -> Attackers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _fan_out(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    r = client.post("/graphql", json={"query": self.document})
                    codes = [e.get("extensions", {}).get("code")
                             for e in r.json().get("errors", [])]
                    refused = r.status_code == 200 and codes == ["LIMIT_EXCEEDED"]
                    what = f"HTTP {r.status_code} {codes}"
                except (httpx.HTTPError, ValueError) as exc:
                    refused, what = False, f"{type(exc).__name__}"
                took = time.perf_counter() - t
                with self._lock:
                    self.counts.fan_out_sent += 1
                    self.counts.fan_out_slowest_s = max(self.counts.fan_out_slowest_s, took)
                    if refused:
                        self.counts.fan_out_refused += 1
                    else:
                        self.counts.fan_out_other.append(what)

    def _non_reader(self) -> None:
        request = (f"GET {self.export} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n"
                   .encode())
        while not self._stop.is_set():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                sock.connect((self.host, self.port))
                sock.sendall(request)
                with self._lock:
                    self.counts.non_reader_connections += 1
                self._stop.wait(self.hold_s)  # never reads
            except OSError:
                self._stop.wait(1.0)
            finally:
                sock.close()


def hostile_pass(server: Any, clean: Any, args: argparse.Namespace, run_load: Callable,
                 shape_of: Callable) -> tuple[bool, dict[str, Any]]:
    """The load test's pass (``run_load``, ``shape_of``: load_test.py's) again with the
    attackers mixed in; whether the well-behaved clients got 0 errors and every fan-out
    was refused, and the figures. The p99 goal (within 2x of the ``clean`` pass) is
    reported, met or missed."""
    shape = shape_of(server.url, args.model)
    target = f"L{shape.n_layers - 1}H0"
    with Attackers(server.url, server.host, server.port, shape.model, target) as attackers:
        time.sleep(2.0)  # the non-readers have asked and stalled
        result = run_load(server, clients=args.clients, seconds=args.seconds,
                          max_requests=args.max_requests, seed=args.seed + 7,
                          model=args.model, warm=False)
    counts = attackers.counts
    ratio = result.p99_ms / clean.p99_ms if clean.p99_ms else float("nan")
    print(f"with 2 fan-out and 6 non-reading clients: {result.line()}")
    print(f"  {counts.line()}")
    clean_answers = result.errors == 0 and result.locked == 0
    refused = counts.fan_out_sent > 0 and counts.fan_out_refused == counts.fan_out_sent
    print(f"  well-behaved clients, zero errors: {'yes' if clean_answers else 'NO'} "
          f"{result.error_samples or ''}; every fan-out refused: {'yes' if refused else 'NO'}")
    print(f"  p99 {result.p99_ms:.1f} ms vs {clean.p99_ms:.1f} ms clean: {ratio:.2f}x "
          f"(goal <= 2x: {'met' if ratio <= 2 else 'missed'})")
    return clean_answers and refused, {**result.__dict__, "p99_ratio": ratio,
                                       "attacks": counts.__dict__}
