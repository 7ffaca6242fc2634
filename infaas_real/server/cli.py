"""``infaas-real serve [key=value ...]``: run the KServe v2 server (``configs/serve.yaml``).

Builds the catalog, cluster, applications and policy from the composed config, then serves
with uvicorn (uvloop and httptools when installed: they cut the per-request overhead)
until interrupted. Binds ``server.host`` (127.0.0.1 by default). The HTTP layer
(:mod:`infaas_real.server.httplayer`: header and keep-alive timeouts, connection caps, the
shutdown drain, accounting of every request) is described in docs/server-hardening.md.
KServe v2 over gRPC is served beside HTTP on ``server.grpc_port`` in the same process and
event loop (:mod:`infaas_real.server.grpc_server`, docs/real-backend-grpc.md).
At start the soft open-file limit is raised to the hard one; a line says so when it is still
too low for ``server.max_connections``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
from collections.abc import Sequence

from infaas_core.control.startup import check_run
from infaas_real.server.app import InferenceServer, ServerSettings
from infaas_real.server.config import (
    build_apps,
    build_catalog,
    build_cluster,
    build_policy,
    build_server_settings,
    compose,
    server_cpus,
)
from infaas_real.server.httplayer import ConnectionLimits, DrainingServer, protocol_class

FD_RESERVE = 256
"""Descriptors kept beside client connections: worker pipes, artifacts, logs, the listener."""


def build_server(overrides: Sequence[str]) -> tuple[InferenceServer, dict[str, object]]:
    """The server object for ``overrides`` and the composed config (nothing started yet)."""
    cfg = compose("serve", overrides).cfg
    catalog = build_catalog(cfg)
    cluster = build_cluster(cfg)
    apps = build_apps(cfg)
    check_run(catalog, cluster, apps, cfg.get("policy"))  # before a port is bound or a worker spawned
    policy = build_policy(cfg, catalog, cluster, apps)
    server, state, executor = build_server_settings(cfg)
    mechanism = None
    if cfg.get("ray") is not None:  # cluster=ray: workers are Ray actors (docs/ray.md)
        from infaas_real.raycluster import mechanism_factory, ray_settings_from_mapping

        mechanism = mechanism_factory(ray_settings_from_mapping(cfg["ray"]), connect_now=True)
    return InferenceServer(catalog, cluster, policy, server, state, executor, mechanism=mechanism), cfg


def uvicorn_options() -> dict[str, str]:
    """The fastest event loop installed (the HTTP protocol is httptools', guarded)."""
    have = importlib.util.find_spec
    return {"loop": "uvloop" if have("uvloop") else "asyncio"}


def raise_fd_limit(want: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; a warning line when the result is
    below ``want`` descriptors, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < want:
        return (f"infaas-real serve: warning: the open-file limit is {soft}, below server.max_connections + "
                f"{FD_RESERVE} = {want}; connections beyond about {max(soft - FD_RESERVE, 0)} will fail at accept")
    return None


def limits_of(s: ServerSettings) -> ConnectionLimits:
    return ConnectionLimits(s.max_connections, s.max_connections_per_client, s.header_timeout_s,
                            s.keep_alive_timeout_s)


def main(overrides: Sequence[str]) -> int:
    import uvicorn

    srv, cfg = build_server(overrides)
    cpus = server_cpus(cfg)
    if cpus:  # before any worker process is spawned; workers pin themselves to executor.cpus
        os.sched_setaffinity(0, cpus)
    s = srv.settings
    level = str(dict(cfg.get("server", {}) or {}).get("log_level", "warning"))  # type: ignore[call-overload]
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    warning = raise_fd_limit(s.max_connections + FD_RESERVE)
    if warning:
        print(warning, flush=True)
    config = uvicorn.Config(
        srv.build(),
        host=s.host,
        port=s.port,
        http=protocol_class(srv.http, limits_of(s)),
        limit_concurrency=None,  # it counts idle sockets; admission is the application's
        timeout_keep_alive=s.keep_alive_timeout_s,  # type: ignore[arg-type]
        access_log=False,
        log_level=level,
        timeout_graceful_shutdown=s.shutdown_timeout_s,  # type: ignore[arg-type]
        **uvicorn_options(),  # type: ignore[arg-type]
    )
    print(f"infaas-real serve: listening on http://{s.host}:{s.port}", flush=True)
    DrainingServer(config, srv.http, s.shutdown_drain_s, on_shutdown=srv.begin_grpc_shutdown).run()
    return 0
