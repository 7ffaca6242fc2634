"""``infaas-real register key=value ...``: register a trained model with a running server.

::

    infaas-real register name=tiny task=classification-tiny input_shape=[16] onnx=tiny.onnx validation=val.npz
    infaas-real register name=r18 task=classification-imagenet-224 input_shape=[3,224,224] \\
        architecture=resnet18 weights=resnet18.pt accuracy=0.6976 server.port=8000

Keys: ``name``, ``task``, ``input_shape``, either ``onnx=<file>`` or ``architecture=<torchvision
name> weights=<state_dict file>``, either ``accuracy=<0..1>`` or ``validation=<.npz with x, y>``;
optional ``classes``, ``calibration=<.npz with x>`` (static int8), ``frameworks=[...]``,
``progress=false``. The server is ``server.url`` of configs/serve.yaml (``server.host``,
``server.port`` or ``server.url`` override it; ``registration.*`` keys too). The files are sent base64-encoded in the
body of ``POST /v2/infaas/models``; the job is then polled every ``registration.cli_poll_s``
with a progress bar until it is done. Exit 0: registered; 2: refused (bad model or
arguments; one line says why); 1: the job failed while profiling (nothing was added).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from infaas_core.errors import ConfigError
from infaas_real.registration.spec import RegistrationError, encode_files
from infaas_real.server.client import call_json

REQUEST_KEYS = ("name", "task", "input_shape", "classes", "accuracy", "architecture", "frameworks")
FILE_KEYS = {"onnx": "model", "weights": "model", "validation": "validation", "calibration": "calibration"}
CLI_KEYS = ("progress",)


def parse_args(args: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` arguments -> (the registration's keys, the server.* overrides)."""
    mine: dict[str, Any] = {}
    server: list[str] = []
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or not key:
            raise ConfigError("register", f"arguments are key=value, got '{a}'")
        if key.startswith("server.") or key.startswith("registration."):
            server.append(a)
        elif key in (*REQUEST_KEYS, *FILE_KEYS, *CLI_KEYS):
            mine[key] = value if key in FILE_KEYS or key in ("name", "task", "architecture") else yaml.safe_load(value)
        else:
            known = ", ".join((*REQUEST_KEYS, *FILE_KEYS, *CLI_KEYS, "server.*", "registration.*"))
            raise ConfigError(f"register.{key}", f"unknown key; known: {known}")
    return mine, server


def build_body(args: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /v2/infaas/models`` for the parsed arguments."""
    if ("onnx" in args) == ("weights" in args):
        raise ConfigError("register", "give onnx=<file> or architecture=<name> weights=<file>")
    body: dict[str, Any] = {k: args[k] for k in REQUEST_KEYS if k in args}
    body["format"] = "onnx" if "onnx" in args else "torchvision"
    paths: dict[str, Path | None] = {}
    for key, field in FILE_KEYS.items():
        if key in args:
            p = Path(args[key])
            if not p.is_file():
                raise ConfigError(f"register.{key}", f"no such file: {p}")
            paths[field] = p
    body.update(encode_files(paths))
    return body


def main(overrides: Sequence[str]) -> int:
    from infaas_real.server.config import compose

    args, server = parse_args(overrides)
    cfg = compose("serve", server).cfg
    url = str(cfg["server"]["url"]).rstrip("/")
    cli = cfg["registration"]
    body = json.dumps(build_body(args)).encode()
    try:
        status, answer = call_json(url + "/v2/infaas/models", "POST", body, float(cli["cli_request_timeout_s"]))
    except OSError as exc:
        raise ConfigError("server.url", f"cannot reach the server at {url}: {exc}") from None
    if status != 202:
        raise RegistrationError(status, f"refused ({status}): {answer.get('error', answer)}")
    jid = answer["id"]
    from tqdm import tqdm

    progress = bool(args.get("progress", True))
    bar = tqdm(total=answer["progress"]["total"], unit="runner", desc=f"profiling {args['name']}",
               disable=not progress, file=sys.stderr)  # fmt: skip
    while answer["state"] not in ("done", "failed"):
        time.sleep(float(cli["cli_poll_s"]))
        status, answer = call_json(f"{url}/v2/infaas/jobs/{jid}", timeout_s=float(cli["cli_request_timeout_s"]))
        if status != 200:
            bar.close()
            print(f"infaas-real register: job {jid} lost ({status}): {answer.get('error', answer)}", file=sys.stderr)
            return 1
        bar.total = answer["progress"]["total"]
        bar.n = answer["progress"]["done"]
        bar.refresh()
    bar.close()
    if answer["state"] == "failed":
        print(f"infaas-real register: job {jid} failed, nothing added: {'; '.join(answer['errors'])}", file=sys.stderr)
        return 1
    print(f"registered {args['name']}: {len(answer['variants'])} variants in {answer['elapsed_s']:.1f} s "
          f"({', '.join(answer['variants'])})")  # fmt: skip
    return 0
