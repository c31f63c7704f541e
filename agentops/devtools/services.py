"""Project-local PostgreSQL and Redis for `make run`, `make test` and `make bench` (stdlib only).

    python -m agentops.devtools.services up dev|test     # start (or reuse) and print KEY=value lines
    python -m agentops.devtools.services down dev|test

Each profile has its own data directory under .run/ and its own loopback ports, so tests never touch
the demo data. PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` system
user; otherwise to the invoking user. Every failure ends with one line saying what to do.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / ".run"


class ServiceError(SystemExit):
    """Stops the launcher with one clear line (no traceback)."""

    def __init__(self, message: str):
        super().__init__(f"agentops: {message}")


@dataclass(frozen=True)
class Profile:
    name: str
    pg_port: int
    redis_port: int
    durable: bool  # tests trade durability for speed; the demo keeps its data across restarts

    @property
    def home(self) -> Path:
        return RUN / self.name

    @property
    def database_url(self) -> str:
        return f"postgresql://agentops@127.0.0.1:{self.pg_port}/agentops"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


def profile(name: str) -> Profile:
    env = os.environ
    if name == "dev":
        return Profile("dev", int(env.get("AGENTOPS_PG_PORT", 54320)), int(env.get("AGENTOPS_REDIS_PORT", 63790)), True)
    if name == "test":
        return Profile(
            "test", int(env.get("AGENTOPS_TEST_PG_PORT", 54330)), int(env.get("AGENTOPS_TEST_REDIS_PORT", 63800)), False
        )
    raise ServiceError(f"unknown profile {name!r} (use dev or test)")


def is_root() -> bool:
    return os.geteuid() == 0


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_path(prof: Profile, name: str) -> Path:
    path = prof.home / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- binaries ----------------------------------------------------------------------------------
def pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def ensure_binaries(need_pg: bool, need_redis: bool) -> None:
    missing = []
    if need_pg and pg_bindir() is None:
        missing.append("postgresql")
    if need_redis and shutil.which("redis-server") is None:
        missing.append("redis-server")
    if not missing:
        return
    if not is_root() or shutil.which("apt-get") is None:
        raise ServiceError(
            f"missing {', '.join(missing)}: install with `sudo apt-get install -y {' '.join(missing)}` "
            "(or set DATABASE_URL / REDIS_URL to servers you already run)"
        )
    print(f"agentops: installing {' '.join(missing)} with apt-get ...", file=sys.stderr, flush=True)
    apt_log = RUN / "apt-get.log"
    apt_log.parent.mkdir(parents=True, exist_ok=True)
    with apt_log.open("a") as out:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        ok = subprocess.run(["apt-get", "update"], stdout=out, stderr=out, env=env).returncode == 0
        ok = (
            ok
            and subprocess.run(["apt-get", "install", "-y", *missing], stdout=out, stderr=out, env=env).returncode == 0
        )
    if not ok:
        raise ServiceError(f"apt-get could not install {' '.join(missing)}; see {apt_log}")


# --- PostgreSQL --------------------------------------------------------------------------------
def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if is_root() else cmd


def _run(cmd: list[str], log: Path, what: str) -> None:
    with log.open("a") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ServiceError(f"{what} failed; see {log}")


def pg_up(prof: Profile) -> str:
    bindir = pg_bindir()
    data = prof.home / "pg"
    log = log_path(prof, "postgres.log")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if is_root():
            shutil.chown(data, "postgres", "postgres")
            data.chmod(0o700)
        _run(
            _as_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]
            ),
            log,
            "initdb",
        )
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {prof.pg_port}",
            f"unix_socket_directories = '{data}'",
            "max_connections = 200",
        ]
        if not prof.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# agentops\n" + "\n".join(settings) + "\n")
    if is_root():  # the server (running as postgres) appends to its log itself
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    status = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "status"]), capture_output=True)
    if status.returncode != 0:
        if port_open(prof.pg_port):
            raise ServiceError(
                f"port {prof.pg_port} is in use by another program; stop it or set "
                f"AGENTOPS_{'TEST_' if prof.name == 'test' else ''}PG_PORT to a free port"
            )
        _run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]),
            log,
            "starting PostgreSQL",
        )
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(prof.pg_port), "-U", "postgres", "-tAq"]
    if (
        subprocess.run(
            [*psql, "-c", "SELECT 1 FROM pg_roles WHERE rolname='agentops'"], capture_output=True, text=True
        ).stdout.strip()
        != "1"
    ):
        _run([*psql, "-c", "CREATE ROLE agentops LOGIN CREATEDB"], log, "creating the agentops role")
    if (
        subprocess.run(
            [*psql, "-c", "SELECT 1 FROM pg_database WHERE datname='agentops'"], capture_output=True, text=True
        ).stdout.strip()
        != "1"
    ):
        _run([*psql, "-c", "CREATE DATABASE agentops OWNER agentops"], log, "creating the agentops database")
    return prof.database_url


def pg_down(prof: Profile) -> None:
    bindir = pg_bindir()
    data = prof.home / "pg"
    if bindir and (data / "postmaster.pid").exists():
        subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )


# --- Redis -------------------------------------------------------------------------------------
def redis_up(prof: Profile) -> str:
    data = prof.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    pidfile = data / "redis.pid"
    if _pid_alive(pidfile) and port_open(prof.redis_port):
        return prof.redis_url
    if port_open(prof.redis_port):
        raise ServiceError(
            f"port {prof.redis_port} is in use by another program; stop it or set "
            f"AGENTOPS_{'TEST_' if prof.name == 'test' else ''}REDIS_PORT to a free port"
        )
    persistence = ["--save", "60 1000", "--appendonly", "no"] if prof.durable else ["--save", "", "--appendonly", "no"]
    cmd = [
        "redis-server",
        "--port",
        str(prof.redis_port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(log_path(prof, "redis.log")),
        *persistence,
    ]
    _run(cmd, log_path(prof, "redis.log"), "starting Redis")
    for _ in range(100):
        if port_open(prof.redis_port):
            return prof.redis_url
        time.sleep(0.05)
    raise ServiceError(f"Redis did not start on port {prof.redis_port}; see {log_path(prof, 'redis.log')}")


def redis_down(prof: Profile) -> None:
    pidfile = prof.home / "redis" / "redis.pid"
    if _pid_alive(pidfile):
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 15)
        for _ in range(100):
            if not _pid_alive(pidfile):
                break
            time.sleep(0.05)


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


# --- entry points ------------------------------------------------------------------------------
def up(name: str) -> dict[str, str]:
    """Start what the profile needs; return the environment that points at it."""
    prof = profile(name)
    prefix = "TEST_" if name == "test" else ""
    db_url = os.environ.get(f"{prefix}DATABASE_URL")
    redis_url = os.environ.get(f"{prefix}REDIS_URL")
    ensure_binaries(need_pg=not db_url, need_redis=not redis_url)
    return {
        "DATABASE_URL": db_url or pg_up(prof),
        "REDIS_URL": redis_url or redis_up(prof),
    }


def down(name: str) -> None:
    prof = profile(name)
    redis_down(prof)
    pg_down(prof)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "up":
        for key, value in up(argv[1]).items():
            print(f"{key}={value}")
    else:
        down(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
