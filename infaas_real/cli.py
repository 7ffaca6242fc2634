"""``infaas-real <subcommand> [key=value ...]``: the real backend's command line.

Subcommands take Hydra-style overrides, like the simulator::

    infaas-real profile zoo=digits out=catalogs/digits.csv
    infaas-real serve catalog=digits policy=infaas server.port=8000
    infaas-real replay trace=poisson apps=digits server.url=http://127.0.0.1:8000 hydra.run.dir=runs/r1
    infaas-real calibrate-frontend catalog=imagenet_cpu_small
    infaas-real validate policy=infaas
    infaas-real offline submit task=classification-digits min_accuracy=0.9 input=x.npy output=y.npy
    infaas-real register name=tiny task=classification-tiny input_shape=[16] onnx=tiny.onnx accuracy=0.9

A bad profile, trace or config ends with one clear line and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from infaas_core.errors import InfaasError

# subcommand -> (module, one-line help). Each module exposes ``main(overrides) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "profile": ("infaas_real.profile_cli", "generate and profile model-variants of a zoo -> profile table"),
    "serve": ("infaas_real.server.cli", "run the KServe v2 server on this machine with an infaas_core policy"),
    "replay": ("infaas_real.replay", "replay a trace open-loop against a server; writes the results schema"),
    "validate": ("infaas_real.validate", "run one scenario through the simulator and the real server; compare"),
    "offline": ("infaas_real.server.offline_cli",
                "offline jobs on a running server: submit (with a progress bar), status, cancel"),
    "register": ("infaas_real.registration.cli",
                 "register a trained model (ONNX, or torchvision + weights) with a running server"),
    "calibrate-frontend": ("infaas_real.calibrate_frontend",
                           "measure the server's front end here; write catalogs/<catalog>.frontend.yaml"),
}


def _usage() -> str:
    lines = ["usage: infaas-real <subcommand> [key=value ...]", "", "subcommands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"infaas-real: unknown subcommand '{name}'; known: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    entry: Callable[[list[str]], int] = module.main
    try:
        return int(entry(rest) or 0)
    except InfaasError as exc:
        print(f"infaas-real {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
