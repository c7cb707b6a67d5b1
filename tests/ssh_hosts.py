"""Three SSH hosts on this machine, for SSHCluster's tests (root only).

Each host is a network namespace joined to a bridge in the root namespace
(10.N.0.1) by a veth pair, with its own hostname (``unshare --uts``) and its
own ``sshd -D -f <config>`` listening on 10.N.0.2-4 with a host key of its
own and a generated root key in ``authorized_keys``. Everything made here is
recorded and removed by :meth:`SSHHosts.close`, also after a failed start.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

HOSTS = ("h2", "h3", "h4")
_made = itertools.count()


def missing() -> str | None:
    """Why these hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "SSH hosts in network namespaces need root"
    for tool in ("ssh", "ssh-keygen", "ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (.ci/run installs it)"
    return None


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class SSHHosts:
    """Bridge, namespaces, veths and sshds; ``close()`` removes what was made."""

    def __init__(self, root: Path) -> None:
        self.root = root
        tag = f"{os.getpid() % 1000}{next(_made) % 100}"  # fresh names even while a deleted namespace's veth lingers
        self.subnet = f"10.{190 + os.getpid() % 60}.0"
        self.bridge = f"tcbr{tag}"
        self.namespaces: dict[str, str] = {}  # host name -> namespace
        self.veths: dict[str, str] = {}  # host name -> root-side veth
        self.address = {h: f"{self.subnet}.{i + 2}" for i, h in enumerate(HOSTS)}
        self.sshd: dict[str, subprocess.Popen[bytes]] = {}
        self.key = root / "id_ed25519"
        self.other_key = root / "other_ed25519"
        self._bridge_made = False
        self._tag = tag

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        root = self.root
        for key in (self.key, self.other_key):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (root / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        _run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in HOSTS:
            ns = f"tc{self._tag}{host}"
            _run("ip", "netns", "add", ns)
            self.namespaces[host] = ns
            outer, inner = f"tc{self._tag}{host}o", f"tc{self._tag}{host}i"
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self.veths[host] = outer
            _run("ip", "link", "set", outer, "master", self.bridge, "up")
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", inner)
            _run("ip", "-n", ns, "link", "set", inner, "up")
            host_key = root / f"host_{host}"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
            config = root / f"sshd_{host}.conf"
            config.write_text(
                f"ListenAddress {self.address[host]}\nPort 22\nHostKey {host_key}\n"
                f"PidFile {root}/sshd_{host}.pid\nAuthorizedKeysFile {root}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}\n"
            )
            self.sshd[host] = subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c",
                 f"hostname {host} && exec /usr/sbin/sshd -D -e -f {config}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 20
        for host in HOSTS:  # sshd writes its pid file once it listens
            while not (root / f"sshd_{host}.pid").exists():
                if self.sshd[host].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd on {host} did not start")
                time.sleep(0.02)  # a daemon offers nothing to wait on but its pid file

    def cut(self, host: str, up: bool = False) -> None:
        """Take ``host``'s link down (or back up)."""
        _run("ip", "link", "set", self.veths[host], "up" if up else "down")

    def pids(self, host: str) -> set[int]:
        """Processes in ``host``'s namespace, its sshd left out."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.namespaces[host]], capture_output=True, text=True, check=False
        ).stdout.split()
        return {int(p) for p in out} - {self.sshd[host].pid}

    def left(self, host: str, timeout: float = 10.0) -> set[int]:
        """Processes still in ``host``'s namespace (its sshd left out) once
        ``timeout`` passed or none is left: sshd's session process ends a
        moment after the connection closes."""
        deadline = time.monotonic() + timeout
        while (found := self.pids(host)) and time.monotonic() < deadline:
            time.sleep(0.05)  # another namespace's processes offer nothing to wait on
        return found

    def close(self) -> None:
        for process in self.sshd.values():
            if process.poll() is None:
                process.terminate()
        for process in self.sshd.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for veth in self.veths.values():  # deletes both ends at once
            subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
