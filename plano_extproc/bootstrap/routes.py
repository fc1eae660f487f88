"""The route table of the gateway listener.

In order: ``/routing/v1/`` (decision only: the routing processor answers, the cluster is a black hole);
one proxy route per prebuilt composite, matched on the exact cluster header the processor sets and on
the decision metadata it writes; ``GET /v1/models`` answered by Envoy; ``/v1/`` without a decision → 404;
anything else → an OpenAI-style 404 without a processor round trip.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2

from plano_extproc.config import PlanoConfig, duration_seconds
from plano_extproc.contract import (
    ANSWERED_MODEL_KEY,
    CLUSTER_HEADER,
    DECIDED_KEY,
    DECISION_CLUSTER,
    METADATA_NAMESPACE,
    OBSERVE_FILTER,
    ROUTE_KEY,
    ROUTING_FILTER,
    SOURCE_KEY,
    TRANSLATE_FILTER,
    composite_cluster_name,
    prebuilt_attempt_lists,
    retry_budget,
)
from plano_extproc.decision import models_listing

from .common import milliseconds, seconds
from .filters import Observation, disabled

#: Back-off before a fall-over to another model: short, and never waiting for the failed provider's
#: retry-after (that provider's limit says nothing about the next one's).
FALLOVER_BASE_INTERVAL_S = 0.05
FALLOVER_MAX_INTERVAL_S = 0.5
#: an attempt whose provider sends nothing for this long is abandoned (per-try idle timeout), unless the
#: model's retry_policy.on_timeout says otherwise or the listener timeout leaves less per attempt
DEFAULT_ATTEMPT_IDLE_S = 300.0
#: 429, 5xx, a reset, a refused connection and an attempt's idle timeout (a 504) move to the next attempt
RETRY_ON = "5xx,reset,connect-failure,retriable-status-codes"
RETRIABLE_STATUS_CODES = (429,)

NOT_FOUND_BODY = (
    '{"error":{"message":"Unknown path. plano serves POST /v1/chat/completions, /v1/messages, '
    '/v1/responses and /routing/v1/...","type":"invalid_request_error","param":null,"code":"not_found"}}'
)
NO_DECISION_BODY = (
    '{"error":{"message":"This path is not served by plano (no routing decision was made for it)",'
    '"type":"invalid_request_error","param":null,"code":"not_found"}}'
)


def _exact_header(name: str, value: str) -> Any:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))


def _json_content_type() -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="content-type", value="application/json"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _json_response(status: int, body: str) -> dict[str, Any]:
    """``Route`` fields of a direct JSON answer."""
    return {
        "direct_response": rc.DirectResponseAction(status=status, body=base_pb2.DataSource(inline_string=body)),
        "response_headers_to_add": [_json_content_type()],
    }


def attempt_idle_seconds(config: PlanoConfig, attempts: tuple[str, ...]) -> float:
    """How long an attempt may stay silent: the first model's ``retry_policy.on_timeout.timeout`` (Envoy
    has one per-try timeout per route), else the default — at most the listener timeout shared by all
    attempts, so a hung first provider leaves time for the next."""
    configured = config.by_model[attempts[0]].retry_policy.on_timeout.timeout
    idle = duration_seconds(configured) if configured else DEFAULT_ATTEMPT_IDLE_S
    listener_timeout = config.listener.timeout_seconds
    if listener_timeout:
        idle = min(idle, listener_timeout / len(attempts))
    return idle


def retry_policy(config: PlanoConfig, attempts: tuple[str, ...]) -> Any:
    """429/5xx/reset/silence → next attempt → next sub-cluster of the composite = next model.

    A list that retries the same model (a single model, listed twice) backs off as its retry_policy says
    and waits out a retry-after up to ``max_retry_after_seconds`` (Envoy ignores a longer one and backs
    off as usual, finding (c)); a fall-over to another model goes quickly and ignores retry-after."""
    same_model = len(set(attempts)) == 1
    policy = rc.RetryPolicy(retry_on=RETRY_ON, retriable_status_codes=list(RETRIABLE_STATUS_CODES))
    policy.num_retries.value = retry_budget(attempts, config.listener.max_retries)
    policy.per_try_idle_timeout.CopyFrom(seconds(attempt_idle_seconds(config, attempts)))
    rules = config.by_model[attempts[0]].retry_policy
    if same_model:
        policy.retry_back_off.base_interval.CopyFrom(milliseconds(rules.backoff.base_ms))
        policy.retry_back_off.max_interval.CopyFrom(milliseconds(max(rules.backoff.max_ms, rules.backoff.base_ms)))
        if rules.retry_after_handling.max_retry_after_seconds > 0:
            policy.rate_limited_retry_back_off.reset_headers.append(
                rc.RetryPolicy.ResetHeader(name="retry-after", format=rc.RetryPolicy.SECONDS)
            )
            policy.rate_limited_retry_back_off.max_interval.CopyFrom(seconds(rules.retry_after_handling.max_retry_after_seconds))
    else:
        policy.retry_back_off.base_interval.CopyFrom(seconds(FALLOVER_BASE_INTERVAL_S))
        policy.retry_back_off.max_interval.CopyFrom(seconds(FALLOVER_MAX_INTERVAL_S))
    return policy


#: response headers of every proxied answer (README via docs/plano-compatibility.md, "Response headers";
#: docs/envoy.md finding (t)); a value that is empty (no route) leaves its header out
RESPONSE_HEADERS = (
    # the model of the attempt that answered: attempt 1's from the routing processor, every later one's
    # from the per-attempt processor (Envoy merges dynamic metadata)
    ("x-plano-model", f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{ANSWERED_MODEL_KEY})%"),
    ("x-plano-route", f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{ROUTE_KEY})%"),
    ("x-plano-source", f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{SOURCE_KEY})%"),
    ("x-plano-attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
)


def _response_headers() -> dict[str, Any]:
    """``Route`` fields: our response headers, overwriting (and first removing) any a provider sent."""
    return {
        "response_headers_to_add": [
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
            for name, value in RESPONSE_HEADERS
        ],
        "response_headers_to_remove": [name for name, _ in RESPONSE_HEADERS],
    }


def _proxy_route(config: PlanoConfig, attempts: tuple[str, ...], timeout_s: float) -> Any:
    name = composite_cluster_name(attempts)
    action = rc.RouteAction(
        cluster=name,
        # the listener's timeout bounds the whole request, retries included; without one, no limit (Envoy's
        # 15 s default kills long generations)
        timeout=seconds(timeout_s),
        # exactly len-1 retries: one more would answer Envoy's own 503 "no healthy upstream" instead of the
        # last provider's error (finding (a)); the processor may lower it per request with
        # x-envoy-max-retries (finding (b))
        retry_policy=retry_policy(config, attempts),
    )
    # the Host of the provider each attempt picked (finding (c), continued)
    action.auto_host_rewrite.value = True
    match = rc.RouteMatch(
        # any path: attempt 1's provider path is already set by the downstream processor
        prefix="/",
        headers=[_exact_header(CLUSTER_HEADER, name)],
        # Only a request our processor decided (it wrote the decision metadata) reaches a composite: a
        # cluster header alone, however it got there, routes nowhere.
        dynamic_metadata=[
            metadata_pb2.MetadataMatcher(
                filter=METADATA_NAMESPACE,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=DECIDED_KEY)],
                value=value_pb2.ValueMatcher(present_match=True),
            )
        ],
    )
    return rc.Route(name=f"proxy:{name}", match=match, route=action, **_response_headers())


def route_config(config: PlanoConfig, observation: Observation) -> Any:
    timeout_s = config.listener.timeout_seconds or 0
    # the processors record what they answer themselves; nothing to observe on these routes
    observer: tuple[str, ...] = (OBSERVE_FILTER,) if observation.bodies else ()
    # and no response to translate (a request without a decision never sets x-plano-translate)
    observer += (TRANSLATE_FILTER,)
    decision = rc.Route(
        # decision only: the ext_proc answers with an ImmediateResponse, nothing goes upstream
        name="decision",
        match=rc.RouteMatch(prefix="/routing/v1/"),
        route=rc.RouteAction(cluster=DECISION_CLUSTER, timeout=seconds(timeout_s)),
        typed_per_filter_config=disabled(*observer),
    )
    models = rc.Route(
        # no processor round trip: the list only changes with the config
        name="models",
        match=rc.RouteMatch(path="/v1/models", headers=[_exact_header(":method", "GET")]),
        # with client keys the routing processor answers it (after checking the key)
        typed_per_filter_config=disabled(*observer) if config.client_auth.enabled else disabled(ROUTING_FILTER, *observer),
        **_json_response(200, models_listing(config).decode()),
    )
    no_decision = rc.Route(
        # The route every /v1/ request matches before the processor chose a composite, so it must keep the
        # routing processor enabled (the catch-all below disables it). Answers when the processor let a
        # /v1/ request through without a decision.
        name="no_decision",
        match=rc.RouteMatch(prefix="/v1/"),
        typed_per_filter_config=disabled(TRANSLATE_FILTER, *observer),
        **_json_response(404, NO_DECISION_BODY),
    )
    not_found = rc.Route(
        name="not_found",
        match=rc.RouteMatch(prefix="/"),
        # no processor round trip for paths we do not serve
        typed_per_filter_config=disabled(ROUTING_FILTER, *observer),
        **_json_response(404, NOT_FOUND_BODY),
    )
    vhost = rc.VirtualHost(
        name="plano",
        domains=["*"],
        # the upstream processor learns the attempt number from x-envoy-attempt-count (finding (c))
        include_request_attempt_count=True,
        routes=[decision, *(_proxy_route(config, a, timeout_s) for a in prebuilt_attempt_lists(config)), models, no_decision, not_found],
    )
    return route_pb2.RouteConfiguration(name="plano_routes", virtual_hosts=[vhost])
