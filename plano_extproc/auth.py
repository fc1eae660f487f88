"""Client authentication: who may use the gateway (and so the providers' keys behind it).

With `client_auth` keys in the config, a request must present one — as `Authorization: Bearer`, `x-api-key`
or `api-key`, the headers the OpenAI and Anthropic SDKs send — or it is answered 401 in its API's error
shape before anything else happens. A key may be limited to some models and routes: its decisions are
narrowed to those models (403 when none is left). Presented keys are compared by digest, never logged,
and never forwarded: the per-attempt credentials replace them (forwarding.py).

Pure apart from `ClientKeys.from_config`, which reads `keys_dir` (a mounted Secret) at start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plano_extproc.config import ClientAuth, ConfigError
from plano_extproc.decision import Decision

#: the headers a client's key may come in, in order
KEY_HEADERS = ("authorization", "x-api-key", "api-key")
#: a key file larger than this is not a key
MAX_KEY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    models: frozenset[str] | None = None
    routes: frozenset[str] | None = None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (the first of `KEY_HEADERS` present), or None."""
    for name in KEY_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            value = token if scheme.lower() == "bearer" else ""
        value = value.strip()
        if value:
            return value
    return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ClientKeys:
    """The keys that may use the gateway, by digest."""

    def __init__(self, clients: Mapping[bytes, Client]) -> None:
        self._clients = dict(clients)

    def __len__(self) -> int:
        return len(self._clients)

    @classmethod
    def from_config(cls, auth: ClientAuth) -> ClientKeys | None:
        """None when client authentication is off. Raises ConfigError for an unreadable `keys_dir`."""
        if not auth.enabled:
            return None
        clients: dict[bytes, Client] = {}
        for entry in auth.keys:
            models = frozenset(entry.models) if entry.models is not None else None
            routes = frozenset(entry.routes) if entry.routes is not None else None
            clients[_digest(entry.key.get_secret_value())] = Client(entry.name, models, routes)
        if auth.keys_dir is not None:
            clients.update(_keys_dir(Path(auth.keys_dir)))
        if not clients:
            raise ConfigError([f"client_auth.keys_dir: no key files in {auth.keys_dir}"])
        return cls(clients)

    def identify(self, key: str) -> Client | None:
        # looked up by the key's SHA-256: the time a lookup takes says nothing about the key itself
        return self._clients.get(_digest(key))


def _keys_dir(path: Path) -> dict[bytes, Client]:
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError([f"client_auth.keys_dir: cannot read {path} ({exc.strerror})"]) from None
    out: dict[bytes, Client] = {}
    for file in files:
        raw = file.read_bytes()[: MAX_KEY_BYTES + 1]
        key = raw.decode("utf-8", "replace").strip()
        if key and len(raw) <= MAX_KEY_BYTES:
            out[_digest(key)] = Client(file.name)
    return out


def narrow(decision: Decision, client: Client) -> Decision | str:
    """The decision limited to what `client` may use, or why it may not be served at all."""
    if client.routes is not None and decision.route is not None and decision.route not in client.routes:
        return f"this key may not use the route '{decision.route}'"
    if client.models is None:
        return decision
    models = tuple(m for m in decision.models if m in client.models)
    if not models:
        return f"this key may not use the model{'s' if len(decision.models) > 1 else ''} {', '.join(decision.models)}"
    if models == decision.models:
        return decision
    return Decision(models, decision.route, decision.source, decision.pinned, decision.router_backend)
