"""Real services for the deployment tests: PostgreSQL and redis on 127.0.0.1, each on a free port.

Each is started from the system's binaries (Debian: ``postgresql``, ``redis-server``; ``.ci/run``
installs them when it can) and stopped on exit; :func:`postgres_bin` / :func:`redis_bin` say why a
test must skip when they are missing. PostgreSQL refuses to run as root, so as root the server runs
as the ``postgres`` system user over a temporary directory it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from artsim_pipeline_tests.nga_fixtures import Painting, write_mirror
from artsim_pipeline_tests.support import REPO, free_port

DEPLOY = REPO / "artsim_pipeline" / "deploy"
SQLITE_POOLS = """
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op
    default_limit: 1
"""
MODELS = ("mobilenet_v2", "efficientnet_lite0")  # two models: their embedding steps can run in parallel


def postgres_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl`` (PATH first, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def redis_bin() -> str | None:
    return shutil.which("redis-server")


def wait_port(port: int, timeout: float, what: str, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"{what} exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port}")


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with one database and a password user."""

    user = "artsim"
    password = "artsim-test-pw"
    db = "artsim_dagster"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="artsim-pg-"))
        self.data = self.root / "data"
        self.as_user = None
        if os.geteuid() == 0:  # postgres refuses root: run it as the postgres system user
            self.as_user = "postgres"
            entry = pwd.getpwnam(self.as_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=True)

    def start(self) -> "PostgresServer":
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            entry = pwd.getpwnam(self.as_user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(self.bindir / "initdb", "-D", self.data, "-U", self.user, f"--pwfile={pwfile}",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", options,
                  "-w", "-t", "60", "start")
        self._run(self.bindir / "createdb", "-h", self.root, "-p", str(self.port), "-U", self.user, self.db)
        return self

    def env(self) -> dict[str, str]:
        """The deploy ``dagster.yaml``'s connection variables for this server."""
        return {"ARTSIM_PG_HOST": "127.0.0.1", "ARTSIM_PG_PORT": str(self.port), "ARTSIM_PG_DB": self.db,
                "ARTSIM_PG_USER": self.user, "ARTSIM_PG_PASSWORD": self.password}

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class RedisServer:
    """redis-server on 127.0.0.1, no persistence."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = open(log_dir / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [redis_bin(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(log_dir)], stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "RedisServer":
        try:
            wait_port(self.port, 30, "redis-server", alive=lambda: self.proc.poll() is None)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def materialize(select: list[str], partition: str, env: dict, log: Path) -> subprocess.Popen:
    """``dagster asset materialize`` of one batch, in its own process (the code location from ``env``)."""
    dagster = Path(sys.executable).with_name("dagster")
    out = open(log, "wb")
    try:
        return subprocess.Popen([str(dagster), "asset", "materialize", "-m", "artsim_pipeline.definitions",
                                 "--select", ",".join(select), "--partition", partition],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    """Wait for every process; fail with the log tail of the first one that did not succeed."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, f"{log.name}: rc={proc.returncode}\n" + log.read_text(errors="replace")[-3000:]


def deploy_home(home: Path, extra_yaml: str = "") -> Path:
    """A DAGSTER_HOME holding the deploy ``dagster.yaml`` (plus ``extra_yaml``)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text() + extra_yaml)
    return home


def lake_env(tmp_path: Path, paintings: int, batch_size: int, models: tuple[str, ...] = MODELS) -> dict[str, str]:
    """ARTSIM_* settings of a lake under ``tmp_path/lake`` over a mirror of ``paintings`` small paintings
    (two artists), random weights on the CPU."""
    mirror = write_mirror(tmp_path / "mirror", [Painting(i, width=96, height=80, artist=f"Painter {i % 2}")
                                                for i in range(1, paintings + 1)])
    return {"ARTSIM_NGA_SOURCE": str(mirror), "ARTSIM_DATA_LAKE": str(tmp_path / "lake"), "ARTSIM_LIMIT": "0",
            "ARTSIM_MIN_SIDE": "64", "ARTSIM_BATCH_SIZE": str(batch_size), "ARTSIM_MODELS": ",".join(models),
            "ARTSIM_WEIGHTS": "random", "ARTSIM_DEVICE": "cpu", "ARTSIM_PCA_DIM": "4"}


def sqlite_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME on SQLite whose op-level pools admit one step each by default."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(SQLITE_POOLS)
    return home
