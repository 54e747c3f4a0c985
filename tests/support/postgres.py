"""A throwaway PostgreSQL for the lake's tests: Debian's server binaries, a fresh cluster
made by initdb in a temporary folder, listening on a free port of 127.0.0.1 only.

PostgreSQL refuses to run as root, so under root (CI containers) the cluster belongs to
the unprivileged `nobody` and its processes run as that user. Readiness is waited on with
`pg_ctl start --wait` (it polls the server), never a fixed sleep.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.request_servers import free_port

_SUPERUSER = "pyrometer"


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: PYROMETER_PG_BIN, PATH, or Debian's
    /usr/lib/postgresql/N/bin (not on PATH there), newest first."""
    if env := os.environ.get("PYROMETER_PG_BIN"):
        return Path(env)
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name), reverse=True)
    return Path(versions[0]).parent if versions else None


@dataclass
class Postgres:
    """One running cluster; `url(db)` is what `pyrometer collector --lake` takes."""

    bin_dir: Path
    root: Path
    port: int
    user: str | None  # the OS user its processes run as, None: this process's

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(args, user=self.user, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", _SUPERUSER, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql)

    def create_database(self, name: str) -> str:
        """A fresh database (one per test keeps their catalogs apart); returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", _SUPERUSER,
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        # TCP on 127.0.0.1 only, no Unix socket (its default folder is not ours), and
        # durability off: the data lives as long as the test session
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   "-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._run(str(self.bin_dir / "pg_ctl"), "start", "--wait", "--timeout=60",
                  "-D", str(self.data_dir), "-l", str(self.root / "log"), "-o", options,
                  timeout=90)

    def stop(self) -> None:
        subprocess.run([str(self.bin_dir / "pg_ctl"), "stop", "--mode=immediate", "--wait",
                        "-D", str(self.data_dir)], user=self.user, capture_output=True,
                       timeout=60, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """A started cluster; raises RuntimeError (with the reason) when it cannot start."""
    bin_dir = find_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise RuntimeError("PostgreSQL's initdb was not found: run `make postgres` (or set "
                           "PYROMETER_PG_BIN to the folder holding initdb and pg_ctl)")
    user = None
    # a folder of its own under the system's temporary folder: pytest's tmp_path is private
    # to root, where the unprivileged server could not reach it
    root = Path(tempfile.mkdtemp(prefix="pyrometer-pg-"))
    if os.geteuid() == 0:
        user = "nobody"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    pg = Postgres(bin_dir, root, free_port(), user)
    try:
        pg.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return pg
