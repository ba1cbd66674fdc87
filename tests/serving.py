"""Start `adaptctl serve` in a subprocess for a test, and stop it: a free port on 127.0.0.1, the URL read
from its --json line, /health answered before the test talks to it, SIGTERM (then a kill) at the end.

    with served(run_dir) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

`served` yields a Server; its log (the server's stderr) is kept in a file and shown when start-up fails.
`start` returns at once, so that a test can build other things while the server imports and loads.
Tests that use an API endpoint (baselines, teachers, judges) can start one over any run this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    url: str                 # http://127.0.0.1:PORT
    base_url: str            # the OpenAI base URL: URL/v1
    model: str               # the served model name
    process: subprocess.Popen
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def get(self, path: str, api_key: str | None = None) -> tuple[int, dict]:
        return request(self.url + path, api_key=api_key)

    def post(self, path: str, body, api_key: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url + path, data, api_key=api_key, headers=headers)



def request(url: str, data: bytes | None = None, api_key: str | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a plain HTTP request; an error status is returned, not raised."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if api_key is not None:
        sent["Authorization"] = f"Bearer {api_key}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=sent), timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Starting:
    """A server process started but perhaps not ready yet: start one, do other work while it imports and
    loads (seconds), then ask for it with ready()."""

    def __init__(self, model_dir, args, api_key: str | None, env: dict | None):
        self.api_key = api_key
        self.log_file = Path(tempfile.mkstemp(prefix="adaptctl-serve-", suffix=".log")[1])
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adaptctl", "serve", str(model_dir), "--port", "0", "--json", *map(str, args)],
                stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})})
        self.server: Server | None = None

    def ready(self, timeout: float = 180) -> Server:
        """The running server, once it has announced its URL and answered /health."""
        if self.server is None:
            announced = _first_line(self.process, timeout)
            line = json.loads(announced) if announced else {}
            if "url" not in line:  # no line, or --json's {"status": "failed", ...}
                raise RuntimeError(f"adaptctl serve did not start (exit {self.process.poll()}): {line}\n"
                                   f"{self.log_file.read_text()}")
            self.server = Server(url=line["url"], base_url=line["base_url"], model=line["model"],
                                 process=self.process, log_file=self.log_file)
            status, _ = self.server.get("/health", api_key=self.api_key)
            assert status == 200, f"/health answered {status}:\n{self.server.log()}"
        return self.server

    def stop(self):
        """Stopped (SIGTERM, then a kill), its exit awaited and its log removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.log_file.unlink(missing_ok=True)


def start(model_dir, *args, api_key: str | None = None, env: dict | None = None) -> Starting:
    """`adaptctl serve MODEL_DIR --port 0 --json ARGS` started in the background (call .ready(), then .stop()).
    api_key: the key /health is asked with (the server reads its own from --api-key-env and env)."""
    return Starting(model_dir, args, api_key, env)


@contextlib.contextmanager
def served(model_dir, *args, api_key: str | None = None, env: dict | None = None, start_timeout: float = 180):
    """A ready server for the block, stopped at its end."""
    starting = start(model_dir, *args, api_key=api_key, env=env)
    try:
        yield starting.ready(start_timeout)
    finally:
        starting.stop()


def _first_line(process: subprocess.Popen, timeout: float) -> str | None:
    """The server's first stdout line (its --json announcement), or None if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            return line or None
        if process.poll() is not None:
            return None
    return None
