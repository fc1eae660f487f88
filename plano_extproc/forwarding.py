"""The forwarding step, pure: which attempts a decision makes, and what each attempt sends.

`Forwarder.plan` turns a decision's ranked models into an attempt list and the composite cluster that
walks it (contract.py); `Forwarder.prepare` makes the request fit attempt N's provider — Host, path,
credentials, the provider's model id, and the body translated when that provider does not speak the
client's API (`Route`). The same `prepare` serves attempt 1 (in the downstream processor, before Envoy
routes) and attempt N (in the upstream processor), so the two can never disagree.

The body that leaves the downstream processor is always in the client's API — it is what Envoy sends to
every later attempt — so a translated attempt 1 is prepared by the upstream processor like any other.

Header mutations made for attempt N persist into attempt N+1 (docs/envoy.md finding (d)): every attempt
therefore removes every header any provider's credentials could have set before setting its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from plano_extproc.apis import CLIENT_APIS, ClientApi
from plano_extproc.config import PlanoConfig, ProviderConfig
from plano_extproc.contract import attempt_list, composite_cluster_name
from plano_extproc.jsonbody import dumps, exact_loads, with_model
from plano_extproc.providers import PROVIDER_APIS, provider_named
from plano_extproc.providers.base import Headers, endpoint_of
from plano_extproc.translation import TRANSLATIONS, Dialect, Translation

#: request headers that carry a client's credentials; never forwarded unless passthrough_auth
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One declared model as its provider is called."""

    model: str  # full declared name, "openai/gpt-4o"
    model_id: str  # what the provider calls it, "gpt-4o"
    host: str  # Host / :authority
    #: API name -> the path the provider serves it at, in the provider API's order of preference
    paths: Mapping[str, str]
    headers: Headers  # auth + fixed + configured extra headers; secret values inside
    passthrough_auth: bool
    dialect: Dialect = field(default_factory=Dialect)
    #: feature headers of other provider API families (a client's anthropic-beta never reaches OpenAI)
    foreign_headers: frozenset[str] = frozenset()

    def __repr__(self) -> str:  # never print the auth headers
        return f"Upstream(model={self.model!r}, host={self.host!r})"


def build_upstream(provider: ProviderConfig) -> Upstream:
    facts = provider_named(provider.interface)
    endpoint = endpoint_of(facts, provider.base_url)
    paths: dict[str, str] = {}
    for api_name, suffix in facts.api.native.items():
        if endpoint.path_prefix:
            # an SDK-style base_url ("http://host/v1", "https://x/openai/v1") holds the version prefix
            path = endpoint.path_prefix + suffix
        else:
            path = facts.path_template.get(api_name) or facts.prefix + suffix
        path = path.replace("{model}", provider.model_id)
        query = endpoint.query or facts.default_query
        paths[api_name] = f"{path}?{query}" if query else path
    key = provider.access_key.get_secret_value() if provider.access_key else None
    headers = facts.api.fixed_headers + (facts.api.auth(key) if key else ())
    headers += tuple((k.lower(), v) for k, v in provider.headers.items())
    foreign = frozenset(h for api in PROVIDER_APIS if api is not facts.api for h in api.feature_headers) - set(facts.api.feature_headers)
    return Upstream(
        provider.model,
        provider.model_id,
        endpoint.host_header(provider.http_host),
        paths,
        headers,
        provider.passthrough_auth,
        facts.dialect,
        foreign,
    )


@dataclass(frozen=True, slots=True)
class Route:
    """How one client API reaches one model: the API the request is sent in, translated or not."""

    wire: str  # the API name the provider is spoken to in
    translation: Translation | None  # None: the client's own API


def route_to(upstream: Upstream, api: ClientApi) -> Route | None:
    """The client's own API when the provider speaks it; else the first API of the provider's that a
    translation reaches; None when neither."""
    if api.name in upstream.paths:
        return Route(api.name, None)
    for wire in upstream.paths:
        translation = TRANSLATIONS.get((api.name, wire))
        if translation is not None:
            return Route(wire, translation)
    return None


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """The composite cluster of a request and the model each attempt goes to."""

    cluster: str
    attempts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """What every attempt of one proxied request is prepared from; kept for the retries."""

    api: ClientApi
    raw: bytes  # the client's body
    routing_fields: tuple[str, ...]  # top-level keys to remove from it
    attempts: tuple[str, ...]
    client_credentials: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PreparedAttempt:
    model: str
    set_headers: list[tuple[str, str]]
    remove_headers: list[str]
    body: bytes


class Forwarder:
    """Built once per config: every model's upstream, and the attempt lists Envoy has composites for."""

    def __init__(self, upstreams: Iterable[Upstream], prebuilt: Iterable[tuple[str, ...]]) -> None:
        self.upstreams = {u.model: u for u in upstreams}
        self.prebuilt = frozenset(prebuilt)
        self.routes: dict[tuple[str, str], Route] = {}
        for upstream in self.upstreams.values():
            for api in CLIENT_APIS:
                route = route_to(upstream, api)
                if route is not None:
                    self.routes[(api.name, upstream.model)] = route
        #: client credentials are only ever kept (in Envoy's in-process metadata) when a provider wants them
        self.any_passthrough = any(u.passthrough_auth for u in self.upstreams.values())
        injected = {name for u in self.upstreams.values() for name, _ in u.headers}
        self.stale_headers = tuple(sorted(injected | set(CREDENTIAL_HEADERS)))

    @classmethod
    def from_config(cls, config: PlanoConfig, prebuilt: Iterable[tuple[str, ...]]) -> Forwarder:
        return cls((build_upstream(p) for p in config.providers), prebuilt)

    def route(self, api: ClientApi, model: str) -> Route | None:
        return self.routes.get((api.name, model))

    def translated(self, api: ClientApi, model: str) -> bool:
        route = self.routes.get((api.name, model))
        return route is not None and route.translation is not None

    def servable(self, api: ClientApi, models: Iterable[str]) -> tuple[str, ...]:
        """The models whose provider can serve `api` (natively or translated), in order."""
        return tuple(m for m in models if (api.name, m) in self.routes)

    def plan(self, api: ClientApi, models: Iterable[str]) -> AttemptPlan | None:
        servable = self.servable(api, models)
        if not servable:
            return None
        attempts = attempt_list(servable)
        if attempts not in self.prebuilt:
            # no composite for this list (inline routes): the first model, with a same-provider retry
            attempts = attempt_list(servable[:1])
        return AttemptPlan(composite_cluster_name(attempts), attempts)

    def attempt_headers(self, request: ForwardRequest, model: str, present: Collection[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """(headers to set, headers to remove) for attempt on `model`, given the header names `present`."""
        upstream = self.upstreams[model]
        route = self.routes[(request.api.name, model)]
        credentials = request.client_credentials
        if upstream.passthrough_auth and credentials:
            auth = list(credentials.items())  # the client's own credentials
        else:
            auth = list(upstream.headers)
        set_names = {k for k, _ in auth}
        remove = [k for k in self.stale_headers if k in present and k not in set_names]
        remove += [k for k in upstream.foreign_headers if k in present]
        sets = [(":authority", upstream.host), (":path", upstream.paths[route.wire]), *auth]
        if route.translation is not None:
            # the response translator parses this answer: a client's "accept-encoding: gzip" (httpx sends
            # it by default) would get it compressed, which no translator reads
            sets.append(("accept-encoding", "identity"))
        return sets, remove

    def attempt_body(self, request: ForwardRequest, model: str) -> bytes:
        """The body for an attempt on `model`: the client's bytes with the provider's model id, or the
        translated body. Raises ValueError when `request.raw` is not JSON, TranslationError when the
        request cannot be expressed in the provider's API."""
        upstream = self.upstreams[model]
        translation = self.routes[(request.api.name, model)].translation
        if translation is None:
            return with_model(request.raw, upstream.model_id, request.routing_fields)
        body = exact_loads(request.raw)
        for key in request.routing_fields:
            body.pop(key, None)
        return dumps(translation.request(body, upstream.model_id, upstream.dialect))

    def prepare(self, request: ForwardRequest, model: str, present: Collection[str]) -> PreparedAttempt:
        """Attempt for `model`: headers and body together."""
        body = self.attempt_body(request, model)
        sets, remove = self.attempt_headers(request, model, present)
        sets.append(("content-length", str(len(body))))
        return PreparedAttempt(model, sets, remove, body)
