"""Child processes of a benchmark run: start, wait for ports, sample memory and CPU, stop."""

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_started: list[subprocess.Popen] = []
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, *, process: subprocess.Popen | None = None, timeout: float = 30
) -> None:
    """Block until something accepts connections on 127.0.0.1:port (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not alive(process):
            raise RuntimeError(f"{process.args[0]} exited ({exit_code(process)}) before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start(
    args: Sequence[str | Path], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """Start a child process whose output goes to a log file; it is stopped by stop_all()."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(arg) for arg in args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group, so stop() also reaches the children it forks (gunicorn
            # workers, post_office's pool) and Ctrl-C reaches only the harness.
            start_new_session=True,
        )
    _started.append(process)
    return process


def start_gunicorn(
    app: str, *, port: int, workers: int, env: dict, log: Path, cwd: Path
) -> subprocess.Popen:
    """Start the project's gunicorn (sync workers, as the Docker image) on a WSGI app; every
    web contestant goes through here, so all get exactly the same server options."""
    gunicorn = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "gunicorn"
    process = start(
        [
            str(gunicorn),
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--timeout",
            "60",
        ],
        env=env,
        log=log,
        cwd=cwd,
    )
    wait_for_port(port, process=process)
    return process


def run(
    args: Sequence[str | Path], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> str:
    """Run a command to completion and return its standard output (stderr goes to the log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        result = subprocess.run(
            [str(arg) for arg in args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    if result.returncode:
        raise RuntimeError(
            f"{' '.join(str(a) for a in args[:4])} ... exited with {result.returncode}; see {log}"
        )
    return result.stdout.decode()


def stop(process: subprocess.Popen, *, timeout: float = 15) -> None:
    """Ask the process group to stop (SIGTERM), then kill it if it does not within timeout."""
    if alive(process):
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    else:
        process.poll()  # reap it, if it has exited
    if process in _started:
        _started.remove(process)


def stop_all() -> None:
    """Stop every process this run started and that is still alive."""
    for process in reversed(list(_started)):
        stop(process, timeout=5)


def alive(process: subprocess.Popen) -> bool:
    """Whether the process still runs, read from /proc rather than by reaping it.

    Popen.poll() answers "exited with 0" whenever waitpid() fails with ECHILD, which a long
    soak once hit with its worker still running; /proc does not have that failure mode.
    """
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def exit_code(process: subprocess.Popen) -> int | None:
    """The exit code of a process that is no longer alive (None if unknown)."""
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float,
    processes: Sequence[subprocess.Popen] = (),
    what: str,
) -> float:
    """Poll until condition() is true; the monotonic time it was seen true.

    Fails early when every watched process has exited and the condition is still false (one
    last check first: a burst worker may exit right after the last row is written).
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if processes and not any(alive(p) for p in processes):
            if condition():
                return time.monotonic()
            codes = ", ".join(str(exit_code(p)) for p in processes)
            raise RuntimeError(f"{what}: the process(es) exited (codes {codes}) before it")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached after {timeout:.0f} s")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is pid (read from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may contain spaces: fields start after its ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    pids = [pid]
    for child in _children(pid):
        pids.extend(tree(child))
    return pids


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in KiB (VmRSS from /proc)."""
    total = 0
    for member in tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user + system) a process has used so far; with `children`, plus that of its
    children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ')' field 0 is the state: utime, stime, cutime and cstime are fields 14-17 of
    # stat(5).
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLOCK_TICKS


def database_cpu_seconds() -> float:
    """CPU time used so far by every local PostgreSQL process (server, backends, background),
    including backends that have exited (counted in the server's children times).

    The difference across a measure is what the database spent on its emails. Zero when
    PostgreSQL runs elsewhere.
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        total += cpu_seconds(int(entry.name), children=True)
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and its living descendants."""
    return sum(cpu_seconds(member) for member in tree(pid))


def children_cpu_seconds() -> float:
    """CPU time of every child this process has waited for (and of their waited-for children).

    The difference across a measure is the CPU the contestant's processes used, which a noisy
    machine distorts much less than their wall-clock time.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
