"""Real Redis, RabbitMQ and Prometheus servers from Debian's packages, on loopback ports, data in a temp dir.

Each server runs as a child of the test session in its own process group and is stopped with
everything it spawned (RabbitMQ's epmd included) when the fixture ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aio_pika
import redis

from devenv.waiting import eventually

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group the server leads, then SIGKILL what is left after a grace period."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class ServerTls:
    """A serving certificate and key (PEM files) and the CA that signed it: the server then speaks TLS
    only, on its one port."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """redis-server bound to 127.0.0.1 on a free port; TLS only when `tls` is given; without
    persistence, or with `durable` an append-only file fsynced on every write (`appendfsync always`),
    so it can be killed and restarted without losing a write it acknowledged."""

    def __init__(self, directory: Path, tls: ServerTls | None = None, *, durable: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.durable = durable
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                *self._listener(),
                "--dir",
                str(self.directory),
                "--save",
                "",
                *(
                    ["--appendonly", "yes", "--appendfsync", "always"]
                    if self.durable
                    else ["--appendonly", "no"]
                ),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = self.client(socket_connect_timeout=1)
        try:
            eventually(
                lambda: self._answers(client),
                what="redis-server to answer PING",
                timeout=START_TIMEOUT_SECONDS,
            )
        finally:
            client.close()

    def _listener(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert),
            "--tls-key-file",
            str(self.tls.key),
            "--tls-ca-cert-file",
            str(self.tls.ca),
            "--tls-auth-clients",
            "no",
        ]

    def client(self, **options: Any) -> redis.Redis:
        """A synchronous client for seeding and inspecting (over TLS, trusting the server's CA)."""
        if self.tls is not None:
            options |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca), "ssl_check_hostname": False}
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def _answers(self, client: redis.Redis) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self._process.returncode}; see {self.directory}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)
            self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crashed server or node: no shutdown, no final save."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            self._process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and new ones are accepted, nothing answers (a hung server or
        a network that drops replies) until `thaw`."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)


class RabbitMQServer:
    """A RabbitMQ node of its own: its own epmd, node name, ports and data, all on 127.0.0.1; its AMQP
    listener speaks TLS only (amqps) when `tls` is given."""

    def __init__(self, directory: Path, tls: ServerTls | None = None) -> None:
        self.directory = directory
        self.tls = tls
        self.port = free_port()
        self._epmd_port = free_port()
        self._dist_port = free_port()
        self._node = f"workerfleet-test-{uuid.uuid4().hex[:8]}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),  # the Erlang cookie lives here
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self._node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.directory / "plugins-expand"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq-env.conf").write_text("")
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(self._listeners())
        environment = self._environment()
        log = (self.directory / "rabbitmq.out").open("ab")
        # Our own epmd, started first, so the node does not spawn a daemon that would outlive the tests.
        self._epmd = subprocess.Popen(
            ["epmd", "-port", str(self._epmd_port), "-address", "127.0.0.1"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        eventually(lambda: _listening(self._epmd_port), what="epmd to listen", timeout=10)
        self._server = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        eventually(
            self._answers, what="rabbitmq-server to accept AMQP connections", timeout=START_TIMEOUT_SECONDS
        )

    def _listeners(self) -> str:
        if self.tls is None:
            return f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        return (
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {self.tls.ca}\n"
            f"ssl_options.certfile = {self.tls.cert}\n"
            f"ssl_options.keyfile = {self.tls.key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )

    def _answers(self) -> bool:
        assert self._server is not None
        if self._server.poll() is not None:
            raise AssertionError(
                f"rabbitmq-server exited with {self._server.returncode}; see {self.directory}"
            )
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.check_hostname = False

        async def connect() -> bool:
            connection = await aio_pika.connect(
                host="127.0.0.1", port=self.port, timeout=2, ssl=context is not None, ssl_context=context
            )
            await connection.close()
            return True

        try:
            return asyncio.run(connect())
        except (OSError, aio_pika.exceptions.AMQPConnectionError, TimeoutError):
            return False

    def unacknowledged(self, queue: str) -> int:
        """Messages of `queue` delivered and not yet acknowledged (0 when there is no such queue)."""
        listing = subprocess.run(
            [
                str(RABBITMQCTL),
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "messages_unacknowledged",
            ],
            env=self._environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        counts = dict(line.split("\t") for line in listing.stdout.splitlines() if "\t" in line)
        return int(counts.get(queue, "0"))

    def consumer_arguments(self, queue: str) -> dict[str, str] | None:
        """The arguments of the first consumer of `queue`, as rabbitmqctl prints them; None without one."""
        listing = subprocess.run(
            [str(RABBITMQCTL), "list_consumers", "--quiet", "--no-table-headers", "queue_name", "arguments"],
            env=self._environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        for line in listing.stdout.splitlines():
            name, _, arguments = line.partition("\t")
            if name == queue:
                # e.g. [{"x-consumer-timeout",3660000}] -> {"x-consumer-timeout": "3660000"}
                pairs = re.findall(r'\{"?([^",{}]+)"?,\s*"?([^",{}]*)"?\}', arguments)
                return dict(pairs)
        return None

    def restart(self) -> None:
        """Stop the node and start it again on the same ports and data (durable queues and persistent
        messages survive; epmd keeps running)."""
        assert self._server is not None
        _stop_group(self._server)
        log = (self.directory / "rabbitmq.out").open("ab")
        self._server = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self._environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        eventually(
            self._answers, what="rabbitmq-server to accept AMQP connections", timeout=START_TIMEOUT_SECONDS
        )

    def queue_messages(self, wanted: Callable[[str], bool]) -> int:
        """Messages (ready and unacknowledged) in every queue whose name is `wanted`."""
        listing = subprocess.run(
            [str(RABBITMQCTL), "list_queues", "--quiet", "--no-table-headers", "name", "messages"],
            env=self._environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        total = 0
        for line in listing.stdout.splitlines():
            name, _, count = line.partition("\t")
            if wanted(name) and count.strip().isdigit():
                total += int(count)
        return total

    def freeze(self) -> None:
        """SIGSTOP the node: connections stay open and new ones are accepted, nothing answers until
        `thaw`."""
        assert self._server is not None
        os.killpg(self._server.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._server is not None
        os.killpg(self._server.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._server is not None:
            _stop_group(self._server)
            self._server = None
        if self._epmd is not None:
            _stop_group(self._epmd)
            self._epmd = None


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=Server)


def running(server: ServerT) -> Iterator[ServerT]:
    """Start a server for a fixture and stop it afterwards, whatever the tests did
    (`yield from running(...)`)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
