"""A real single-node SLURM 22.05 on this machine, for SLURMCluster's tests (root only).

Debian's ``munge``, ``slurmctld``, ``slurmd`` and ``slurm-client`` run
without systemd: ``munged`` as the munge user on a socket and key of its own,
then ``slurmctld -c -i`` and ``slurmd -N localhost`` with a ``slurm.conf``
whose state, spool, logs and pid files all live in one temporary folder
(``SlurmUser=root``, ``proctrack/linuxproc``, ``task/none``,
``select/cons_tres`` with ``CR_CPU``, no accounting, ``NodeName=localhost
NodeAddr=127.0.0.1 CPUs=8`` with the machine's ``RealMemory`` so jobs may ask
``--mem``, ``SlurmdParameters=config_overrides`` so slurmd accepts 8 CPUs on
a smaller machine, ``batch_sched_delay=0``) and ports found free.
``SLURM_CONF`` points the client commands (``sbatch``, ``squeue``,
``scancel``) at it. The controller schedules nothing for a few seconds after
it starts, so :meth:`SlurmNode.start` waits for a probe job to run, not for
``sinfo``. :meth:`SlurmNode.close` stops only the daemons started here, by
their pid files, also after a failed start, and removes the folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
#: the CPUs the node advertises (more than the real ones: several 1-CPU jobs run at once)
NODE_CPUS = 8
#: seconds the daemons may take to start and run the probe job
START_TIMEOUT = 60.0


def missing() -> str | None:
    """Why a SLURM node cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a SLURM node needs root (slurmd runs jobs as their user)"
    for tool in ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
        if not Path(tool).exists():
            return f"{tool} is not installed (.ci/run installs slurmctld slurmd slurm-client munge)"
    for tool in ("sbatch", "squeue", "scancel", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs slurm-client)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "the munge user does not exist (the munge package makes it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    """The node's memory as SLURM counts it (jobs asking ``--mem`` need it declared)."""
    return int(psutil.virtual_memory().total // 2**20)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class SlurmNode:
    """munged, slurmctld and slurmd in a temporary folder; ``close()`` stops them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trioclust-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._pid_files = {
            "munged": self.root / "munge" / "munged.pid",
            "slurmctld": self.root / "slurmctld.pid",
            "slurmd": self.root / "slurmd.pid",
        }
        self._started: dict[str, int] = {}

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        root = self.root
        root.chmod(0o755)  # the munge user reaches its own folder inside
        munge_dir = root / "munge"
        munge_dir.mkdir(mode=0o700)
        socket_dir = root / "munge-socket"  # munged wants everyone to reach its socket
        socket_dir.mkdir(mode=0o755)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        user = pwd.getpwnam("munge")
        for path in (munge_dir, socket_dir, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        socket_path = socket_dir / "munge.socket"
        self._run_daemon(
            "munged",
            ["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={socket_path}",
             f"--key-file={key}", f"--pid-file={self._pid_files['munged']}",
             f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'munged.seed'}"],
        )
        for folder in ("state", "spool"):
            (root / folder).mkdir()
        self.conf.write_text(
            "ClusterName=trioclust\n"
            "SlurmctldHost=localhost(127.0.0.1)\n"
            f"SlurmctldPort={_free_port()}\n"
            f"SlurmdPort={_free_port()}\n"
            "SlurmUser=root\n"
            "SlurmdUser=root\n"
            "AuthType=auth/munge\n"
            "CredType=cred/munge\n"
            f"AuthInfo=socket={socket_path}\n"
            "MpiDefault=none\n"
            "MailProg=/bin/true\n"
            "SlurmdParameters=config_overrides\n"  # CPUs=8 on a machine with fewer
            "ProctrackType=proctrack/linuxproc\n"
            "TaskPlugin=task/none\n"
            "SelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_CPU\n"
            "SchedulerParameters=batch_sched_delay=0\n"
            "AccountingStorageType=accounting_storage/none\n"
            "JobAcctGatherType=jobacct_gather/none\n"
            "JobCompType=jobcomp/none\n"
            "ReturnToService=2\n"
            f"StateSaveLocation={root / 'state'}\n"
            f"SlurmdSpoolDir={root / 'spool'}\n"
            f"SlurmctldPidFile={self._pid_files['slurmctld']}\n"
            f"SlurmdPidFile={self._pid_files['slurmd']}\n"
            f"SlurmctldLogFile={root / 'slurmctld.log'}\n"
            f"SlurmdLogFile={root / 'slurmd.log'}\n"
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={_memory_mb()} "
            "State=UNKNOWN\n"
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n"
        )
        self._run_daemon("slurmctld", ["/usr/sbin/slurmctld", "-c", "-i", "-f", str(self.conf)])
        self._run_daemon("slurmd", ["/usr/sbin/slurmd", "-N", "localhost", "-f", str(self.conf)])
        self._probe()

    def _run_daemon(self, name: str, command: list[str]) -> None:
        """Start a daemon that forks into the background; record its pid once written."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
        pid_file = self._pid_files[name]
        deadline = time.monotonic() + 20
        while True:
            try:
                text = pid_file.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text.isdigit():
                self._started[name] = int(text)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start (exit {result.returncode}): {result.stderr.strip()}\n"
                    + self.log(name)
                )
            time.sleep(0.02)  # a daemon offers nothing to wait on but its pid file

    def _probe(self) -> None:
        """Wait until the controller runs a job (it schedules nothing at first)."""
        out = self.command("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true")
        job = out.strip().split(";")[0]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            state = subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T"], env=self.env, capture_output=True,
                text=True, check=False,
            ).stdout.strip()
            if state in ("", "COMPLETED", "COMPLETING"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM's probe job {job} is still {state}\n" + self.log("slurmctld"))
            time.sleep(0.05)  # squeue is the only way to learn a job's state

    def command(self, *args: str) -> str:
        """Run a SLURM client command against this node; its stdout."""
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=True).stdout

    def jobs(self) -> list[str]:
        """The ids of the jobs queued or running."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def log(self, name: str) -> str:
        path = self.root / ("munge/munged.log" if name == "munged" else f"{name}.log")
        try:
            return f"--- {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return f"--- {path}: (none)"

    def close(self) -> None:
        for name in reversed(DAEMONS):
            pid = self._started.pop(name, None)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # not our child: nothing to wait on
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
