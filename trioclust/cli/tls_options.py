"""``--tls-ca-file``, ``--tls-cert``, ``--tls-key``: the options both commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from trioclust.security import Security

__all__ = ["add_tls_arguments", "protocol_and_security"]


def add_tls_arguments(parser: argparse.ArgumentParser, *, role: str) -> None:
    """Add the TLS options for a command whose servers play ``role``."""
    group = parser.add_argument_group(
        "TLS", "mutual authentication: every member presents a certificate signed by the CA"
    )
    group.add_argument(
        "--tls-ca-file", type=Path, default=None,
        help="the CA certificate that signed the cluster's certificates (PEM)",
    )
    group.add_argument("--tls-cert", type=Path, default=None, help=f"this {role}'s certificate (PEM)")
    group.add_argument(
        "--tls-key", type=Path, default=None,
        help=f"this {role}'s private key (PEM; leave out when --tls-cert holds it)",
    )


def protocol_and_security(args: argparse.Namespace, *, role: str) -> tuple[str | None, Security | None]:
    """The transport scheme and the Security the options ask for.

    With TLS options, encryption is required and the default scheme is
    ``tls``; ``--protocol tls`` or ``wss`` without them is an error.

    Raises:
        SystemExit: the options do not fit together; the message says how.
    """
    protocol: str | None = getattr(args, "protocol", None)
    given = [name for name in ("tls_ca_file", "tls_cert", "tls_key") if getattr(args, name)]
    if not given:
        if protocol in ("tls", "wss"):
            raise SystemExit(f"--protocol {protocol} needs --tls-ca-file, --tls-cert and --tls-key")
        return protocol, None
    if args.tls_ca_file is None or args.tls_cert is None:
        raise SystemExit("TLS needs both --tls-ca-file (the cluster's CA) and --tls-cert (and --tls-key)")
    if protocol in ("tcp", "ws", "ucx"):
        raise SystemExit(
            f"--protocol {protocol} is not encrypted, but TLS certificates were given: use "
            f"--protocol {'wss' if protocol == 'ws' else 'tls'}"
        )
    for path in (args.tls_ca_file, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise SystemExit(f"No such file: {path}")
    cert, key = str(args.tls_cert), str(args.tls_key) if args.tls_key else None
    if role == "scheduler":
        security = Security(
            tls_ca_file=str(args.tls_ca_file), tls_scheduler_cert=cert, tls_scheduler_key=key,
            require_encryption=True,
        )
    else:
        security = Security(
            tls_ca_file=str(args.tls_ca_file), tls_worker_cert=cert, tls_worker_key=key,
            require_encryption=True,
        )
    return protocol or "tls", security
