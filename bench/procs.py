"""Child processes of the benchmark: start with a log file, wait until they answer, stop, and
read their memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
_OWN_VARS = ("CONJURE_", "SLACK_", "REPLICATE_", "DISCORD_")


@dataclass
class Child:
    """One server process on loopback."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    """A port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any Conjure, Slack, Replicate or Discord setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARS)}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(
    name: str, args: list[str], port: int, log_dir: Path, *, env: dict[str, str], cwd: Path
) -> Child:
    """Start `python args...` with its output in `log_dir/name.log`."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    return Child(name, proc, f"http://127.0.0.1:{port}", log)


async def wait_ready(child: Child, path: str, timeout: float = 30) -> None:
    """Until GET `path` answers with any status below 500; raise if the child died."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(child.url + path, timeout=aiohttp.ClientTimeout(2)) as r:
                    if r.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer within {timeout:g}s:\n{child.tail()}")


def stop(child: Child, timeout: float = 10) -> None:
    """SIGINT (a clean shutdown), then SIGTERM, then SIGKILL; each given `timeout`/2 seconds.
    Its own children (a server's workers) still running once it has gone get SIGKILL."""
    family = tree(child.pid)[1:] if child.proc.poll() is None else []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if child.proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout / 2)
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes `pid` started and that are still running: every thread's
    /proc/<pid>/task/<tid>/children, as the kernel lists them."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(found))


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents before their children."""
    order = [pid]
    for child in children(pid):
        order += tree(child)
    return order


def tree_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process and of each of its descendants (named
    `<name>/<pid>`); a process that has already exited is left out."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        for member in tree(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                used[name if member == pid else f"{name}/{member}"] = cpu_seconds(member)
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two `tree_cpu` readings; one that appeared in
    between counts from 0, one that exited in between is left out (its time is lost)."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}
