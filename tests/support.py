"""Shared test helpers: a real uvicorn server in a thread on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


class Server:
    """uvicorn serving an app in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def gql(self, query: str, variables: dict | None = None, **kw: Any) -> dict:
        r = self.client.post("/graphql", json={"query": query, "variables": variables}, **kw)
        assert r.headers["content-type"] == "application/json"
        return r.json()

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
