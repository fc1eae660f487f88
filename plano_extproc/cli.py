"""`plano-extproc` command line: check-config, route (and, as they land, serve, render-envoy, up)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import Sequence

import orjson

from plano_extproc.apis import BY_NAME
from plano_extproc.config import ConfigError, PlanoConfig, load_config

DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "demo", "config.yaml")


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, os.environ, resolve_secrets=not args.no_secrets)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.errors)} error(s)", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    routes = ", ".join(p.name for p in config.routing_preferences) or "none"
    print(
        f"OK {args.config}: {len(config.providers)} model(s), default {config.default_model or 'none (vendor/* entries only)'}, "
        f"routes: {routes}, listener port {config.listener_port}"
    )
    return 0


def _load_or_exit(path: str, resolve_secrets: bool) -> PlanoConfig:
    try:
        config = load_config(path, os.environ, resolve_secrets=resolve_secrets)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1) from None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def _request_body(args: argparse.Namespace) -> bytes:
    if args.body is not None:
        return args.body.encode() if args.body != "-" else sys.stdin.buffer.read()
    if not args.text:
        raise SystemExit("route: give the user's message as an argument, or --body JSON")
    if args.format == "anthropic_messages":
        body = {"model": args.model or "", "max_tokens": 1024, "messages": [{"role": "user", "content": args.text}]}
    elif args.format == "openai_responses":
        body = {"model": args.model or "", "input": args.text}
    else:
        body = {"model": args.model or "", "messages": [{"role": "user", "content": args.text}]}
    if not args.model:
        body.pop("model")
    return orjson.dumps(body)


def _cmd_route(args: argparse.Namespace) -> int:
    from plano_extproc.apis import RequestFormatError
    from plano_extproc.decision import decision_payload
    from plano_extproc.engine import DecisionEngine, build_router_chain

    config = _load_or_exit(args.config, resolve_secrets=False)
    body = _request_body(args)

    async def run() -> int:
        try:
            engine = DecisionEngine(config, build_router_chain(config))
        except ConfigError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            return 1
        try:
            await engine.warm_up()
            routed = await engine.route_raw(BY_NAME[args.format], body, args.session)
        except RequestFormatError as exc:
            print(f"invalid request: {exc.message}", file=sys.stderr)
            return 2
        finally:
            await engine.close()
        payload = decision_payload(routed.decision, secrets.token_hex(16), args.session)
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    return asyncio.run(run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from plano_devtools.demo import run_demo

    _configure_logging("warning")
    try:
        text = open(args.config, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        print(f"{args.config}: cannot read the config file ({exc.strerror})", file=sys.stderr)
        return 1
    return asyncio.run(run_demo(text, args.port))


DEFAULT_EXTPROC_ADDRESS = "127.0.0.1:50051"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _configure_logging(level: str, json_format: bool = True) -> None:
    from plano_extproc.logs import configure_logging

    configure_logging(level, json_format)


def _private_address(address: str) -> bool:
    """A Unix socket or a loopback address."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, in the running loop."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _cmd_serve(args: argparse.Namespace) -> int:
    from plano_extproc.extproc.server import ExtProcServer, run_event_loop

    _configure_logging(args.log_level, args.log_format == "json")
    if not args.expose_extproc and not _private_address(args.listen):
        print(
            f"serve: --listen {args.listen} is reachable from other hosts, and anyone who can open a stream there gets "
            "requests signed with the providers' keys. Listen on a Unix socket or loopback, or pass --expose-extproc "
            "if a network policy keeps everyone but Envoy out (README, Security).",
            file=sys.stderr,
        )
        return 2
    if _worker_limit_without_a_second_worker(args, "serve"):
        return 2
    config = _load_or_exit(args.config, resolve_secrets=True)
    if args.workers >= 1:
        return _serve_workers(args, config)

    async def run() -> int:
        try:
            server = ExtProcServer(config, args.listen, metrics_address=args.metrics or None, log_prompts=args.log_prompts)
        except ConfigError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            return 1
        except (OSError, RuntimeError) as exc:
            print(f"serve: cannot listen on {args.listen}: {exc}", file=sys.stderr)
            return 1
        await server.start()
        watcher = None
        if args.watch_interval > 0:
            from plano_extproc.config import parse_config
            from plano_extproc.reload import ConfigWatcher, serve_reloader

            watcher = ConfigWatcher(
                args.config, lambda text: parse_config(text, os.environ), serve_reloader(server, args.config), server.metrics, args.watch_interval
            )
            watcher.start()
        print(f"plano-extproc serving ext_proc + RoutingService on {args.listen}", flush=True)
        stop = _stop_on_signals()
        await stop.wait()
        if watcher is not None:
            await watcher.stop()
        await server.stop()
        return 0

    return run_event_loop(run())


def _serve_workers(args: argparse.Namespace, config: PlanoConfig) -> int:
    """`serve --workers N`: a supervisor of N worker processes (plano_extproc.workers)."""
    from plano_extproc.contract import worker_address
    from plano_extproc.workers.supervisor import WorkerExited, WorkerPool, drain_timeout_s

    try:
        text = open(args.config, encoding="utf-8").read()  # noqa: SIM115
        pool = WorkerPool(
            args.workers,
            args.listen,
            work_parent=args.work_dir,
            log_level=args.log_level,
            log_format=args.log_format,
            log_prompts=args.log_prompts,
            metrics_address=args.metrics or None,
            max_rss_mib=args.worker_max_rss_mib,
            drain_timeout_s=drain_timeout_s(config),
        )
    except (OSError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1

    async def run() -> int:
        stop = _stop_on_signals()
        starting = asyncio.create_task(pool.start(text))
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # a signal during start-up
                starting.cancel()
                return 0
            try:
                starting.result()
            except (WorkerExited, TimeoutError, OSError) as exc:
                print(f"serve: {exc}", file=sys.stderr)
                return 1
            watcher = None
            if args.watch_interval > 0:
                from plano_extproc.config import parse_config
                from plano_extproc.reload import ConfigWatcher, reporting_reloader

                served = [config]

                async def reload(new: PlanoConfig) -> str:
                    assert watcher is not None
                    outcome = await pool.reload(watcher.text)
                    served[0] = new
                    return outcome

                watcher = ConfigWatcher(
                    args.config,
                    lambda t: parse_config(t, os.environ),
                    reporting_reloader(reload, lambda: served[0], lambda: pool.generation, args.config),
                    pool.metrics,
                    args.watch_interval,
                    text,
                )
                watcher.start()
            addresses = ", ".join(worker_address(args.listen, k, args.workers) for k in range(args.workers))
            print(f"plano-extproc serving ext_proc + RoutingService with {args.workers} worker process(es) on {addresses}", flush=True)
            await stop.wait()
            if watcher is not None:
                await watcher.stop()
            return 0
        finally:
            stopper.cancel()
            for task in (starting, stopper):
                with contextlib.suppress(BaseException):
                    await task
            await pool.stop()

    return asyncio.run(run())


def _cmd_up(args: argparse.Namespace) -> int:
    from plano_devtools.local import LocalGateway
    from plano_extproc.extproc.server import open_relay

    _configure_logging(args.log_level, args.log_format == "json")
    if _worker_limit_without_a_second_worker(args, "up"):
        return 2
    try:
        text = open(args.config, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        print(f"{args.config}: cannot read the config file ({exc.strerror})", file=sys.stderr)
        return 1

    async def run() -> int:
        # Signals are ours from the start: a Ctrl-C or SIGTERM during start-up (a slow warm-up, a local
        # Triton loading) stops what has started and removes the work directory like any other stop.
        stop = _stop_on_signals()
        gateway = LocalGateway(
            text,
            mock_providers=args.mock_providers,
            local_triton=args.local_triton,
            listener_port=args.port,
            envoy_concurrency=args.envoy_concurrency,
            metrics_port=args.metrics_port,
            config_path=args.config,
            watch_interval=args.watch_interval,
            drain_time_s=args.drain_time_s,
            parent_shutdown_time_s=args.parent_shutdown_time_s,
            workers=args.workers,
            worker_max_rss_mib=args.worker_max_rss_mib,
            log_level=args.log_level,
            log_format=args.log_format,
        )
        stopper = asyncio.create_task(stop.wait())
        try:
            starting = asyncio.create_task(gateway.start())
            await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
                print("stopped during start-up", file=sys.stderr, flush=True)
                return 130
            try:
                starting.result()
            except ConfigError as exc:
                print(f"{args.config}: invalid config", file=sys.stderr)
                for line in exc.errors:
                    print(f"  {line}", file=sys.stderr)
                return 1
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"up: {exc}", file=sys.stderr)
                return 1
            mocks = ", ".join(f"{m.name} at {m.base_url}" for m in gateway.mocks.values())
            workers = f" ({args.workers} ext_proc worker process{'es' if args.workers > 1 else ''})" if args.workers else ""
            print(
                f"plano gateway ready on {gateway.url}{workers}\n"
                f"  proxy:     POST {gateway.url}/v1/chat/completions | /v1/messages | /v1/responses\n"
                f"  decisions: POST {gateway.url}/routing/v1/chat/completions | /routing/v1/messages | /routing/v1/responses\n"
                f"  metrics:   http://127.0.0.1:{gateway.metrics_port}/metrics (ext_proc), "
                f"http://127.0.0.1:{gateway.stats_port}/stats/prometheus (Envoy)"
                + (f"\n  mock providers: {mocks}" if mocks else "")
                + "\nCtrl-C stops everything.",
                flush=True,
            )
            if gateway.config is not None and open_relay(gateway.config):
                print(
                    f"WARNING: {gateway.config.listener_address}:{gateway.config.listener_port} is open to other hosts and "
                    "no client key is required: anyone who reaches it uses your provider keys (add client_auth keys, or "
                    "listen on 127.0.0.1)",
                    file=sys.stderr,
                    flush=True,
                )
            envoy_died = asyncio.create_task(gateway.wait_envoy_exit())  # follows Envoy across hot restarts
            await asyncio.wait({envoy_died, stopper}, return_when=asyncio.FIRST_COMPLETED)
            status = 0
            if envoy_died.done() and not stop.is_set():
                print(f"up: envoy exited unexpectedly:\n{gateway.envoy_log()[-2000:]}", file=sys.stderr)
                status = 1
            envoy_died.cancel()
            return status
        finally:
            stopper.cancel()
            await gateway.stop()  # every exit path: children stopped, the work directory removed
            print("stopped", flush=True)

    return asyncio.run(run())


def _cmd_render_envoy(args: argparse.Namespace) -> int:
    from plano_extproc.bootstrap import render_bootstrap_yaml

    config = _load_or_exit(args.config, resolve_secrets=False)  # keys never go into the bootstrap
    try:
        text = render_bootstrap_yaml(
            config,
            extproc_address=args.extproc,
            admin=f"unix:{args.admin_socket}" if args.admin_socket else args.admin_port,
            listener_port=args.port,
            probe_port=args.probe_port,
            workers=args.workers,
        )
    except ValueError as exc:  # a bad --extproc address
        print(f"render-envoy: --extproc: {exc}", file=sys.stderr)
        return 2
    if args.output and args.output != "-":
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            print(f"render-envoy: cannot write {args.output} ({exc.strerror})", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


#: more worker processes than this is a typo, not a machine
MAX_WORKERS = 64


WORKER_MAX_RSS_NEEDS = "--worker-max-rss-mib needs --workers 2 or more: a worker is replaced only while another serves"
WORKER_MAX_RSS_HELP = (
    "replace a worker process whose resident memory passes this many MiB, without failing a request: it drains "
    "(Envoy's health check steers new requests to the others), finishes what it has, and is restarted. Needs "
    "--workers 2 or more. Off by default"
)


def _worker_limit_without_a_second_worker(args: argparse.Namespace, command: str) -> bool:
    """True (and says so on stderr) when --worker-max-rss-mib is given with fewer than 2 workers."""
    if args.worker_max_rss_mib is not None and args.workers < 2:
        print(f"{command}: {WORKER_MAX_RSS_NEEDS}", file=sys.stderr)
        return True
    return False


def _mib_arg(value: str) -> float:
    try:
        mib = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not mib > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return mib


def _workers_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"between 0 and {MAX_WORKERS}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plano-extproc", description="Envoy external processor for LLM routing")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a plano config file; prints OK or every error")
    check.add_argument("config")
    check.add_argument("--no-secrets", action="store_true", help="do not require $VAR access keys to be set")
    check.set_defaults(func=_cmd_check_config)

    route = sub.add_parser("route", help="print the routing decision for one message")
    route.add_argument("text", nargs="?", help="the user's message")
    route.add_argument("--config", default=DEMO_CONFIG, help="plano config file (default: the demo config)")
    route.add_argument("--format", default="openai_chat", choices=list(BY_NAME), help="the client API of the body")
    route.add_argument("--model", help="the model the client asks for")
    route.add_argument("--session", help="an X-Model-Affinity session id")
    route.add_argument("--body", help="a whole request body as JSON ('-' reads stdin) instead of TEXT")
    route.set_defaults(func=_cmd_route)

    serve = sub.add_parser("serve", help="run the ext_proc gRPC service alone (sidecar deployments)")
    serve.add_argument("--config", required=True)
    serve.add_argument("--listen", default=DEFAULT_EXTPROC_ADDRESS, help="host:port or unix:/path/to.sock (loopback or a socket unless --expose-extproc)")
    serve.add_argument(
        "--expose-extproc",
        action="store_true",
        help="allow a --listen address other hosts can reach: the port hands out requests signed with the providers' keys",
    )
    serve.add_argument("--metrics", default="0.0.0.0:9090", help="host:port of the Prometheus /metrics endpoint ('' = off)")
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="info logs one line per decision")
    serve.add_argument("--log-format", default="json", choices=["json", "text"])
    serve.add_argument("--log-prompts", action="store_true", help="include the latest user message in decision logs")
    serve.add_argument(
        "--watch-interval", type=float, default=2.0, metavar="SECONDS",
        help="poll the config file and apply a changed, valid version without a restart (default 2; 0 = off). A change "
        "that needs a new Envoy bootstrap is reported: re-render it and restart Envoy",
    )
    serve.add_argument(
        "--workers", type=_workers_arg, default=0, metavar="N",
        help="run N ext_proc worker processes under a supervisor that restarts a crashed one and serves their merged "
        "--metrics (worker k listens on the --listen address with -k before .sock, or on port+k); render the Envoy "
        "bootstrap with the same render-envoy --workers N. Default 0: this process serves alone",
    )
    serve.add_argument("--worker-max-rss-mib", type=_mib_arg, default=None, metavar="MIB", help=WORKER_MAX_RSS_HELP)
    serve.add_argument("--work-dir", default=None, metavar="DIR",
                       help="with --workers: where the supervisor makes its private directory (default $TMPDIR)")
    serve.set_defaults(func=_cmd_serve)

    render = sub.add_parser("render-envoy", help="print the Envoy bootstrap for a plano config")
    render.add_argument("--config", required=True)
    render.add_argument("--extproc", default=DEFAULT_EXTPROC_ADDRESS, help="where `serve` listens: host:port or unix:/path")
    render.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin interface on 127.0.0.1 (default 9901)")
    render.add_argument(
        "--admin-socket",
        default=None,
        help="put the admin interface on this Unix socket (mode 0600) instead: only its owner can switch Envoy to "
        "debug logging, which prints request headers and so the providers' keys",
    )
    render.add_argument("--port", type=int, default=None, help="listener port (default: from the config)")
    render.add_argument("--probe-port", type=int, default=None, help="also listen here (0.0.0.0) with only /ready and /stats/prometheus")
    render.add_argument(
        "--workers", type=_workers_arg, default=1, metavar="N",
        help="the ext_proc runs as N worker processes (serve --workers N): one cluster endpoint per worker address "
        "(--extproc with -k before .sock, or port+k) and the later processors rendered once per worker (default 1)",
    )
    render.add_argument("-o", "--output", default="-")
    render.set_defaults(func=_cmd_render_envoy)

    up = sub.add_parser("up", help="run Envoy + the ext_proc service (+ mock providers) in the foreground")
    up.add_argument("--config", default=DEMO_CONFIG, help="plano config file (default: the demo config)")
    up.add_argument("--mock-providers", action="store_true", help="serve every provider from built-in local mocks (offline, no keys)")
    up.add_argument("--port", type=int, default=None, help="listener port (default: from the config, else 12000)")
    up.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads (default 1: leaves CPU to Python)")
    up.add_argument("--metrics-port", type=int, default=9090, help="ext_proc Prometheus /metrics on 127.0.0.1 (default 9090)")
    up.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="info logs one line per decision")
    up.add_argument("--log-format", default="json", choices=["json", "text"])
    up.add_argument("--watch-interval", type=float, default=2.0, metavar="SECONDS",
                    help="poll the config file and apply a changed, valid version without a restart, hot-restarting Envoy "
                    "when its bootstrap changes (default 2; 0 = off)")
    up.add_argument("--drain-time-s", type=int, default=3, help="on an Envoy hot restart: how long the old Envoy drains its connections")
    up.add_argument("--parent-shutdown-time-s", type=int, default=15,
                    help="on an Envoy hot restart: when the old Envoy exits, cutting requests still running on it (default 15)")
    up.add_argument("--workers", type=_workers_arg, default=1, metavar="N",
                    help="ext_proc worker processes, supervised: a crashed one is restarted (default 1; 0 = in this process, "
                    "without restarts)")
    up.add_argument("--worker-max-rss-mib", type=_mib_arg, default=None, metavar="MIB", help=WORKER_MAX_RSS_HELP)
    up.add_argument("--local-triton", action="store_true",
                    help="start a CPU tritonserver serving triton_models/<routing.router.model> (backend: triton, model: arch_router_cpu) and route through it")
    up.set_defaults(func=_cmd_up)

    demo = sub.add_parser("demo", help="start the gateway with mock providers, send the seed demo requests, print, stop")
    demo.add_argument("--config", default=DEMO_CONFIG)
    demo.add_argument("--port", type=int, default=None, help="listener port (default: a free one)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C before the command's own handlers are installed (loading, warm-up): no traceback
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
