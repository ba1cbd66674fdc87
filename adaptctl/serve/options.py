"""The flags of `adaptctl serve`, checked before the model loads (seconds) so that a typo costs nothing."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError

ENGINES = ("adaptctl", "vllm")
MIN_KEY_LENGTH = 8


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = None          # the NAME of the variable that holds the key, never the key
    served_model_name: str | None = None
    batch_size: int | None = None           # rows per batch (None: the run's evaluate.batch_size)
    max_wait_ms: float = 10.0
    max_tokens: int = 1024
    max_request_bytes: int = 1 << 20
    threads: int | None = None
    engine: str = "adaptctl"
    enable_lora: bool = False
    as_json: bool = False
    pii: str | None = None                  # report | redact | refuse generated text (None: the run's data.pii)

    def check(self):
        if self.engine not in ENGINES:
            raise UserError(f"--engine {self.engine}: unknown", hint=f"choose {' or '.join(ENGINES)}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: not a port", hint="0 to 65535; 0 picks a free port")
        if self.enable_lora and self.engine != "vllm":
            raise UserError("--enable-lora is vLLM's (with --engine vllm)",
                            hint="adaptctl's own engine serves an adapter folder as it is")
        for flag, value, least in (("--batch-size", self.batch_size, 1), ("--max-tokens", self.max_tokens, 1),
                                   ("--max-request-bytes", self.max_request_bytes, 1024),
                                   ("--max-wait-ms", self.max_wait_ms, 0)):
            if value is not None and value < least:
                raise UserError(f"{flag} {value}: must be at least {least}", hint=f"e.g. {flag} {max(least, 16)}")
        if self.pii is not None:
            from adaptctl.data.pii import check_action

            check_action(self.pii)
        self.api_key()
        if not self.loopback() and self.api_key_env is None:
            console.warn(f"serve: listening on {self.host}, beyond this machine, with no API key: anyone who can "
                         "reach the port can use the model (add --api-key-env NAME)")

    def api_key(self) -> str | None:
        """The key requests must bear, read from the environment variable --api-key-env names."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key.strip():
            raise UserError(f"--api-key-env {self.api_key_env}: the variable {self.api_key_env} is not set or empty",
                            hint=f"export {self.api_key_env}=... first, e.g. with "
                                 "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if len(key) < MIN_KEY_LENGTH:
            raise UserError(f"--api-key-env {self.api_key_env}: the key is {len(key)} characters, short enough to "
                            "guess", hint=f"use at least {MIN_KEY_LENGTH} characters, e.g. from "
                                          "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return key

    def model_names(self, predictor, model_dir: Path) -> tuple[str, ...]:
        """The name /v1/models shows (--served-model-name, else the run's name, else the folder's), then the
        other names a request may use for it: the run's name, the folder's and the path as it was typed."""
        names = [self.served_model_name, predictor.run_name(), Path(model_dir).resolve().name, str(model_dir)]
        return tuple(dict.fromkeys(name for name in names if name))

    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
