"""``infaas-real serve [key=value ...]``: run the KServe v2 server (``configs/serve.yaml``).

Builds the catalog, cluster, applications and policy from the composed config, then serves
with uvicorn (uvloop and httptools when installed: they cut the per-request overhead)
until interrupted. Binds ``server.host`` (127.0.0.1 by default).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence

from infaas_core.control.startup import check_run
from infaas_real.server.app import InferenceServer
from infaas_real.server.config import (
    build_apps,
    build_catalog,
    build_cluster,
    build_policy,
    build_server_settings,
    compose,
    server_cpus,
)


def build_server(overrides: Sequence[str]) -> tuple[InferenceServer, dict[str, object]]:
    """The server object for ``overrides`` and the composed config (nothing started yet)."""
    cfg = compose("serve", overrides).cfg
    catalog = build_catalog(cfg)
    cluster = build_cluster(cfg)
    apps = build_apps(cfg)
    check_run(catalog, cluster, apps, cfg.get("policy"))  # before a port is bound or a worker spawned
    policy = build_policy(cfg, catalog, cluster, apps)
    server, state, executor = build_server_settings(cfg)
    return InferenceServer(catalog, cluster, policy, server, state, executor), cfg


def uvicorn_options() -> dict[str, str]:
    """The fastest event loop and HTTP parser installed."""
    have = importlib.util.find_spec
    return {
        "loop": "uvloop" if have("uvloop") else "asyncio",
        "http": "httptools" if have("httptools") else "h11",
    }


def main(overrides: Sequence[str]) -> int:
    import uvicorn

    srv, cfg = build_server(overrides)
    cpus = server_cpus(cfg)
    if cpus:  # before any worker process is spawned; workers pin themselves to executor.cpus
        os.sched_setaffinity(0, cpus)
    s = srv.settings
    level = str(dict(cfg.get("server", {}) or {}).get("log_level", "warning"))  # type: ignore[call-overload]
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = uvicorn.Config(
        srv.build(),
        host=s.host,
        port=s.port,
        limit_concurrency=s.limit_concurrency,
        access_log=False,
        log_level=level,
        timeout_graceful_shutdown=5,
        **uvicorn_options(),  # type: ignore[arg-type]
    )
    print(f"infaas-real serve: listening on http://{s.host}:{s.port}", flush=True)
    uvicorn.Server(config).run()
    return 0
