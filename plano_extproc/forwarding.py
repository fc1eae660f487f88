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

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from plano_extproc.apis import CLIENT_APIS, ClientApi
from plano_extproc.config import PlanoConfig, ProviderConfig
from plano_extproc.contract import attempt_list, composite_cluster_name
from plano_extproc.jsonbody import dumps, exact_loads, with_model
from plano_extproc.providers import PROVIDER_APIS, provider_named
from plano_extproc.providers.base import Headers, bearer, endpoint_of
from plano_extproc.translation import TRANSLATIONS, Dialect, Translation

#: request headers that carry a client's credentials; never forwarded unless passthrough_auth
#: a client's credentials and provider-account headers: never forwarded, except to a passthrough_auth
#: provider (which gets exactly these, carried with the decision so every attempt can have them)
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "openai-organization", "openai-project")
#: the client credential headers that carry its key (normalised to the provider's auth on passthrough)
KEY_HEADERS = ("authorization", "x-api-key", "api-key")
#: credential-like headers no provider gets from a client, passthrough or not
NEVER_FORWARDED = ("cookie", "proxy-authorization", "x-goog-api-key", "api_key", "x_api_key")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One declared model as its provider is called."""

    model: str  # full name, "openai/gpt-4o" (for a vendor/* entry: the model requested, "openai/gpt-5")
    model_id: str  # what the provider calls it, "gpt-4o"
    host: str  # Host / :authority
    #: API name -> the path the provider serves it at, in the provider API's order of preference
    paths: Mapping[str, str]
    headers: Headers  # auth + fixed + configured extra headers; secret values inside
    passthrough_auth: bool
    dialect: Dialect = field(default_factory=Dialect)
    #: feature headers of other provider API families (a client's anthropic-beta never reaches OpenAI)
    foreign_headers: frozenset[str] = frozenset()
    #: the fixed and configured headers alone (what a passthrough attempt sends beside the client's key)
    plain_headers: Headers = ()
    #: the provider API's auth: a key -> the headers that carry it
    auth: Callable[[str], Headers] = bearer
    #: the declared entry this upstream belongs to ("openai/*" for a wildcard-served model)
    entry: str = ""

    def __repr__(self) -> str:  # never print the auth headers
        return f"Upstream(model={self.model!r}, host={self.host!r})"


def build_upstream(provider: ProviderConfig, model_id: str | None = None) -> Upstream:
    """The upstream of a declared entry; `model_id` for a model a ``vendor/*`` entry serves."""
    facts = provider_named(provider.interface)
    endpoint = endpoint_of(facts, provider.base_url)
    model_id = model_id or provider.model_id
    paths: dict[str, str] = {}
    for api_name, suffix in facts.api.native.items():
        if endpoint.path_prefix:
            # an SDK-style base_url ("http://host/v1", "https://x/openai/v1") holds the version prefix
            path = endpoint.path_prefix + suffix
        else:
            path = facts.path_template.get(api_name) or facts.prefix + suffix
        path = path.replace("{model}", model_id)
        # a query in base_url wins; else the provider's own (Azure: api-version, plano's default)
        query = endpoint.query or facts.default_query
        paths[api_name] = f"{path}?{query}" if query else path
    key = provider.access_key.get_secret_value() if provider.access_key else None
    plain = facts.api.fixed_headers + tuple((k.lower(), v) for k, v in provider.headers.items())
    # passthrough_auth: the client's key, never the configured one (plano's rule)
    auth = () if provider.passthrough_auth or not key else facts.api.auth(key)
    headers = facts.api.fixed_headers + auth + tuple((k.lower(), v) for k, v in provider.headers.items())
    foreign = frozenset(h for api in PROVIDER_APIS if api is not facts.api for h in api.feature_headers) - set(facts.api.feature_headers)
    full = provider.model if model_id == provider.model_id else f"{provider.provider}/{model_id}"
    return Upstream(
        full,
        model_id,
        endpoint.host_header(provider.http_host),
        paths,
        headers,
        provider.passthrough_auth,
        facts.dialect,
        foreign,
        plain,
        facts.api.auth,
        provider.model,
    )


def client_key(credentials: Mapping[str, str]) -> str | None:
    """The key in a client's credential headers: ``Authorization: Bearer K``, else ``x-api-key`` or
    ``api-key`` (clients of either API family send theirs; plano accepts both)."""
    authorization = credentials.get("authorization", "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in ("x-api-key", "api-key"):
        value = credentials.get(name, "").strip()
        if value:
            return value
    return authorization or None


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


def _removable(stale_headers: Iterable[str]) -> frozenset[str]:
    """Every client header name `Forwarder.attempt_headers` may remove: which of these a request has is
    all its headers' say in what an attempt sets and removes (without client credentials)."""
    return frozenset(stale_headers) | {h for api in PROVIDER_APIS for h in api.feature_headers}


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

    #: bound on the upstreams made for wildcard-served models (one per distinct requested model)
    MAX_DERIVED = 4096
    #: bound on the memoised plans (inline routes may rank any models): emptied when full
    MAX_PLANS = 4096

    def __init__(
        self,
        upstreams: Iterable[Upstream],
        prebuilt: Iterable[tuple[str, ...]],
        derive: Callable[[str], Upstream | None] | None = None,
    ) -> None:
        self.upstreams = {u.model: u for u in upstreams}
        self.prebuilt = frozenset(prebuilt)
        #: (first entry, the entries) -> a prebuilt order starting with it, for ranked lists without their own
        self._by_first: dict[tuple[str, frozenset[str]], tuple[str, ...]] = {}
        for entries in self.prebuilt:
            if len(set(entries)) == len(entries):
                self._by_first.setdefault((entries[0], frozenset(entries)), entries)
        #: a model a vendor/* entry serves -> its upstream (None: not served)
        self._derive = derive
        self.routes: dict[tuple[str, str], Route] = {}
        #: plans by (client API, ranked models): a pure function of the config, asked once per request
        self._plans: dict[tuple[str, tuple[str, ...]], AttemptPlan] = {}
        for upstream in self.upstreams.values():
            self._add_routes(upstream)
        #: client credentials are only ever kept (in Envoy's in-process metadata) when a provider wants them
        self.any_passthrough = any(u.passthrough_auth for u in self.upstreams.values())
        injected = {name for u in self.upstreams.values() for name, _ in u.headers}
        injected |= {name for u in self.upstreams.values() for name, _ in u.auth("x")}
        self.stale_headers = tuple(sorted(injected | set(CREDENTIAL_HEADERS) | set(NEVER_FORWARDED)))
        self.removable = _removable(self.stale_headers)

    def _add_routes(self, upstream: Upstream) -> None:
        for api in CLIENT_APIS:
            route = route_to(upstream, api)
            if route is not None:
                self.routes[(api.name, upstream.model)] = route

    @classmethod
    def from_config(cls, config: PlanoConfig, prebuilt: Iterable[tuple[str, ...]]) -> Forwarder:
        def derive(model: str) -> Upstream | None:
            entry = config.entry_of(model)
            if entry is None or entry == model:
                return None
            return build_upstream(config.by_model[entry], model.partition("/")[2])

        return cls((build_upstream(p) for p in config.providers if not p.wildcard), prebuilt, derive)._with_entries(config)

    def _with_entries(self, config: PlanoConfig) -> Forwarder:
        for provider in config.providers:
            if provider.wildcard:
                # the entry itself is never an attempt's model; its requested models are derived
                self.any_passthrough |= provider.passthrough_auth
                sample = build_upstream(provider)
                self.stale_headers = tuple(sorted(set(self.stale_headers) | {n for n, _ in sample.headers} | {n for n, _ in sample.auth("x")}))
        self.removable = _removable(self.stale_headers)
        return self

    def upstream(self, model: str) -> Upstream | None:
        """The upstream of `model`: a declared model's, or one derived from its vendor's wildcard entry."""
        found = self.upstreams.get(model)
        if found is None and self._derive is not None and len(self.upstreams) < self.MAX_DERIVED:
            found = self._derive(model)
            if found is not None:
                self.upstreams[model] = found
                self._add_routes(found)
        return found

    def route(self, api: ClientApi, model: str) -> Route | None:
        if model not in self.upstreams:
            self.upstream(model)
        return self.routes.get((api.name, model))

    def translated(self, api: ClientApi, model: str) -> bool:
        route = self.route(api, model)
        return route is not None and route.translation is not None

    def servable(self, api: ClientApi, models: Iterable[str]) -> tuple[str, ...]:
        """The models whose provider can serve `api` (natively or translated), in order."""
        return tuple(m for m in models if self.route(api, m) is not None)

    def entry(self, model: str) -> str:
        upstream = self.upstream(model)
        return upstream.entry or upstream.model if upstream is not None else model

    def plan(self, api: ClientApi, models: tuple[str, ...]) -> AttemptPlan | None:
        """The attempts and the composite cluster that walks them. Composites are built per list of
        declared entries; a ranked list without its own composite uses one that starts with the same
        model and holds the same models (a route of more than four ranked models), else its first model
        alone with a same-provider retry (inline routes)."""
        key = (api.name, models)
        found = self._plans.get(key)
        if found is None:
            found = self._plan(api, models)
            if found is not None:  # no plan: the request is refused (400), nothing worth keeping
                if len(self._plans) >= self.MAX_PLANS:
                    self._plans.clear()
                self._plans[key] = found
        return found

    def _plan(self, api: ClientApi, models: tuple[str, ...]) -> AttemptPlan | None:
        servable = self.servable(api, models)
        if not servable:
            return None
        attempts = attempt_list(servable)
        entries = tuple(self.entry(m) for m in attempts)
        if entries not in self.prebuilt:
            same = self._by_first.get((entries[0], frozenset(entries))) if len(set(entries)) == len(entries) else None
            if same is not None:
                by_entry = {self.entry(m): m for m in attempts}
                attempts, entries = tuple(by_entry[e] for e in same), same
            else:
                attempts = attempt_list(servable[:1])
                entries = tuple(self.entry(m) for m in attempts)
        return AttemptPlan(composite_cluster_name(entries), attempts)

    def attempt_headers(self, request: ForwardRequest, model: str, present: Collection[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """(headers to set, headers to remove) for attempt on `model`, given the header names `present`."""
        upstream = self.upstream(model)
        route = self.route(request.api, model)
        assert upstream is not None and route is not None
        credentials = request.client_credentials
        if upstream.passthrough_auth:
            # the client's own key, in the header this provider's API expects (plano normalises it the same
            # way: x-api-key -> Authorization: Bearer for OpenAI-style providers and back), beside the
            # provider's fixed headers (anthropic-version) and the configured ones
            key = client_key(credentials) if credentials else None
            auth = list(upstream.plain_headers) + (list(upstream.auth(key)) if key else [])
            # and the client's provider-account headers (openai-organization, ...), as they came
            auth += [(k, v) for k, v in (credentials or {}).items() if k not in KEY_HEADERS]
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
        upstream = self.upstream(model)
        route = self.route(request.api, model)
        assert upstream is not None and route is not None
        translation = route.translation
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
