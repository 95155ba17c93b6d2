"""Private, loopback-only Ray clusters for tests, benchmarks, the demo and the embedded job mode.

Why not `ray stop`: it kills every Ray process of the user on the machine, including other people's
clusters. A cluster started here runs in its own session (process group), so it is stopped by signalling
that group, and checked for leftovers by its group id and its private temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The interpreter running this module; its bin dir goes first on PATH so `ray start` and the job
# entrypoint's `python` are the project's venv (docs/JOB.md).
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_env(home: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a single-node Ray that talks only over 127.0.0.1, without token auth.

    - RAY_AUTH_MODE=disabled: tests and demo only (docs/JOB.md "Starting a cluster"; production keeps
      token auth and sets RAY_AUTH_MODE=token in every job client, see docs/JOB.md).
    - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray rewrites `--node-ip-address 127.0.0.1` to the host's
      routable IP; with this flag off it keeps the loopback IP for every component (single node only).
    - HOME: a private directory, so no `~/.ray` file of this run lands in the user's home.
    """
    env = dict(os.environ if base is None else base)
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if home is not None:
        env["HOME"] = str(home)
    return env


def wants_embedded(argv: list[str], environ: Mapping[str, str] = os.environ) -> bool:
    """True when a job started with `argv` will start its own Ray (no --address, no RAY_ADDRESS)."""
    return not environ.get("RAY_ADDRESS") and not any(
        a == "--address" or a.startswith("--address=") for a in argv
    )


def prepare_embedded_env(argv: list[str]) -> None:
    """Before Ray is imported: give an embedded Ray the loopback settings of `loopback_env` (not HOME:
    with token auth disabled nothing is written there)."""
    if wants_embedded(argv):
        for key, value in loopback_env(base={}).items():
            if key not in ("PATH", "HOME"):
                os.environ[key] = value


def short_temp_dir(prefix: str = "ray-") -> Path:
    """A fresh directory with a short path: Ray's unix socket paths under it must stay < 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


@dataclass
class LocalCluster:
    """A head-only Ray cluster on 127.0.0.1, started by `start_local_cluster`."""

    temp_dir: Path  # Ray's --temp-dir (sessions, logs, sockets, spilled objects); removed on stop
    home: Path  # private HOME for every Ray process and client of this cluster
    port: int  # GCS port
    dashboard_port: int
    num_cpus: int
    pgid: int  # process group (= session) of every process of this cluster
    env: dict[str, str] = field(repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def start_local_cluster(
    num_cpus: int, *, object_store_bytes: int | None = None, timeout_s: float = 180.0
) -> LocalCluster:
    """`ray start --head` on loopback with every port chosen free, in a new session; blocks until up."""
    temp_dir = short_temp_dir()
    home = temp_dir / "home"
    home.mkdir()
    env = loopback_env(home)
    port, dash, client, agent_http, agent_grpc, rt_agent, metrics = (free_port() for _ in range(7))
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--include-dashboard=true",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={rt_agent}",
        f"--metrics-export-port={metrics}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if object_store_bytes:
        cmd.append(f"--object-store-memory={object_store_bytes}")
    # A new session makes the `ray start` process the leader of a fresh process group that all daemons
    # (and the workers they spawn) inherit: that group is what `stop_local_cluster` signals.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    cluster = LocalCluster(temp_dir, home, port, dash, num_cpus, proc.pid, env)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed (rc {proc.returncode}):\n{out[-4000:]}")
    except BaseException:
        stop_local_cluster(cluster)
        raise
    return cluster


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    cmdline: str


def _proc_info(pid: int) -> ProcInfo | None:
    """pid, process group and command line from /proc (Linux); None for zombies and vanished pids."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Field 2 (comm) may hold spaces and parentheses: split after its closing ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return ProcInfo(pid, int(fields[1]), int(fields[2]), cmdline.strip())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError, PermissionError):
        return None


def cluster_processes(cluster: LocalCluster) -> list[ProcInfo]:
    """Live processes of this cluster: its process group, those naming its temp dir, and their
    descendants (Ray workers call setsid, so they leave the group but stay children of the raylet)."""
    marker = str(cluster.temp_dir)
    procs = [
        info
        for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != os.getpid() and (info := _proc_info(int(entry))) is not None
    ]
    members = {p.pid for p in procs if p.pgid == cluster.pgid or marker in p.cmdline}
    grew = True
    while grew:
        new = {p.pid for p in procs if p.ppid in members and p.pid not in members}
        members |= new
        grew = bool(new)
    return [p for p in procs if p.pid in members]


def _signal_all(procs: list[ProcInfo], sig: int) -> None:
    for p in procs:
        try:
            os.kill(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(cluster: LocalCluster, timeout_s: float) -> list[ProcInfo]:
    deadline = time.monotonic() + timeout_s
    left = cluster_processes(cluster)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = cluster_processes(cluster)
    return left


def stop_local_cluster(cluster: LocalCluster, grace_s: float = 5.0) -> list[ProcInfo]:
    """SIGTERM the cluster's processes, SIGKILL what is left after `grace_s`; remove its temp dir.

    Only this cluster's processes are signalled (never `ray stop`). Returns the processes still alive
    afterwards: empty when the stop was clean.
    """
    _signal_all(cluster_processes(cluster), signal.SIGTERM)
    left = _wait_gone(cluster, grace_s)
    if left:
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(cluster, 5.0)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return left
