"""The stack's PostgreSQL cluster: found binaries, ``initdb`` once, ``pg_ctl`` start/stop on
127.0.0.1, the databases created when missing.

PostgreSQL refuses to run as root: when the stack runs as root the server commands run as the
``postgres`` user (``runuser``), and the cluster folder belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from synthloop.stack.procs import PidFile, StackError, check_port_free, tail, wait_until
from synthloop.stack.settings import HOST, StackSettings

BINARIES = ("initdb", "pg_ctl", "postgres")


def find_bin_dir(settings: StackSettings) -> Path:
    """The folder holding initdb/pg_ctl/postgres of ``postgres.major_version``: ``bin_dir`` if
    set, else the one on PATH, else /usr/lib/postgresql/<major>/bin (Debian's layout)."""
    major = settings.postgres.major_version
    if settings.postgres.bin_dir is not None:
        candidates = [settings.postgres.bin_dir]
    else:
        on_path = shutil.which("pg_ctl")
        candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
        candidates += [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/{major}/bin"))]
    for folder in candidates:
        if all((folder / b).is_file() for b in BINARIES) and binary_major(folder) == major:
            return folder
    raise StackError(f"PostgreSQL {major} binaries ({', '.join(BINARIES)}) not found "
                     f"(looked in {', '.join(map(str, candidates)) or 'PATH'}): install "
                     f"postgresql-{major} or set postgres.bin_dir in the stack config")


def binary_major(bin_dir: Path) -> int | None:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True)
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out.stdout)
    return int(match.group(1)) if match else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("PostgreSQL refuses to run as root and there is no `postgres` user: "
                         "run the stack as a normal user") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _hand_to_server_user(path: Path) -> None:
    """As root: give ``path`` to the postgres user and check it can reach it."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    os.chown(path, entry.pw_uid, entry.pw_gid)
    probe = subprocess.run(_as_server_user(["test", "-w", str(path)]), capture_output=True)
    if probe.returncode != 0:
        raise StackError(f"the postgres user cannot write {path} (a parent folder is private?): "
                         "put the stack's data folder where that user can reach it")


def check_data_version(settings: StackSettings) -> None:
    """Refuse a cluster folder made by another PostgreSQL major version."""
    version_file = settings.pg_data / "PG_VERSION"
    if version_file.is_file():
        found = version_file.read_text().strip()
        if found != str(settings.postgres.major_version):
            raise StackError(f"{settings.pg_data} holds a PostgreSQL {found} cluster but this "
                             f"stack runs PostgreSQL {settings.postgres.major_version}: upgrade it "
                             "(pg_upgrade) or use another data folder (--data-dir)")
    elif settings.pg_data.exists() and any(settings.pg_data.iterdir()):
        raise StackError(f"{settings.pg_data} is not empty and is not a PostgreSQL cluster: "
                         "use another data folder (--data-dir)")


def postmaster_pid(settings: StackSettings) -> int | None:
    try:
        return int((settings.pg_data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def ready(settings: StackSettings) -> bool:
    import psycopg2

    try:
        psycopg2.connect(host=HOST, port=settings.postgres.port, user=settings.postgres.user,
                         dbname="postgres", connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def start(settings: StackSettings, pidfile: PidFile, *, timeout_s: float = 120.0) -> float:
    """initdb (first time), pg_ctl start, databases; seconds until it accepts connections."""
    bin_dir = find_bin_dir(settings)
    check_data_version(settings)
    log = settings.logs_dir / "postgres.log"
    check_port_free("postgres", settings.postgres.port, "postgres.port")
    settings.pg_data.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.pg_data, 0o700)
    _hand_to_server_user(settings.pg_data)
    log.touch()
    _hand_to_server_user(log)
    if not (settings.pg_data / "PG_VERSION").is_file():
        _run([str(bin_dir / "initdb"), "-D", str(settings.pg_data), "-A", "trust", "-U",
              settings.postgres.user, "-E", "UTF8", "--no-instructions"], log)
    options = (f"-p {settings.postgres.port} -k {settings.pg_data} "
               f"-c listen_addresses={HOST}")
    _run([str(bin_dir / "pg_ctl"), "-D", str(settings.pg_data), "-o", options, "-l", str(log),
          "-w", "-t", str(int(timeout_s)), "start"], log)
    pid = postmaster_pid(settings)
    if pid is None:
        raise StackError(f"PostgreSQL started but wrote no postmaster.pid:\n{tail(log, 15)}")
    # Not our child and not our session: pg_ctl's own stop is what shuts it down cleanly.
    pidfile.write(pid, ["postgres", "-D", str(settings.pg_data)], group=False)
    took = wait_until(lambda: ready(settings), what="PostgreSQL", timeout_s=timeout_s, log=log,
                      pidfile=pidfile)
    create_databases(settings)
    return took


def create_databases(settings: StackSettings) -> list[str]:
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=settings.postgres.port, user=settings.postgres.user,
                            dbname="postgres")
    conn.autocommit = True
    made = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            have = {row[0] for row in cur.fetchall()}
            for name in settings.postgres.databases:
                if name not in have:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    made.append(name)
    finally:
        conn.close()
    return made


def stop(settings: StackSettings, pidfile: PidFile, *, timeout_s: float = 60.0) -> bool:
    """pg_ctl stop -m fast, only for the cluster our pid file names."""
    if pidfile.alive_pid() is None or postmaster_pid(settings) != pidfile.alive_pid():
        pidfile.remove()
        return False
    bin_dir = find_bin_dir(settings)
    _run([str(bin_dir / "pg_ctl"), "-D", str(settings.pg_data), "-m", "fast", "-w", "-t",
          str(int(timeout_s)), "stop"], settings.logs_dir / "postgres.log")
    pidfile.remove()
    return True


def _run(cmd: list[str], log: Path) -> None:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise StackError(f"`{' '.join(cmd[:2])} ...` failed: "
                         f"{(proc.stderr or proc.stdout).strip()[-1500:]}\n{tail(log, 10)}")
