"""A PostgreSQL server of the test's own: Debian's binaries, a cluster made in a temporary directory.

`initdb` and `postgres` refuse to run as root, so as root both run as the `postgres` system user
(`runuser -u postgres`), in a directory that user owns. The server listens on 127.0.0.1 at a free port
and on a Unix socket in its own directory, with trust authentication (nothing else can reach it).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from tests.support.net import free_port


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def why_no_postgres() -> str | None:
    """None when a server can be started here; otherwise the reason (for pytest.skip)."""
    if postgres_bin_dir() is None:
        return "PostgreSQL server binaries are not installed (Debian package postgresql; make test installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run initdb as"
    return None


class PostgresServer:
    """One PostgreSQL cluster in `root`: `start()`, `stop()`, `kill()` (SIGKILL, as a crash), `restart()`.

    `dsn(database)` names a database on it over TCP; `create_database()` makes a fresh, empty one.
    """

    def __init__(self, root: Path | None = None, *, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(why_no_postgres() or "no PostgreSQL")
        self.bin_dir = bin_dir
        # Under /tmp by default: pytest's own temporary directories are private to root, and the server
        # runs as `postgres`, which could not reach them.
        self._own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.port = port or free_port()
        self.user = "relay"
        self._process: subprocess.Popen[bytes] | None = None
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    # ------------------------------------------------------------------------------------------
    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as_postgres, *argv], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()}")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--locale=C",
        )

    def start(self) -> None:
        """Start the server (initialising the cluster the first time) and wait until it accepts connections."""
        if not self.data.exists():
            self.init()
        log = open(self.root / "postgres.log", "ab")  # the server's output for its lifetime
        self._process = subprocess.Popen(
            [
                *self._as_postgres,
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.socket_dir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=64MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._process.returncode}): {self.log_tail()}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not become ready in {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "postgres.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients disconnected, everything committed is kept)."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL to the whole server, as a crash (the next start recovers from the WAL)."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def cleanup(self) -> None:
        """Stop the server and remove its directory (when the server made it)."""
        self.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ------------------------------------------------------------------------------------------
    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.dsn(name)

    def psql(self, database: str, sql: str) -> str:
        """Run SQL with psql and return its unaligned, tuples-only output (for assertions on tables)."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip()


def server_address(dsn: str) -> tuple[str, int]:
    """The (host, port) of the server `dsn` names."""
    parts = urlsplit(dsn)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def dsn_via(dsn: str, port: int) -> str:
    """`dsn` through a proxy listening on 127.0.0.1:`port` (the same user and database)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()


async def end_other_connections(dsn: str) -> int:
    """pg_terminate_backend every other connection to `dsn`'s database (each is sent a shutdown's FATAL, then
    closed, as a server restart does); how many."""
    admin = await asyncpg.connect(dsn)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.close()
