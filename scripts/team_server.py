"""A throwaway team tracking stack on loopback, built from the same parts a team runs.

- PostgreSQL (Debian's packages; `scripts/postgres.sh` installs them if missing) as MLflow's
  backend store and as the basic-auth user store, in a temporary cluster on a free port;
- moto in server mode as the S3-compatible artifact store;
- `mlflow server` with proxied artifacts (`--serve-artifacts --artifacts-destination s3://...`)
  and MLflow's basic-auth app (`--app-name basic-auth`).

It is what `deploy/docker-compose.yml` runs, minus Docker (not available everywhere, e.g. CI
runners without a Docker engine). The team integration tests and `bench/bench_team.py` start it
through `start()`; a person can run it by hand:

    .venv/bin/python scripts/team_server.py        # prints the environment to export; Ctrl-C

Since PostgreSQL refuses to run as root, as root the cluster is run as the `postgres` user.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "ctloop-artifacts"
ADMIN = "ctloop-admin"
# moto accepts any keys; they only exist so botocore signs requests.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": "moto-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and points at its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path:
    """PostgreSQL's binaries, installed from Debian's packages first if needed."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh")], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"PostgreSQL unavailable: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class TeamStack:
    """Handles on a running stack; `client_env()` is all a ctloop user needs."""

    root: Path
    pg_dir: Path
    pg_bindir: Path
    pg_port: int
    pg_password: str
    s3_port: int
    mlflow_port: int
    admin_password: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def dsn(self, database: str = "mlflow") -> str:
        """SQLAlchemy URL for MLflow (the driver named: SQLAlchemy 2.1 defaults to psycopg 3)."""
        return (f"postgresql+psycopg2://mlflow:{self.pg_password}@127.0.0.1:{self.pg_port}/"
                f"{database}")

    def libpq_dsn(self, database: str = "mlflow") -> str:
        """For psycopg2.connect: inspecting what the server wrote."""
        return (f"host=127.0.0.1 port={self.pg_port} dbname={database} user=mlflow "
                f"password={self.pg_password}")

    def client_env(self, username: str = ADMIN, password: str | None = None) -> dict[str, str]:
        """The three variables that move ctloop from the embedded store to this server."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri,
                "MLFLOW_TRACKING_USERNAME": username,
                "MLFLOW_TRACKING_PASSWORD": password or self.admin_password}

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _pg(self.pg_bindir, "pg_ctl", "-D", str(self.pg_dir / "data"), "-m", "fast", "-w",
            "stop", check=False)
        shutil.rmtree(self.pg_dir, ignore_errors=True)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _pg(bindir: Path, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(_as_postgres([str(bindir / tool), *args]), capture_output=True,
                          text=True, check=False)
    if check and done.returncode != 0:
        raise StackError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def _start_postgres(bindir: Path, pg_dir: Path, port: int, password: str) -> None:
    """initdb + pg_ctl start on 127.0.0.1:port; a `mlflow` role owning two databases."""
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres", "postgres")
    pwfile = pg_dir / "superuser.pw"
    pwfile.write_text(secrets.token_urlsafe(24) + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    _pg(bindir, "initdb", "-D", str(pg_dir / "data"), "-U", "postgres", "-E", "UTF8",
        "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
        f"--pwfile={pwfile}")
    pwfile.unlink()
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {pg_dir} -c fsync=off "
               "-c max_connections=200")  # fsync off: a throwaway test cluster
    _pg(bindir, "pg_ctl", "-D", str(pg_dir / "data"), "-l", str(pg_dir / "postgres.log"),
        "-o", options, "-w", "-t", "60", "start")
    sql = (f"CREATE ROLE mlflow LOGIN PASSWORD '{password}';"
           "CREATE DATABASE mlflow OWNER mlflow;"
           "CREATE DATABASE mlflow_auth OWNER mlflow;")
    for statement in sql.split(";")[:-1]:
        _pg(bindir, "psql", "-h", str(pg_dir), "-p", str(port), "-U", "postgres", "-d",
            "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", statement)


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float,
               ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{process.args[0]} exited ({process.returncode}); log {log}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"{url} not ready after {timeout:.0f} s; log {log}")


def _create_bucket(endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                      region_name=S3_KEYS["AWS_DEFAULT_REGION"])
    s3.create_bucket(Bucket=BUCKET)


def start(root: Path, workers: int = 2, timeout: float = 180.0) -> TeamStack:
    """Start PostgreSQL, moto S3 and `mlflow server --app-name basic-auth`; logs go to `root`."""
    root.mkdir(parents=True, exist_ok=True)
    bindir = postgres_bindir()
    # Not under root: pytest's temp folders are 0700 and the postgres user must reach the data.
    pg_dir = Path(tempfile.mkdtemp(prefix="ctloop-pg-"))
    stack = TeamStack(root=root, pg_dir=pg_dir, pg_bindir=bindir, pg_port=free_port(),
                      pg_password=secrets.token_urlsafe(18), s3_port=free_port(),
                      mlflow_port=free_port(), admin_password=secrets.token_urlsafe(18))
    try:
        _start_postgres(bindir, pg_dir, stack.pg_port, stack.pg_password)
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MLFLOW_", "AWS_"))}
        s3_log = root / "moto.log"
        moto = _spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                       str(stack.s3_port)], s3_log, base_env)
        stack.processes.append(moto)
        _wait_http(f"{stack.s3_endpoint}/moto-api/", moto, s3_log, timeout)
        _create_bucket(stack.s3_endpoint)

        auth_ini = root / "basic_auth.ini"
        auth_ini.write_text(
            "[mlflow]\n"
            # Signed-in users may read everything; writing needs ownership or a grant.
            "default_permission = READ\n"
            f"database_uri = {stack.dsn('mlflow_auth')}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Without a cache each request pays a PBKDF2 hash; 60 s staleness is acceptable.
            "auth_cache_ttl_seconds = 60\n")
        auth_ini.chmod(0o600)
        server_env = {**base_env, **S3_KEYS,
                      "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint,
                      "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
                      # Read once, to create the admin in an empty user store.
                      "MLFLOW_AUTH_ADMIN_PASSWORD": stack.admin_password,
                      # CSRF key of the auth app's forms; the same for every worker.
                      "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
                      "MLFLOW_DISABLE_TELEMETRY": "true",
                      # MLflow 3's GenAI job runner: seven huey consumer processes polling
                      # the store, which nothing of ctloop's uses.
                      "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_log = root / "mlflow-server.log"
        server = _spawn([str(Path(sys.executable).parent / "mlflow"), "server",
                         "--backend-store-uri", stack.dsn("mlflow"),
                         "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/mlflow",
                         "--app-name", "basic-auth", "--host", "127.0.0.1",
                         "--port", str(stack.mlflow_port), "--workers", str(workers)],
                        mlflow_log, server_env)
        stack.processes.append(server)
        # 401 = up and refusing an anonymous caller.
        _wait_http(f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1",
                   server, mlflow_log, timeout, ok=(401,))
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def running(root: Path, **kwargs) -> Iterator[TeamStack]:
    stack = start(root, **kwargs)
    try:
        yield stack
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the logs and the auth config (default: a temp folder)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    folder = (args.dir or Path(tempfile.mkdtemp(prefix="ctloop-team-"))).resolve()
    with running(folder, workers=args.workers) as stack:
        print("team tracking server up; in another shell:")
        for key, value in stack.client_env().items():
            print(f"  export {key}={value}")
        print(f"artifacts: s3://{BUCKET}/mlflow at {stack.s3_endpoint}; "
              f"PostgreSQL: 127.0.0.1:{stack.pg_port}; logs in {folder}")
        print("Ctrl-C stops it and deletes the database.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
