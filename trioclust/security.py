"""``Security``: the certificates a cluster authenticates its members with.

Theory of operation
-------------------
A cluster that uses TLS has one certificate authority (CA) of its own. Every
member, scheduler, worker and client, holds a certificate that CA signed and
trusts nothing else: each side of a ``tls://`` (or ``wss://``) connection
checks the other's certificate against the CA, and a peer without one, or
with one from another CA, is refused during the TLS handshake, before a
single trioclust message is read. That is what makes it safe for the
scheduler and workers to accept pickled functions: pickle is only ever read
from an authenticated peer.

Host names are not checked. The CA is the cluster's own, so holding a
certificate it signed is what admits a member, wherever it runs; workers are
reached by IP address and move between hosts, which host-name checks would
only get in the way of. (The certificates :meth:`Security.temporary` makes
name ``localhost``, ``127.0.0.1`` and ``::1`` all the same.) Use a CA
dedicated to the cluster, never a public one.

Each field takes a file path or the PEM text itself. The ``ssl`` module reads
certificates and keys only from files, so PEM text is handed to OpenSSL
through an anonymous in-memory file (``memfd_create``, on Linux) or, where
there is none, a file in a private temporary directory (mode 0700, the file
0600) removed as soon as it is read: key material never stays on disk.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ROLES", "Security"]

#: The roles a member of a cluster plays; each may have a certificate of its own.
ROLES = ("scheduler", "worker", "client")

_FIELDS = (
    "tls_ca_file",
    "tls_client_cert",
    "tls_client_key",
    "tls_scheduler_cert",
    "tls_scheduler_key",
    "tls_worker_cert",
    "tls_worker_key",
)
_VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1_2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
    "tlsv1_3": ssl.TLSVersion.TLSv1_3,
}
# how long the certificates of Security.temporary() are valid
_TEMPORARY_DAYS = 365


def _is_pem(value: str) -> bool:
    return "-----BEGIN" in value


def _show(value: str | None) -> str:
    if value is None:
        return "None"
    if not _is_pem(value):
        return repr(value)
    return "<PEM private key>" if "PRIVATE KEY" in value else "<PEM certificate>"


@contextlib.contextmanager
def _as_file(value: str) -> Iterator[str]:
    """A path OpenSSL can read ``value`` from: itself if it is a path, else a private file."""
    if not _is_pem(value):
        yield value
        return
    data = value.encode()
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("trioclust-pem", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="trioclust-tls-") as folder:  # mode 0700
        path = os.path.join(folder, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True, repr=False)
class Security:
    """Certificates and TLS settings for the members of a cluster.

    Pass the same object (or one with the same CA) to every member:
    ``Scheduler(security=sec)``, ``Worker(address, security=sec)``,
    ``Nanny(address, security=sec)``, ``Client(address, security=sec)``,
    ``LocalCluster(security=sec)``. With one, servers listen on ``tls://``
    unless told otherwise.

    Each certificate or key is a file path or the PEM text itself. A
    certificate file may hold the key too (then leave the key out). A role
    without a certificate of its own uses the first one given among the
    scheduler's, the worker's and the client's.

    Args:
        tls_ca_file: the CA certificate(s) that signed the cluster's certificates;
            peers are checked against it and nothing else.
        tls_client_cert: the certificate a client presents.
        tls_client_key: its private key.
        tls_scheduler_cert: the certificate the scheduler presents.
        tls_scheduler_key: its private key.
        tls_worker_cert: the certificate workers (and their nannies) present.
        tls_worker_key: its private key.
        require_encryption: refuse unencrypted addresses (``tcp://``,
            ``ws://``) for connecting and listening, with an
            :class:`~trioclust.EncryptionRequiredError` that names the
            encrypted address to use; ``inproc://`` (inside one process)
            stays allowed.
        tls_min_version: the oldest TLS version accepted: ``ssl.TLSVersion``,
            or ``"1.2"`` (the default), ``"1.3"``.
    """

    tls_ca_file: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    tls_scheduler_cert: str | None = None
    tls_scheduler_key: str | None = None
    tls_worker_cert: str | None = None
    tls_worker_key: str | None = None
    require_encryption: bool = False
    tls_min_version: ssl.TLSVersion | str = ssl.TLSVersion.TLSv1_2
    _contexts: dict[tuple[str, bool], ssl.SSLContext] = field(
        default_factory=dict, init=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                if isinstance(value, os.PathLike):
                    object.__setattr__(self, name, os.fspath(value))
                else:
                    raise TypeError(
                        f"Security({name}=...) takes a file path or PEM text, "
                        f"not {type(value).__name__}"
                    )
        version = self.tls_min_version
        if not isinstance(version, ssl.TLSVersion):
            found = _VERSIONS.get(str(version).lower())
            if found is None:
                raise ValueError(
                    f"Security(tls_min_version={version!r}): use '1.2', '1.3' or an ssl.TLSVersion"
                )
            object.__setattr__(self, "tls_min_version", found)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_show(getattr(self, name))}" for name in _FIELDS if getattr(self, name)
        )
        version = self.tls_min_version
        version_name = version.name if isinstance(version, ssl.TLSVersion) else str(version)
        return (
            f"Security({shown}{', ' if shown else ''}require_encryption={self.require_encryption}, "
            f"tls_min_version={version_name})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # the cached SSL contexts cannot be pickled (nor should they travel)
        return (Security.from_json, (self.to_json(),))

    # ------------------------------------------------------------ making one
    @classmethod
    def temporary(cls) -> Security:
        """A fresh CA and a certificate it signed, for every role, in memory only.

        Nothing is written to disk: the CA's own key is thrown away once the
        certificate is signed, so no other certificate can ever join this
        cluster. The certificate names ``localhost``, ``127.0.0.1`` and
        ``::1``, serves both ends of a connection, and is valid for a year
        (from an hour ago, as clocks differ a little). ``require_encryption``
        is on. ``LocalCluster(security=True)`` uses one; its nannies hand it
        to their worker processes through the processes' stdin.
        """
        import trustme  # imports cryptography: only when certificates are made

        now = datetime.datetime.now(datetime.UTC)
        # path_length=0: the CA signs leaf certificates only, never another CA
        ca = trustme.CA(
            path_length=0, organization_name="trioclust", organization_unit_name="temporary CA"
        )
        leaf = ca.issue_cert(
            "localhost",
            "127.0.0.1",
            "::1",
            common_name="trioclust",
            organization_name="trioclust",
            organization_unit_name="temporary certificate",
            not_before=now - datetime.timedelta(hours=1),
            not_after=now + datetime.timedelta(days=_TEMPORARY_DAYS),
        )
        ca_pem = ca.cert_pem.bytes().decode()
        cert_pem = leaf.cert_chain_pems[0].bytes().decode()
        key_pem = leaf.private_key_pem.bytes().decode()
        return cls(
            tls_ca_file=ca_pem,
            tls_client_cert=cert_pem,
            tls_client_key=key_pem,
            tls_scheduler_cert=cert_pem,
            tls_scheduler_key=key_pem,
            tls_worker_cert=cert_pem,
            tls_worker_key=key_pem,
            require_encryption=True,
        )

    def to_json(self) -> str:
        """All settings as one line of JSON (PEM text included), for :meth:`from_json`.

        This is how a nanny hands its Security to its worker process, over the
        process's stdin. The text holds private keys when the fields do.
        """
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        data["require_encryption"] = self.require_encryption
        version = self.tls_min_version
        data["tls_min_version"] = version.name if isinstance(version, ssl.TLSVersion) else version
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Security:
        """The Security :meth:`to_json` described.

        Raises:
            ValueError: the text is not what :meth:`to_json` writes.
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            version = str(data.pop("tls_min_version", "TLSv1_2"))
            return cls(**data, tls_min_version=_VERSIONS.get(version.lower(), version))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Not a Security in JSON: {exc}") from None

    # ------------------------------------------------------------ using one
    @property
    def default_protocol(self) -> str:
        """The scheme servers listen on by default: ``"tls"`` once a CA is given or
        encryption is required, else ``"tcp"``."""
        return "tls" if self.tls_ca_file or self.require_encryption else "tcp"

    def certificate(self, role: str) -> tuple[str, str | None] | None:
        """The certificate (and key) ``role`` presents, or None when there is none.

        A role without its own uses the first one given among the scheduler's,
        the worker's and the client's.
        """
        role = role if role in ROLES else "client"
        for name in (role, *ROLES):
            cert = getattr(self, f"tls_{name}_cert")
            if cert:
                return cert, getattr(self, f"tls_{name}_key")
        return None

    def server_context(self, role: str) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` a listener of ``role`` uses: it presents the
        role's certificate and requires a client certificate signed by the CA.

        Raises:
            ValueError: no CA, no certificate for the role, or a file that
                cannot be read; the message names the setting.
        """
        return self._context(role, server_side=True)

    def client_context(self, role: str) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` a connection of ``role`` uses: it checks the
        server's certificate against the CA and presents the role's own
        certificate, if it has one (a server refuses it if not).

        Raises:
            ValueError: no CA, or a file that cannot be read.
        """
        return self._context(role, server_side=False)

    def _context(self, role: str, *, server_side: bool) -> ssl.SSLContext:
        cached = self._contexts.get((role, server_side))
        if cached is not None:
            return cached
        if not self.tls_ca_file:
            raise ValueError(
                "TLS needs the cluster's CA: give Security(tls_ca_file=...) (the CA that "
                "signed the cluster's certificates; --tls-ca-file on the command line), "
                "or use Security.temporary()"
            )
        if server_side:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.num_tickets = 0  # no session resumption: nothing the client would leave unread
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False  # the CA is the cluster's own: see the module's docstring
        context.verify_mode = ssl.CERT_REQUIRED
        version = self.tls_min_version
        assert isinstance(version, ssl.TLSVersion)
        context.minimum_version = version
        try:
            if _is_pem(self.tls_ca_file):
                context.load_verify_locations(cadata=self.tls_ca_file)
            else:
                context.load_verify_locations(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"Cannot load the CA (tls_ca_file={_show(self.tls_ca_file)}): {exc}") from None
        found = self.certificate(role)
        if found is None:
            if server_side:
                raise ValueError(
                    f"A {role} listening on TLS needs a certificate: give Security("
                    f"tls_{role if role in ROLES else 'client'}_cert=..., ..._key=...) "
                    f"(--tls-cert and --tls-key on the command line)"
                )
        else:
            cert, key = found
            try:
                with _as_file(cert) as certfile, contextlib.ExitStack() as stack:
                    keyfile = stack.enter_context(_as_file(key)) if key else None
                    context.load_cert_chain(certfile, keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"Cannot load the {role}'s certificate ({_show(cert)}) and key "
                    f"({_show(key)}): {exc}"
                ) from None
        self._contexts[(role, server_side)] = context
        return context
