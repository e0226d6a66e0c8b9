"""The fork server: runs a job's library call in a child forked from a process that has already
imported torch and the rest of the library.

Every rule of the workflow is a ``script:``, so Snakemake starts a new Python per job, and each
job used to import torch (about 2.4 s on a 2-core machine) and, through Adam, ``torch._dynamo``
(1.5 s) before computing for a second or two. With the fork server a rule's script is a small
*client* (:func:`kdinv.launch.start.run_job`): it sends the job (a ``module:function`` target and its
keyword arguments) to a *server* that imported everything once, the server forks a *child* that
runs the job, and the client waits for the child and exits with its status.

What the child takes from its client, so that it computes what a direct run computes:

- the client's stdin, stdout and stderr (the file descriptors themselves, passed over the socket),
  working directory, environment, ``sys.argv``, ``sys.path``, umask, CPU affinity, resource
  limits, nice value and ignored signals;
- :func:`kdinv.launch.start.start_job` runs in the child (log file, stderr into it, torch's threads);
  an exception leaves the child as it leaves a direct run: its traceback on ``sys.stderr``
  (the log, after ``start_job``), exit status 1 (``SystemExit`` its own status, an uncaught
  ``KeyboardInterrupt`` death by SIGINT);
- the random state of a new process: torch's and numpy's global generators re-seeded from the OS,
  as a new process seeds them (Python's ``random`` re-seeds itself after a fork); nothing the
  server did drew from them. Jobs seed what they draw from anyway (``seed_everything``).

The server imports modules and touches no tensor op, so it starts no OpenMP pool, and never asks
CUDA anything: a forked child may start CUDA and its own thread pools. (Importing numpy starts
OpenBLAS's pool when more than one BLAS thread is allowed; OpenBLAS stops it around a fork
itself.) After preloading it forks a probe that checks torch's CUDA fork guard, and refuses to
serve if something poisoned it: it leaves ``<key>.refused`` and the jobs of that key run in their
own processes. The
server's environment is its first client's; the variables that libraries read when they load
(Python's, OpenMP's and BLAS's thread settings, torch's and CUDA's, matplotlib's, locale) are part
of the server's key, so a client with other values gets another server.

Signals and lifetime: the client forwards SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP and SIGQUIT
to the child (training jobs save their resume state on SIGTERM and SIGUSR1) and exits with the
child's exit status, or kills itself with the signal that killed the child. When the client dies
(SIGKILL of Snakemake's process group) its end of the socket closes: the server and a watchdog
thread in the child both notice at once and SIGKILL the child's process group, so no orphan
keeps writing outputs.

The server is keyed by the interpreter, its flags, ``sys.path`` (less Snakemake's per-workdir
script folder), the installed distributions, the contents of the ``kdinv`` sources and that
environment: an edited library or another environment gets a fresh server. Its socket and log
are ``<dir>/<key>.sock`` and ``<dir>/<key>.log`` with ``<dir>`` =
``$KDINV_FORKSERVER_DIR``, else ``$XDG_RUNTIME_DIR/kdinv``, else ``/tmp/kdinv-<uid>`` (mode 700).
It exits after ``$KDINV_FORKSERVER_IDLE`` seconds (default 30) without a job.

Not used (the job runs in the script's own process, and its log says why) with
``KDINV_FORKSERVER=0``, under SLURM (``SLURM_JOB_ID`` set: each job is its own allocation), off
Linux, or when the server cannot be started or reached. What differs from a direct run: the child
is not a descendant of the client, so Snakemake's ``benchmark:`` files measure the client only
(set ``KDINV_FORKSERVER=0`` to measure a job's memory), and it runs in the server's session and
cgroup.

Run as ``python -m kdinv.launch.forkserver <socket> --idle <seconds>`` by the first client.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import importlib
import io
import json
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

SWITCH = "KDINV_FORKSERVER"
"""``0`` runs every job in its script's own process."""

IDLE_SECONDS = 30.0
START_SECONDS = 10.0  # to start a server and see its socket
READY_SECONDS = 120.0  # for a server that is still importing (under load) to fork the job
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGQUIT)
_INHERITED = FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGALRM, signal.SIGCHLD)

# Read by libraries when they load (thread pools, allocators, configuration): a server started
# with other values is not what a new process would be, so they are part of its key.
_KEY_ENV_PREFIXES = ("PYTHON", "LD_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "GOTO_", "VECLIB_",
                     "NUMEXPR_", "TORCH", "PYTORCH_", "CUDA_", "CUBLAS_", "CUDNN_", "NCCL_", "NVIDIA_",
                     "MPL", "LC_")
_KEY_ENV_NAMES = ("HOME", "LANG", "LANGUAGE", "TZ", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "KDINV_FORKSERVER_IDLE")

# Preloaded by the server besides every kdinv module; a missing one is skipped.
PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.optim", "pandas", "pyarrow.parquet", "h5py", "scipy.stats",
           "sklearn.model_selection", "sklearn.datasets", "matplotlib.pyplot", "seaborn", "yaml")

_HEADER = struct.Struct("!Q")
_MESSAGE = struct.Struct("!cq")  # b"P" child pid, b"S" exit code (negative: killed by that signal)


class Unavailable(RuntimeError):
    """The fork server could not be used; the job may run in this process."""


# --- the client -------------------------------------------------------------------------------


def unavailable_reason(environ=None) -> str | None:
    """Why this job must run in its own process, or None when the fork server may be used."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{SWITCH}={environ[SWITCH]}"
    if "SLURM_JOB_ID" in environ:
        return "SLURM_JOB_ID is set: each job is its own allocation"
    if not sys.platform.startswith("linux"):
        return f"the fork server needs Linux, not {sys.platform}"
    return None


def _package_dir() -> Path:
    """The ``kdinv`` package (this module lives in ``kdinv/launch``)."""
    return Path(__file__).resolve().parents[1]


def _client_sys_path() -> list[str]:
    return [os.path.abspath(p) for p in sys.path]


def _interpreter_flags() -> list[str]:
    return subprocess._args_from_interpreter_flags()


def server_key(environ=None) -> str:
    """What decides which server a client may use (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256()

    def add(*parts):
        for part in parts:
            digest.update(repr(part).encode("utf-8", "surrogateescape"))
            digest.update(b"\0")

    add(sys.executable, sys.version, _interpreter_flags())
    for entry in _client_sys_path():
        if entry.endswith(os.sep + os.path.join(".snakemake", "scripts")):
            continue  # Snakemake's per-workdir folder of temporary scripts: nothing to import
        add(entry)
        if os.path.basename(entry) in ("site-packages", "dist-packages") and os.path.isdir(entry):
            add(sorted(n for n in os.listdir(entry) if n.endswith((".dist-info", ".egg-info", ".pth"))))
    root = _package_dir()
    for path in sorted(root.rglob("*.py")):
        add(str(path.relative_to(root)))
        digest.update(path.read_bytes())
    add(sorted((k, v) for k, v in environ.items() if k.startswith(_KEY_ENV_PREFIXES) or k in _KEY_ENV_NAMES))
    return digest.hexdigest()[:20]


def server_dir(environ=None) -> Path:
    """The folder of the servers' sockets, locks and logs: private to this user."""
    environ = os.environ if environ is None else environ
    if environ.get("KDINV_FORKSERVER_DIR"):
        folder = Path(environ["KDINV_FORKSERVER_DIR"])
    elif environ.get("XDG_RUNTIME_DIR") and os.path.isdir(environ["XDG_RUNTIME_DIR"]):
        folder = Path(environ["XDG_RUNTIME_DIR"]) / "kdinv"
    else:
        folder = Path("/tmp") / f"kdinv-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as err:
        raise Unavailable(f"cannot use {folder}: {err}") from err
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise Unavailable(f"{folder} must belong to uid {os.getuid()} and be private (mode 700)")
    return folder


def server_paths(environ=None) -> dict[str, Path]:
    folder, key = server_dir(environ), server_key(environ)
    paths = {kind: folder / f"{key}.{kind}" for kind in ("sock", "lock", "log", "refused")}
    if len(os.fsencode(paths["sock"])) > 100:
        raise Unavailable(f"socket path too long for a unix socket: {paths['sock']}")
    return paths


def _try_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(START_SECONDS)
        sock.connect(os.fspath(path))
        return sock
    except BaseException:
        sock.close()
        raise


def _connect_if_listening(sock: Path) -> socket.socket | None:
    """A connection to the server at ``sock``, or None where no server listens there."""
    try:
        return _try_connect(sock)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except OSError as err:
        raise Unavailable(f"cannot connect to {sock}: {err}") from err


def _idle_seconds() -> float:
    return float(os.environ.get("KDINV_FORKSERVER_IDLE", IDLE_SECONDS))


def _start_server(paths: dict[str, Path]) -> None:
    week_ago = time.time() - 7 * 86400  # the files of servers of old sources or environments
    for old in paths["sock"].parent.glob("*.*"):
        try:
            if (old.suffix in (".log", ".lock", ".refused") and old.stem != paths["sock"].stem
                    and old.stat().st_mtime < week_ago):
                old.unlink()
        except OSError:
            pass
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *_interpreter_flags(), "-m", "kdinv.launch.forkserver", os.fspath(paths["sock"]),
             "--idle", str(_idle_seconds())],
            cwd=_package_dir().parent, env={**os.environ, "KDINV_FORKSERVER_SYS_PATH": json.dumps(_client_sys_path())},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        proc.wait(timeout=START_SECONDS)  # it forks the server and exits at once
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise Unavailable(f"the fork server did not start within {START_SECONDS:g} s (see {paths['log']})")


def connect() -> tuple[socket.socket, dict[str, Path]]:
    """A connection to this environment's server, which is started first when there is none."""
    paths = server_paths()
    if paths["refused"].exists():
        raise Unavailable(f"the fork server refused to serve: {paths['refused'].read_text().strip()} "
                          f"(see {paths['log']})")
    conn = _connect_if_listening(paths["sock"])
    if conn is not None:
        return conn, paths
    deadline = time.monotonic() + 2 * START_SECONDS
    with open(paths["lock"], "a") as lock:
        while True:  # one client starts the server; the others wait for it here
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"{paths['lock']} stayed locked for {2 * START_SECONDS:g} s") from None
                time.sleep(0.02)
        conn = _connect_if_listening(paths["sock"])  # another client may have started it meanwhile
        if conn is not None:
            return conn, paths
        paths["sock"].unlink(missing_ok=True)  # a socket nobody listens on: its server died
        _start_server(paths)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                return _try_connect(paths["sock"]), paths
            except (FileNotFoundError, ConnectionRefusedError) as err:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"the fork server did not listen within {START_SECONDS:g} s (see {paths['log']})"
                    ) from err
                time.sleep(0.02)
            except OSError as err:
                raise Unavailable(f"cannot connect to {paths['sock']}: {err}") from err


def _recv_message(sock: socket.socket) -> tuple[bytes, int] | None:
    data = b""
    while len(data) < _MESSAGE.size:
        chunk = sock.recv(_MESSAGE.size - len(data))
        if not chunk:
            return None
        data += chunk
    return _MESSAGE.unpack(data)


class _Forwarder:
    """Forwards the client's signals to the child once its pid is known; keeps those that arrive
    before."""

    def __init__(self):
        self.pid = None
        self.pending = []
        self.previous = {}

    def __enter__(self):
        for sig in FORWARDED:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pid is None:
            self.pending.append(signum)
        else:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._handle(signum, None)
        self.pending = []

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        for signum in self.pending:  # never forwarded: this process takes them as it would have
            os.kill(os.getpid(), signum)


def _request(target: str, log_path: str, threads: int | None, kwargs: dict, gpu: dict | None) -> bytes:
    import resource

    mask = os.umask(0)
    os.umask(mask)
    limits = {}
    for name in ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_FSIZE",
                 "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_NPROC", "RLIMIT_MEMLOCK"):
        if hasattr(resource, name):
            limits[name] = resource.getrlimit(getattr(resource, name))
    return pickle.dumps(
        {
            "target": target,
            "kwargs": kwargs,
            "gpu": gpu,
            "log_path": os.fspath(log_path),
            "threads": threads,
            "cwd": os.getcwd(),
            "environ": dict(os.environ),
            "argv": list(sys.argv),
            "sys_path": _client_sys_path(),
            "umask": mask,
            "affinity": sorted(os.sched_getaffinity(0)),
            "limits": limits,
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "ignored": [int(s) for s in _INHERITED if signal.getsignal(s) is signal.SIG_IGN],
            "unbuffered": bool(getattr(sys.__stdout__, "write_through", False)),  # python -u
        },
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def run_in_server(target: str, log_path: str, threads: int | None, kwargs: dict, gpu: dict | None = None) -> int:
    """Run the job in a child of the fork server; return its exit code (negative: killed by that
    signal). Raises :class:`Unavailable` when the job did not start there (it may then run here)."""
    payload = _request(target, log_path, threads, kwargs, gpu)
    try:
        sock, paths = connect()
    except OSError as err:  # the folder, the lock, the log file or starting Python
        raise Unavailable(f"{type(err).__name__}: {err}") from err
    stdio, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            stdio.append(fd)
        except OSError:  # closed here: the child gets /dev/null
            opened.append(os.open(os.devnull, os.O_RDWR))
            stdio.append(opened[-1])
    with sock:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            socket.send_fds(sock, [_HEADER.pack(len(payload))], stdio)
            sock.sendall(payload)
        except OSError as err:
            raise Unavailable(f"cannot send the job to the fork server: {err} (see {paths['log']})") from err
        finally:
            for fd in opened:
                os.close(fd)
        with _Forwarder() as forwarder:
            sock.settimeout(READY_SECONDS)  # a server may still be importing
            try:
                message = _recv_message(sock)
            except (TimeoutError, OSError) as err:
                raise Unavailable(f"no answer from the fork server: {err} (see {paths['log']})") from err
            if message is None or message[0] != b"P":
                raise Unavailable(f"the fork server closed the connection before the job started (see {paths['log']})")
            forwarder.started(message[1])
            sock.settimeout(None)
            while True:
                message = _recv_message(sock)
                if message is None:
                    print(f"kdinv: the fork server ended before reporting the status of job pid {forwarder.pid} "
                          f"(see {paths['log']})", file=sys.stderr, flush=True)
                    return 1
                if message[0] == b"S":
                    return message[1]


def exit_like(code: int) -> None:
    """Return for 0; else end this process as the child ended: its exit status, or killed by the
    same signal."""
    if code == 0:
        return
    if code < 0:
        sys.stdout.flush()
        sys.stderr.flush()
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
        os.kill(os.getpid(), -code)
        time.sleep(1)
        code = 128 - code
    raise SystemExit(code)


def resolve(target: str):
    """The function that ``module:function`` names."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"a job target is 'module:function', got {target!r}")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# --- the server -------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} fork server {os.getpid()}: {message}", file=sys.stderr, flush=True)


def preload() -> list[str]:
    """Import the workflow's libraries and every kdinv module; no tensor op, no CUDA call. Returns
    what could not be imported."""
    import pkgutil

    failed = []
    names = list(PRELOAD)
    import kdinv

    names += [m.name for m in pkgutil.walk_packages(kdinv.__path__, "kdinv.", onerror=lambda name: None)
              if m.name not in (__name__, "kdinv.launch.forkserver")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a module a job may still import itself
            failed.append(f"{name} ({type(err).__name__}: {err})")
    return failed


def _probe() -> str | None:
    """Fork a child that checks what a job's child inherits; the problem, or None."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda._is_in_bad_fork():
                code = 3
        except BaseException:  # noqa: BLE001
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {0: None, 3: "CUDA was initialised before the fork (torch's fork guard is set)"}.get(
        code, f"the probe child exited with {code}")


def _threads() -> list[str]:
    names = []
    for task in sorted(os.listdir("/proc/self/task")):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:
            pass
    return names


class _Server:
    def __init__(self, path: str, idle: float):
        self.path = path
        self.idle = idle
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.served = 0

    def bind(self) -> bool:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.path)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                _say(f"{self.path} is taken: another server serves it")
                return False
            raise
        self.inode = os.stat(self.path).st_ino
        self.listener.listen(128)
        return True

    def unlink(self) -> None:
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def serve(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.listener.setblocking(False)
        last = time.monotonic()
        draining = False
        while True:
            watched = [self.listener, self.wake_r] + [c for c in self.children.values() if c.fileno() >= 0]
            if self.children:
                timeout = None  # SIGCHLD wakes the loop
            elif self.stopping or draining:
                timeout = 0.0
            else:
                timeout = max(0.0, last + self.idle - time.monotonic())
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                ready = []
            for obj in ready:
                if obj is self.listener:
                    if self._accept_all():
                        last = time.monotonic()
                elif obj is self.wake_r:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self._client_gone(obj)
            self._reap()
            if self.stopping and not draining:
                self.unlink()  # no new client finds this server; those already queued are served
                draining = True
            if self.children:
                last = time.monotonic()
                continue
            if draining or time.monotonic() - last >= self.idle:
                if not draining:
                    self.unlink()
                    draining = True
                if self._accept_all():
                    continue
                import resource

                own, jobs = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
                _say(f"{'stopped' if self.stopping else 'idle'}, exiting after {self.served} jobs; CPU seconds: "
                     f"server {own.ru_utime + own.ru_stime:.1f}, jobs {jobs.ru_utime + jobs.ru_stime:.1f}")
                return

    def _stop(self, signum, frame):
        self.stopping = True

    def _accept_all(self) -> bool:
        accepted = False
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            accepted = True
            try:
                self._start_job(conn)
            except Exception as err:  # noqa: BLE001 - one bad request must not end the server
                _say(f"a request failed: {type(err).__name__}: {err}")
                conn.close()

    def _start_job(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(5.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            raise PermissionError(f"a client of uid {uid}")
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        try:
            if len(header) != _HEADER.size or len(fds) != 3:
                raise ValueError("malformed request")
            (size,) = _HEADER.unpack(header)
            chunks, left = [], size
            while left:
                chunk = conn.recv(min(left, 1 << 20))
                if not chunk:
                    raise ConnectionError("the client left before its request was read")
                chunks.append(chunk)
                left -= len(chunk)
            payload = b"".join(chunks)
            conn.settimeout(None)  # blocking: MSG_DONTWAIT then does not wait (with a timeout it would)
            try:
                if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    raise ConnectionError("the client left before its job started")
            except BlockingIOError:
                pass
            pid = os.fork()
            if pid == 0:
                try:
                    _child(conn, payload, fds, close=[self.listener, *self.children.values()],
                           close_fds=[self.wake_r, self.wake_w])
                finally:
                    os._exit(1)  # _child ends the process itself; never back into the server
        finally:
            for fd in fds:
                os.close(fd)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # it did so itself, or is gone
        self.children[pid] = conn
        self.served += 1
        try:
            conn.sendall(_MESSAGE.pack(b"P", pid))
        except OSError:
            self._kill(pid)

    def _client_gone(self, conn: socket.socket) -> None:
        """The client sends nothing after its request: readable means it left."""
        try:
            data = conn.recv(4096, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        for pid, c in list(self.children.items()):
            if c is conn:
                self._kill(pid)
                conn.close()  # its fileno is now -1: no longer watched

    def _kill(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if conn.fileno() >= 0:
                try:
                    conn.sendall(_MESSAGE.pack(b"S", os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
            conn.close()


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kdinv.launch.forkserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("socket")
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS)
    parser.add_argument("--foreground", action="store_true", help="do not detach from the caller")
    args = parser.parse_args(argv)
    if "KDINV_FORKSERVER_SYS_PATH" in os.environ:
        sys.path[:] = json.loads(os.environ.pop("KDINV_FORKSERVER_SYS_PATH"))
    if not args.foreground and os.fork():
        os._exit(0)  # the caller waits for this; the server is nobody's child (not in its benchmark)
    os.chdir("/")
    server = _Server(args.socket, args.idle)
    if not server.bind():
        return
    try:
        start = time.monotonic()
        _say(f"listening on {args.socket} (python {sys.executable}); preloading")
        failed = preload()
        if failed:
            _say("could not preload: " + "; ".join(failed))
        problem = _probe()
        if problem:  # for good: these sources in this environment would do the same again
            _say(f"refusing to serve: {problem}")
            Path(args.socket).with_suffix(".refused").write_text(problem + "\n")
            return
        gc.freeze()  # the preloaded objects stay shared with the children, not copied by the GC
        _say(f"ready in {time.monotonic() - start:.1f} s; threads {_threads()}")
        server.serve()
    finally:
        server.unlink()
        server.listener.close()


# --- the child --------------------------------------------------------------------------------


def _watch_client(fd: int) -> None:
    """Kill this job's process group as soon as its client is gone (its socket end closed)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        try:
            poller.poll()
            data = os.read(fd, 4096)  # the client sends nothing after its request
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            try:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)


def _stdio(unbuffered: bool) -> None:
    """New sys.stdin, sys.stdout and sys.stderr over fds 0, 1 and 2, as Python makes them."""
    def stream(fd, mode, old):
        raw = io.FileIO(fd, mode, closefd=False)
        tty = raw.isatty()
        if mode == "r":
            buffer = io.BufferedReader(raw)
        elif unbuffered:
            buffer = raw
        else:
            buffer = io.BufferedWriter(raw)
        return io.TextIOWrapper(buffer, encoding=old.encoding, errors=old.errors, line_buffering=tty or fd == 2,
                                write_through=unbuffered and mode == "w")

    sys.stdin = sys.__stdin__ = stream(0, "r", sys.__stdin__ or sys.stdin)
    sys.stdout = sys.__stdout__ = stream(1, "w", sys.__stdout__ or sys.stdout)
    sys.stderr = sys.__stderr__ = stream(2, "w", sys.__stderr__ or sys.stderr)


def _adopt(request: dict) -> None:
    """Take the client's process state (see the module's docstring)."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["environ"])
    import tempfile

    tempfile.tempdir = None  # found again from this environment's TMPDIR
    sys.argv[:] = request["argv"]
    sys.path[:] = request["sys_path"]
    os.umask(request["umask"])
    try:
        os.sched_setaffinity(0, request["affinity"])
    except OSError:
        pass
    import resource

    for name, limit in request["limits"].items():
        try:
            resource.setrlimit(getattr(resource, name), tuple(limit))
        except (ValueError, OSError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
    except OSError:
        pass
    for sig in request["ignored"]:
        signal.signal(sig, signal.SIG_IGN)
    # the global generators of a new process start from a fresh seed from the OS (Python's random
    # re-seeds itself after a fork); CUDA's are seeded when CUDA starts, in this child
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.default_generator.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in _INHERITED:
        if sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
        elif sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_IGN)  # as Python sets them at start-up
        else:
            signal.signal(sig, signal.SIG_DFL)


def _report(exc: BaseException) -> None:
    """Print an uncaught exception as the interpreter does, without this module's frames at the top
    of the traceback: it starts in the job's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _finish(code: int, signum: int | None = None) -> None:
    """End the child as the interpreter ends: threads joined, atexit handlers, streams flushed;
    then exit with ``code``, or die of ``signum``."""
    try:
        threading._shutdown()
    except BaseException:  # noqa: BLE001, S110 - the job's exit status stands, whatever shutdown raises
        pass
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - a closed stream cannot take the rest
            pass
    if signum is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(code)


def _child(conn: socket.socket, payload: bytes, fds: list[int], close: list, close_fds: list[int]) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        _reset_signals()
        for obj in close:
            obj.close()
        for fd in close_fds:
            os.close(fd)
        watch = conn.detach()
        threading.Thread(target=_watch_client, args=(watch,), name="kdinv-client-watchdog", daemon=True).start()
        for target_fd, fd in enumerate(fds):
            os.dup2(fd, target_fd)
            os.close(fd)
        request = pickle.loads(payload)
        _stdio(request["unbuffered"])
        _adopt(request)
    except BaseException:  # noqa: BLE001 - nothing of the job ran: say why on the client's stderr
        traceback.print_exc()
        _finish(1)
    try:
        from kdinv.launch.start import call_job, start_job

        function = resolve(request["target"])
        log = start_job(request["log_path"], request["threads"])
        log.info("running in child %d of the fork server %d", os.getpid(), os.getppid())
        call_job(function, request["kwargs"], request["gpu"])
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt as exc:  # Python reports it, then dies of SIGINT
        _report(exc)
        _finish(1, signal.SIGINT)
    except BaseException as exc:  # noqa: BLE001 - as the interpreter reports an uncaught exception
        _report(exc)
        code = 1
    _finish(code)


if __name__ == "__main__":
    main()
