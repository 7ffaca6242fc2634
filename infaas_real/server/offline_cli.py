"""``infaas-real offline submit|status|cancel key=value ...``: offline jobs on a running server.

::

    infaas-real offline submit task=classification-digits min_accuracy=0.9 input=x.npy output=y.npy
    infaas-real offline status id=job-1 wait=true
    infaas-real offline cancel id=job-1

``submit`` sends ``POST /v2/infaas/offline`` (``input``: a .npy/.npz tensor file or a directory
of images; ``output``: the .npy the server writes; relative paths are taken from this
directory, as the server runs on this machine) and, unless ``wait=false``, follows the job
with a progress bar (inputs done, and the pause reason while paused) until it finishes.
``status`` prints the job's status as JSON (``wait=true``: follow it first). The server is
``server.url`` of configs/serve.yaml (``server.host``/``server.port``/``server.url`` override it),
polled every ``server.offline_cli_poll_s``. Exit 0: accepted (done, when waited for); 2: refused
or bad arguments (one line says why); 1: the job failed or was cancelled.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from infaas_core.errors import ConfigError, InfaasError
from infaas_real.server.client import call_json

ACTIONS = {"submit": ("task", "min_accuracy", "input", "output", "wait"), "status": ("id", "wait"),
           "cancel": ("id",)}  # fmt: skip
FINISHED = ("done", "failed", "cancelled")


class OfflineRefused(InfaasError):
    """The server refused the request (the CLI exits 2 with its reason)."""


def parse_args(action: str, args: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` arguments of ``action`` -> (its keys, the server.* overrides)."""
    keys = ACTIONS[action]
    mine: dict[str, Any] = {}
    server: list[str] = []
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or not key:
            raise ConfigError(f"offline {action}", f"arguments are key=value, got '{a}'")
        if key.startswith("server."):
            server.append(a)
        elif key in keys:
            mine[key] = value if key in ("task", "input", "output", "id") else yaml.safe_load(value)
        else:
            raise ConfigError(f"offline {action}.{key}", f"unknown key; known: {', '.join((*keys, 'server.*'))}")
    return mine, server


def _call(url: str, method: str = "GET", body: Any = None, timeout_s: float = 60.0) -> tuple[int, Any]:
    try:
        return call_json(url, method, body, timeout_s)
    except OSError as exc:
        raise ConfigError("server.url", f"cannot reach the server at {url}: {exc}") from None


def follow(url: str, job: dict[str, Any], poll_s: float, progress: bool = True) -> dict[str, Any]:
    """Poll the job until it finishes, with a progress bar on stderr; its final status."""
    from tqdm import tqdm

    bar = tqdm(total=job["inputs_total"], unit="input", desc=job["id"], disable=not progress, file=sys.stderr)
    try:
        while True:
            bar.n = job["inputs_done"]
            bar.set_postfix_str(job["state"] + (f": {job['paused_reason']}" if job.get("paused_reason") else ""))
            if job["state"] in FINISHED:
                return job
            time.sleep(poll_s)
            status, job = _call(f"{url}/v2/infaas/offline/{job['id']}")
            if status != 200:
                raise OfflineRefused(f"job lost ({status}): {job.get('error', job)}")
    finally:
        bar.close()


def main(overrides: Sequence[str]) -> int:
    from infaas_real.server.config import compose

    if not overrides or overrides[0] not in ACTIONS:
        raise ConfigError("offline", f"usage: infaas-real offline {{{'|'.join(ACTIONS)}}} key=value ...")
    action = overrides[0]
    args, server = parse_args(action, overrides[1:])
    cfg = compose("serve", server).cfg
    url = str(cfg["server"]["url"]).rstrip("/")
    poll_s = float(cfg["server"]["offline_cli_poll_s"])
    wait = bool(args.get("wait", action == "submit"))
    if action == "submit":
        missing = [k for k in ("task", "input", "output") if k not in args]
        if missing:
            raise ConfigError(f"offline submit.{missing[0]}", "missing")
        body = {"task": args["task"], "min_accuracy": args.get("min_accuracy", 0.0),
                "input_path": str(Path(args["input"]).resolve()), "output_path": str(Path(args["output"]).resolve())}
        status, job = _call(url + "/v2/infaas/offline", "POST", body)
        if status != 202:
            raise OfflineRefused(f"refused ({status}): {job.get('error', job)}")
        print(f"submitted {job['id']}: {job['inputs_total']} inputs on {job['variant']}", file=sys.stderr)
    else:
        if "id" not in args:
            raise ConfigError(f"offline {action}.id", "missing")
        status, job = _call(f"{url}/v2/infaas/offline/{args['id']}", "DELETE" if action == "cancel" else "GET")
        if status != 200:
            raise OfflineRefused(f"refused ({status}): {job.get('error', job)}")
    if wait and action != "cancel":
        job = follow(url, job, poll_s)
    print(json.dumps(job))
    return 1 if job["state"] in ("failed", "cancelled") and wait else 0
