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

from plano_extproc.config import PlanoConfig
from plano_extproc.contract import (
    CLUSTER_HEADER,
    DECIDED_KEY,
    DECISION_CLUSTER,
    METADATA_NAMESPACE,
    OBSERVE_FILTER,
    ROUTING_FILTER,
    TRANSLATE_FILTER,
    composite_cluster_name,
    prebuilt_attempt_lists,
    retry_budget,
)
from plano_extproc.decision import models_listing

from .common import seconds
from .filters import Observation, disabled

#: Exponential back-off between attempts (attempt 2 usually goes to another provider, so keep it short).
RETRY_BASE_INTERVAL_S = 0.25
RETRY_MAX_INTERVAL_S = 2
#: A provider's ``retry-after`` is honoured up to this; a longer one is ignored and the exponential
#: back-off applies (finding (c), continued) — the next attempt usually goes to another provider anyway.
RATE_LIMITED_MAX_INTERVAL_S = 2
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


def retry_policy(num_retries: int) -> Any:
    """429/5xx/reset → next attempt → next sub-cluster of the composite = next model."""
    policy = rc.RetryPolicy(
        retry_on=RETRY_ON,
        retriable_status_codes=list(RETRIABLE_STATUS_CODES),
        retry_back_off=rc.RetryPolicy.RetryBackOff(
            base_interval=seconds(RETRY_BASE_INTERVAL_S), max_interval=seconds(RETRY_MAX_INTERVAL_S)
        ),
        rate_limited_retry_back_off=rc.RetryPolicy.RateLimitedRetryBackOff(
            reset_headers=[rc.RetryPolicy.ResetHeader(name="retry-after", format=rc.RetryPolicy.SECONDS)],
            max_interval=seconds(RATE_LIMITED_MAX_INTERVAL_S),
        ),
    )
    policy.num_retries.value = num_retries
    return policy


def _proxy_route(attempts: tuple[str, ...], timeout_s: float) -> Any:
    name = composite_cluster_name(attempts)
    action = rc.RouteAction(
        cluster=name,
        # the listener's timeout bounds the whole request, retries included; without one, no limit (Envoy's
        # 15 s default kills long generations)
        timeout=seconds(timeout_s),
        # exactly len-1 retries: one more would answer Envoy's own 503 "no healthy upstream" instead of the
        # last provider's error (finding (a)); the processor may lower it per request with
        # x-envoy-max-retries (finding (b))
        retry_policy=retry_policy(retry_budget(attempts)),
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
    return rc.Route(name=f"proxy:{name}", match=match, route=action)


def route_config(config: PlanoConfig, observation: Observation) -> Any:
    timeout_s = config.listener.timeout_seconds or 0
    # the processors record what they answer themselves; nothing to observe on these routes
    observer: tuple[str, ...] = (OBSERVE_FILTER,) if observation.enabled else ()
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
        typed_per_filter_config=disabled(ROUTING_FILTER, *observer),
        **_json_response(200, models_listing(config).decode()),
    )
    no_decision = rc.Route(
        # The route every /v1/ request matches before the processor chose a composite, so it must keep the
        # routing processor enabled (the catch-all below disables it). Answers when the processor let a
        # /v1/ request through without a decision.
        name="no_decision",
        match=rc.RouteMatch(prefix="/v1/"),
        typed_per_filter_config=disabled(TRANSLATE_FILTER),
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
        routes=[decision, *(_proxy_route(a, timeout_s) for a in prebuilt_attempt_lists(config)), models, no_decision, not_found],
    )
    return route_pb2.RouteConfiguration(name="plano_routes", virtual_hosts=[vhost])
