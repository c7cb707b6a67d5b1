"""TLS: the issue's program, mutual authentication, and what is refused (and how it is said)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import pickle
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import psutil
import pytest
import trio
import trustme

from trioclust import (
    Client,
    EncryptionRequiredError,
    LocalCluster,
    ProtocolError,
    Scheduler,
    Security,
    TLSConnectionError,
    Worker,
    transport,
)
from trioclust.protocol import PROTOCOL_VERSION, dumps, frame_prefix
from trioclust.transport.tls import NOT_TLS_ALERT

# ------------------------------------------------ the issue's program, as written
security = Security.temporary()


async def main() -> None:
    async with Scheduler(security=security) as scheduler:
        async with Worker(scheduler.address, security=security) as worker:  # noqa: F841
            async with Client(scheduler.address, security=security, asynchronous=True) as client:
                print(await client.submit(lambda: 1 + 1))


def test_prints_two_under_trio_run(capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(main)
    assert capsys.readouterr().out == "2\n"


def test_prints_two_under_asyncio_run(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(main())
    assert capsys.readouterr().out == "2\n"


# ------------------------------------------------------------------ Security
def test_security_repr_hides_keys() -> None:
    text = repr(security)
    assert "PRIVATE KEY" not in text
    assert "BEGIN" not in text
    assert "<PEM private key>" in text
    assert "<PEM certificate>" in text
    assert "require_encryption=True" in text


def test_security_round_trips_through_json() -> None:
    again = Security.from_json(security.to_json())
    assert again == security
    assert again.tls_min_version == ssl.TLSVersion.TLSv1_2
    security.client_context("client")  # fills its cache of SSL contexts, which stay behind
    assert pickle.loads(pickle.dumps(security)) == security
    with pytest.raises(ValueError, match="Not a Security"):
        Security.from_json('{"tls_ca_file": 3, "nonsense": 1}')


def test_security_takes_files(tmp_path: pytest.TempPathFactory) -> None:
    paths = {}
    for name, text in (
        ("ca", security.tls_ca_file),
        ("cert", security.tls_worker_cert),
        ("key", security.tls_worker_key),
    ):
        path = tmp_path / f"{name}.pem"  # type: ignore[operator]
        path.write_text(str(text))
        paths[name] = path
    sec = Security(tls_ca_file=paths["ca"], tls_worker_cert=paths["cert"], tls_worker_key=paths["key"])
    assert sec.tls_ca_file == str(paths["ca"])
    assert isinstance(sec.server_context("worker"), ssl.SSLContext)
    # a role without its own certificate uses the one given
    assert sec.certificate("client") == (str(paths["cert"]), str(paths["key"]))
    assert sec.default_protocol == "tls"


def test_security_says_what_is_missing(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(ValueError, match="tls_ca_file"):
        Security().client_context("client")
    with pytest.raises(ValueError, match="needs a certificate"):
        Security(tls_ca_file=security.tls_ca_file).server_context("scheduler")
    with pytest.raises(ValueError, match="Cannot load the CA"):
        Security(tls_ca_file=str(tmp_path / "missing.pem")).client_context("client")  # type: ignore[operator]
    with pytest.raises(ValueError, match="tls_min_version"):
        Security(tls_min_version="1.1")
    assert Security(tls_min_version="1.3").tls_min_version == ssl.TLSVersion.TLSv1_3
    assert Security().default_protocol == "tcp"


# ------------------------------------------ what Security.temporary() makes
def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[dict[str, object], dict[str, object]]:
    """A TLS handshake in memory; the certificate each side received."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    ends = [
        (server.wrap_bio(server_in, server_out, server_side=True), server_out, client_in),
        (client.wrap_bio(client_in, client_out, server_hostname=server_hostname), client_out, server_in),
    ]
    done: set[int] = set()
    for _ in range(10):  # TLS 1.3 needs two round trips
        for i, (end, outgoing, peer_incoming) in enumerate(ends):
            if i not in done:
                try:
                    end.do_handshake()
                    done.add(i)
                except ssl.SSLWantReadError:
                    pass
            peer_incoming.write(outgoing.read())
        if len(done) == 2:
            server_end, client_end = ends[0][0], ends[1][0]
            return server_end.getpeercert() or {}, client_end.getpeercert() or {}
    raise AssertionError("the in-memory handshake did not finish")


def test_temporary_certificate_names_the_local_host_and_serves_both_ends(tmp_path: Path) -> None:
    made = Security.temporary()
    # a stricter client than the cluster's own: it checks host names too
    strict = ssl.create_default_context(cadata=made.tls_ca_file)
    (tmp_path / "cert.pem").write_text(str(made.tls_client_cert))
    (tmp_path / "key.pem").write_text(str(made.tls_client_key))
    strict.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    for name in ("localhost", "127.0.0.1", "::1"):
        seen_by_server, seen_by_client = _handshake(made.server_context("scheduler"), strict, name)
        assert seen_by_server == seen_by_client  # one certificate, client and server auth
    assert seen_by_client["subjectAltName"] == (
        ("DNS", "localhost"),
        ("IP Address", "127.0.0.1"),
        ("IP Address", "0:0:0:0:0:0:0:1"),
    )
    days = (ssl.cert_time_to_seconds(str(seen_by_client["notAfter"])) - time.time()) / 86400
    assert 364 < days <= 365
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(made.server_context("scheduler"), strict, "example.com")
    # a fresh CA each time: the certificates of one do not admit to another
    assert Security.temporary().tls_ca_file != made.tls_ca_file


# ------------------------------------------- a CA of your own (trustme's)
def _issue(ca: trustme.CA, **kwargs: datetime.datetime) -> tuple[str, str]:
    leaf = ca.issue_cert("localhost", "127.0.0.1", **kwargs)
    return leaf.cert_chain_pems[0].bytes().decode(), leaf.private_key_pem.bytes().decode()


@pytest.mark.anyio
async def test_each_role_with_a_certificate_of_its_own() -> None:
    ca = trustme.CA()
    ca_pem = ca.cert_pem.bytes().decode()
    (s_cert, s_key), (w_cert, w_key), (c_cert, c_key) = _issue(ca), _issue(ca), _issue(ca)
    for_scheduler = Security(tls_ca_file=ca_pem, tls_scheduler_cert=s_cert, tls_scheduler_key=s_key)
    for_worker = Security(tls_ca_file=ca_pem, tls_worker_cert=w_cert, tls_worker_key=w_key)
    for_client = Security(tls_ca_file=ca_pem, tls_client_cert=c_cert, tls_client_key=c_key)
    async with Scheduler(security=for_scheduler) as s, Worker(s.address, security=for_worker):
        async with Client(s.address, security=for_client, asynchronous=True) as client:
            assert await client.submit(lambda: 40 + 2) == 42
            info = await client.scheduler_info()
            assert [a.startswith("tls://") for a in info["workers"]] == [True]


@pytest.mark.anyio
async def test_expired_certificate_is_refused(transport_log: LogLines) -> None:
    ca = trustme.CA()
    ca_pem = ca.cert_pem.bytes().decode()
    now = datetime.datetime.now(datetime.UTC)
    expired = _issue(ca, not_before=now - datetime.timedelta(days=2), not_after=now - datetime.timedelta(days=1))
    cert, key = _issue(ca)
    for_scheduler = Security(tls_ca_file=ca_pem, tls_scheduler_cert=cert, tls_scheduler_key=key)
    late = Security(tls_ca_file=ca_pem, tls_client_cert=expired[0], tls_client_key=expired[1])
    async with Scheduler(security=for_scheduler) as s:
        with pytest.raises(TLSConnectionError, match="'certificate expired'"):
            await Client(s.address, security=late, asynchronous=True, timeout=5)
        await transport_log.wait_for("(certificate has expired)")


# -------------------------------------------------------------- refusals
class LogLines(logging.Handler):
    """Records of ``trioclust.transport``, awaitable from any thread (the
    scheduler runs on a thread of its own under asyncio)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def _wait(self, text: str) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self.lines), 10)

    async def wait_for(self, text: str) -> str:
        assert await anyio.to_thread.run_sync(self._wait, text), f"{text!r} not in {self.lines}"
        return next(line for line in self.lines if text in line)


@pytest.fixture
def transport_log() -> Iterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("trioclust.transport")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
async def tls_scheduler() -> AsyncIterator[Scheduler]:
    async with Scheduler(security=security) as s, Worker(s.address, security=security):
        yield s


async def assert_still_serves(s: Scheduler) -> None:
    async with Client(s.address, security=security, asynchronous=True) as client:
        assert await client.submit(lambda: 40 + 2) == 42
        info = await client.scheduler_info()
        assert [a.startswith("tls://") for a in info["workers"]] == [True]


@pytest.mark.anyio
async def test_servers_speak_tls_with_security(tls_scheduler: Scheduler) -> None:
    assert tls_scheduler.address.startswith("tls://127.0.0.1:")
    await assert_still_serves(tls_scheduler)


@pytest.mark.anyio
async def test_no_certificate_is_refused(tls_scheduler: Scheduler, transport_log: LogLines) -> None:
    no_certificate = Security(tls_ca_file=security.tls_ca_file)
    with pytest.raises(TLSConnectionError, match="requires a certificate and this side presented none"):
        await Client(tls_scheduler.address, security=no_certificate, asynchronous=True, timeout=5)
    line = await transport_log.wait_for("presented no certificate")
    assert line.startswith("Refused TLS connection from tls://127.0.0.1:")
    await assert_still_serves(tls_scheduler)


@pytest.mark.anyio
async def test_certificate_from_another_ca_is_refused(
    tls_scheduler: Scheduler, transport_log: LogLines
) -> None:
    other = Security.temporary()
    # trusts the cluster's CA, but its own certificate comes from another
    impostor = Security(
        tls_ca_file=security.tls_ca_file,
        tls_client_cert=other.tls_client_cert,
        tls_client_key=other.tls_client_key,
    )
    with pytest.raises(TLSConnectionError, match=r"does not trust this side's certificate \(TLS alert: unknown ca\)"):
        await Client(tls_scheduler.address, security=impostor, asynchronous=True, timeout=5)
    await transport_log.wait_for("its certificate failed verification")
    # another cluster altogether: this side refuses the scheduler's certificate first
    with pytest.raises(TLSConnectionError, match="its certificate failed verification"):
        await Client(tls_scheduler.address, security=other, asynchronous=True, timeout=5)
    await transport_log.wait_for("does not trust this side's certificate")
    await assert_still_serves(tls_scheduler)


@pytest.mark.anyio
async def test_plain_tcp_to_a_tls_port_is_refused(
    tls_scheduler: Scheduler, transport_log: LogLines
) -> None:
    plain = tls_scheduler.address.replace("tls://", "tcp://")
    with pytest.raises(ProtocolError, match="it speaks TLS"):
        await Client(plain, asynchronous=True, timeout=5)
    await transport_log.wait_for("does not speak TLS")
    # raw bytes, a whole trioclust handshake among them: all that comes back is
    # a TLS alert, then the end; nothing was read as a trioclust message
    host, port = plain.removeprefix("tcp://").rsplit(":", 1)
    hello = dumps({"op": "handshake", "protocol": PROTOCOL_VERSION, "role": "client", "name": "raw"})
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(frame_prefix(hello) + b"".join(bytes(f) for f in hello))
        received = b""
        with anyio.fail_after(10):
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert received == NOT_TLS_ALERT
    await assert_still_serves(tls_scheduler)


@pytest.mark.anyio
async def test_tls_client_to_a_plain_port_says_so() -> None:
    async with Scheduler() as s:
        tls_address = s.address.replace("tcp://", "tls://")
        with pytest.raises(TLSConnectionError, match=r"it does not speak TLS .*: is it a tcp:// or ws:// peer\?"):
            await Client(tls_address, security=security, asynchronous=True, timeout=5)


@pytest.mark.anyio
async def test_require_encryption_refuses_plain_addresses(tls_scheduler: Scheduler) -> None:
    plain = tls_scheduler.address.replace("tls://", "tcp://")
    with pytest.raises(EncryptionRequiredError, match=r"use tls://127\.0\.0\.1:\d+ instead"):
        await Client(plain, security=security, asynchronous=True, timeout=5)
    with pytest.raises(EncryptionRequiredError, match="use tls://"):
        async with Scheduler(security=security, protocol="tcp"):
            pass
    with pytest.raises(EncryptionRequiredError, match="use tls://"):
        async with Worker(plain, security=security):
            pass
    with pytest.raises(EncryptionRequiredError, match="use wss://"):
        await transport.listen("ws://127.0.0.1:0", security=security)
    # inproc:// never leaves the process: allowed
    listener = await transport.listen("inproc://", security=security)
    await listener.aclose()
    await assert_still_serves(tls_scheduler)


@pytest.mark.anyio
async def test_tls_without_security_says_what_to_pass(tls_scheduler: Scheduler) -> None:
    with pytest.raises(ValueError, match=r"tls:// needs certificates to connect: pass security="):
        await Client(tls_scheduler.address, asynchronous=True, timeout=5)


def test_client_security_true_needs_its_own_cluster() -> None:
    with pytest.raises(TypeError, match="only a cluster this client starts"):
        Client("tls://127.0.0.1:1", security=True, asynchronous=True)


# ------------------------------------------------------- worker processes
@pytest.mark.slow
def test_local_cluster_with_security_true_uses_tls_in_worker_processes() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, security=True, dashboard_address=None) as cluster:
        assert cluster.security is not None
        assert cluster.security.require_encryption
        assert cluster.scheduler_address.startswith("tls://")
        with Client(cluster) as client:  # the cluster's Security, by default
            futures = client.map(lambda x: x * 2, range(20))
            assert client.submit(sum, futures).result() == 380
            addresses = sorted(client.run(lambda: 0))
            assert len(addresses) == 2
            assert all(a.startswith("tls://") for a in addresses)
        # the keys reached the worker processes through their stdin: not through
        # their command line or environment, where other processes could read them
        pids = [n.worker_pid for n in cluster.workers.values()]  # type: ignore[union-attr]
        for pid in pids:
            assert pid is not None
            process = psutil.Process(pid)
            assert "PRIVATE KEY" not in " ".join(process.cmdline())
            assert not any("PRIVATE KEY" in v for v in process.environ().values())
