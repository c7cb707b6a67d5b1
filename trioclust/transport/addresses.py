"""Addresses: ``scheme://location`` URLs, and host:port locations.

``tcp://127.0.0.1:8786``, ``inproc://1234/0``, and bare ``127.0.0.1:8786``
(which means ``tcp``). Parsing is strict and early: a malformed address is a
``ValueError`` naming the address and showing a correct one, raised before
anything touches the network, so a typo never turns into a connect timeout.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from trioclust.transport.registry import get_backend

__all__ = [
    "EXAMPLE_ADDRESS",
    "normalize_address",
    "parse_address",
    "parse_host_port",
    "split_host_port",
    "unparse_host_port",
]

#: Shown in error messages as what an address should look like.
EXAMPLE_ADDRESS = "tcp://127.0.0.1:8786"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def split_host_port(location: str, default_port: int | None = None) -> tuple[str, int]:
    """:func:`parse_host_port` with terse errors, for backends to wrap.

    Raises:
        ValueError: the reason alone (``"port 'x' is not a number"``).
    """
    port_text: str | None
    if location.startswith("["):
        end = location.find("]")
        if end < 0:
            raise ValueError("'[' without a closing ']'")
        host, rest = location[1:end], location[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        if not rest:
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise ValueError(f"unexpected {rest!r} after ']'")
    else:
        if location.count(":") > 1:
            raise ValueError("too many ':'; an IPv6 host goes in brackets, as in [::1]:8786")
        host, sep, port_text_ = location.partition(":")
        port_text = port_text_ if sep else None
        if not host:
            raise ValueError("no host")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"host {host!r} has characters a host name cannot have")
    if port_text is None:
        if default_port is None:
            raise ValueError("no port")
        port = default_port
    else:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


def parse_host_port(location: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` into its parts.

    Handles ``127.0.0.1:8786``, ``localhost:0`` and ``[::1]:8786`` (the
    brackets are removed from the returned host).

    Args:
        location: the text after ``scheme://``.
        default_port: used when ``location`` has no port; without one a
            missing port is an error.

    Raises:
        ValueError: the location is malformed.
    """
    if not isinstance(location, str):
        raise ValueError(f"Invalid host:port {location!r}: not a string")
    try:
        return split_host_port(location, default_port)
    except ValueError as exc:
        raise ValueError(
            f"Invalid host:port {location!r}: {exc}. "
            f"Expected something like '127.0.0.1:8786' or '[::1]:8786'"
        ) from None


def unparse_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:8786``)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _bad(address: Any, reason: str) -> ValueError:
    return ValueError(
        f"Invalid address {address!r}: {reason}. "
        f"Addresses look like {EXAMPLE_ADDRESS!r} (scheme://host:port)"
    )


def parse_address(addr: str) -> tuple[str, str]:
    """Split an address into its scheme and its normalized location.

    Args:
        addr: ``scheme://location``, or a bare ``host:port`` meaning ``tcp``.

    Returns:
        ``(scheme, location)``, the scheme in lower case.

    Raises:
        ValueError: the address is not a string, is malformed, or names a
            scheme with no registered backend (the message lists those there are).
    """
    if not isinstance(addr, str):
        raise _bad(addr, f"an address is a string, not {type(addr).__name__}")
    if not addr:
        raise _bad(addr, "empty address")
    if addr != addr.strip():
        raise _bad(addr, "leading or trailing whitespace")
    scheme, sep, location = addr.partition("://")
    if not sep:
        scheme, location = "tcp", addr
    elif not _SCHEME.fullmatch(scheme):
        raise _bad(addr, f"{scheme!r} is not a URL scheme")
    scheme = scheme.lower()
    try:
        backend = get_backend(scheme)
    except ValueError as exc:
        raise ValueError(f"Invalid address {addr!r}: {exc}") from None
    try:
        return scheme, backend.parse_location(location)
    except ValueError as exc:
        raise _bad(addr, str(exc)) from None


def normalize_address(addr: str) -> str:
    """The full ``scheme://location`` form of an address.

    Raises:
        ValueError: as :func:`parse_address`.
    """
    scheme, location = parse_address(addr)
    return f"{scheme}://{location}"
