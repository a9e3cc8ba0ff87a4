"""Queue servers that speak TLS only, on loopback, with a certificate for a name that is not the address
dialled (127.0.0.1): workers and the operator's depth sources connect with the CA and `serverName` the
WorkerPool gives, and refuse a server their CA did not sign, saying so."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from devenv.chart import RELEASE, RELEASE_NAMESPACE, SERVICE_ACCOUNT
from devenv.cluster import Cluster
from devenv.pki import Authority
from devenv.servers import RabbitMQServer, RedisServer, ServerTls
from devenv.waiting import eventually
from e2e.worker.conftest import Workers
from e2e.worker.test_worker_processes import events
from workerfleet import producer
from workerfleet.api.credentials import Credentials
from workerfleet.api.workerpool import Queue
from workerfleet.backends.base import QueueSample, QueueUnreachableError
from workerfleet.backends.sources import open_source
from workerfleet.worker.envelope import encode, new_envelope

SERVER_NAME = "queue.workerfleet.test"
"""The only name in the servers' certificates: verifying against 127.0.0.1 fails."""
CA_SECRET = {"name": "queue-ca", "key": "ca.crt"}


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    """The CA that signed the servers' certificates, and another one."""
    directory = tmp_path_factory.mktemp("queue-pki")
    return Authority(directory, "queue-ca"), Authority(directory, "other-ca")


@pytest.fixture(scope="module")
def server_tls(authorities: tuple[Authority, Authority]) -> ServerTls:
    signer, _ = authorities
    pair = signer.issue("queue-server", SERVER_NAME, server_names=(SERVER_NAME,))
    return ServerTls(cert=pair.cert, key=pair.key, ca=signer.pair.cert)


@pytest.fixture(scope="module")
def trusted_ca(authorities: tuple[Authority, Authority]) -> str:
    return authorities[0].pair.cert.read_text()


@pytest.fixture(scope="module")
def other_ca(authorities: tuple[Authority, Authority]) -> str:
    return authorities[1].pair.cert.read_text()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, server_tls: ServerTls) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=server_tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_rabbitmq(tmp_path_factory: pytest.TempPathFactory, server_tls: ServerTls) -> Iterator[RabbitMQServer]:
    server = RabbitMQServer(tmp_path_factory.mktemp("rabbitmq-tls"), tls=server_tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _tls(server_name: str | None = SERVER_NAME) -> dict[str, Any]:
    return {"caSecretRef": CA_SECRET, **({"serverName": server_name} if server_name else {})}


def redis_list_spec(server: RedisServer, key: str, server_name: str | None = SERVER_NAME) -> dict[str, Any]:
    return {"redis": {"address": server.address, "list": key, "tls": _tls(server_name)}}


def redis_stream_spec(server: RedisServer, stream: str) -> dict[str, Any]:
    return {
        "redisStream": {
            "address": server.address,
            "stream": stream,
            "consumerGroup": "workers",
            "tls": _tls(),
        }
    }


def rabbitmq_spec(server: RabbitMQServer, queue: str) -> dict[str, Any]:
    return {"rabbitmq": {"address": server.address, "queue": queue, "tls": _tls()}}


def depth(spec: dict[str, Any], ca_pem: str) -> QueueSample:
    async def read() -> QueueSample:
        source = open_source(Queue.model_validate(spec), Credentials(ca_pem=ca_pem))
        try:
            return await source.read()
        finally:
            await source.close()

    return asyncio.run(read())


def job(job_id: str) -> bytes:
    return encode(new_envelope("probe", {"id": job_id}, now=datetime.now(UTC), job_id=job_id))


def rabbitmq_context(server: RabbitMQServer) -> ssl.SSLContext:
    assert server.tls is not None
    context = ssl.create_default_context(cafile=str(server.tls.ca))
    context.check_hostname = False
    return context


def publish(server: RabbitMQServer, queue: str, bodies: list[bytes]) -> None:
    async def send() -> None:
        connection = await aio_pika.connect(
            host="127.0.0.1", port=server.port, ssl=True, ssl_context=rabbitmq_context(server), timeout=10
        )
        async with connection, connection.channel() as channel:
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
                )

    asyncio.run(send())


class SpecOnly:
    """What Workers.start needs of a queue: its name and the spec the worker is given."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self._spec = spec

    def spec(self) -> dict[str, Any]:
        return self._spec


def finished(probe_log: Path) -> list[str]:
    return sorted(job_id for job_id, _pid in events(probe_log, "finish"))


def test_redis_depth_sources_read_over_tls_with_the_ca_and_server_name(
    tls_redis: RedisServer, trusted_ca: str
) -> None:
    key = f"jobs-{uuid.uuid4().hex[:8]}"
    stream = f"stream-{uuid.uuid4().hex[:8]}"
    with tls_redis.client() as client:
        client.lpush(key, job("a"), job("b"), job("c"))
        client.xadd(stream, {"job": job("d")})
        client.xgroup_create(stream, "workers", id="0")

    assert depth(redis_list_spec(tls_redis, key), trusted_ca).depth == 3
    assert depth(redis_stream_spec(tls_redis, stream), trusted_ca).depth == 1


def test_a_depth_source_refuses_a_server_its_ca_did_not_sign_and_says_why(
    tls_redis: RedisServer, other_ca: str
) -> None:
    with pytest.raises(QueueUnreachableError) as refused:
        depth(redis_list_spec(tls_redis, "jobs"), other_ca)
    message = str(refused.value)
    assert "TLS: certificate verify failed" in message, message
    # OpenSSL's words: the CA is not one we trust (which words depends on what chain the server sends)
    assert message.rpartition("certificate verify failed: ")[2] in {
        "self-signed certificate in certificate chain",
        "unable to get local issuer certificate",
    }, message


def test_without_server_name_the_dialled_address_is_verified_and_refused(
    tls_redis: RedisServer, trusted_ca: str
) -> None:
    with pytest.raises(QueueUnreachableError) as refused:
        depth(redis_list_spec(tls_redis, "jobs", server_name=None), trusted_ca)
    message = str(refused.value)
    assert "TLS: certificate verify failed" in message, message
    assert "127.0.0.1" in message, message


@pytest.mark.parametrize("backend", ["redis-list", "redis-stream"])
def test_a_worker_consumes_from_redis_over_tls(
    backend: str, tls_redis: RedisServer, trusted_ca: str, workers: Workers, probe_log: Path
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    spec = redis_list_spec(tls_redis, name) if backend == "redis-list" else redis_stream_spec(tls_redis, name)
    with tls_redis.client() as client:
        if backend == "redis-list":
            client.lpush(name, job("tls-1"), job("tls-2"))
        else:
            for job_id in ("tls-1", "tls-2"):
                client.xadd(name, {"job": job(job_id)})

    workers.start(SpecOnly(name, spec), environment={"WORKERFLEET_QUEUE_CA": trusted_ca})

    eventually(lambda: finished(probe_log) == ["tls-1", "tls-2"], what="both jobs done over TLS", timeout=30)


def test_a_worker_with_the_wrong_ca_is_not_ready_and_logs_why(
    tls_redis: RedisServer, other_ca: str, workers: Workers
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    worker = workers.start(
        SpecOnly(name, redis_list_spec(tls_redis, name)),
        environment={"WORKERFLEET_QUEUE_CA": other_ca},
        wait=False,
    )

    def refused() -> bool:
        return any("TLS: certificate verify failed" in json.dumps(entry) for entry in worker.logs())

    eventually(refused, what="the worker to log the TLS failure", timeout=30)
    assert worker.probe("/readyz")[0] == 503


def test_a_worker_without_the_ca_the_pool_names_refuses_to_start(
    tls_redis: RedisServer, workers: Workers
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    worker = workers.start(SpecOnly(name, redis_list_spec(tls_redis, name)), wait=False)
    assert worker.wait_exit() != 0
    assert "WORKERFLEET_QUEUE_CA" in worker.log_path.read_text()


def test_rabbitmq_over_tls_depth_and_worker(
    tls_rabbitmq: RabbitMQServer, trusted_ca: str, other_ca: str, workers: Workers, probe_log: Path
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    publish(tls_rabbitmq, name, [job("amqps-1"), job("amqps-2")])

    assert depth(rabbitmq_spec(tls_rabbitmq, name), trusted_ca).depth == 2
    with pytest.raises(QueueUnreachableError) as refused:
        depth(rabbitmq_spec(tls_rabbitmq, name), other_ca)
    assert "TLS: certificate verify failed" in str(refused.value), str(refused.value)

    workers.start(
        SpecOnly(name, rabbitmq_spec(tls_rabbitmq, name)), environment={"WORKERFLEET_QUEUE_CA": trusted_ca}
    )
    eventually(
        lambda: finished(probe_log) == ["amqps-1", "amqps-2"], what="both jobs done over amqps", timeout=30
    )


def test_the_producer_enqueues_over_tls_with_the_ca_from_the_environment(
    tls_redis: RedisServer, trusted_ca: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    pool = {"metadata": {"name": "produced"}, "spec": {"jobTypes": ["probe"], "replicas": 0,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": redis_list_spec(tls_redis, name)}}  # fmt: skip
    job_type = {"metadata": {"name": "probe"}, "spec": {"lane": "fast", "timeoutSeconds": 30}}
    (tmp_path / "pool.json").write_text(json.dumps({"kind": "WorkerPool", **pool}))
    (tmp_path / "jobtype.json").write_text(json.dumps({"kind": "JobType", **job_type}))
    monkeypatch.setenv("WORKERFLEET_QUEUE_CA", trusted_ca)

    target = producer.from_files(
        str(tmp_path / "pool.json"), [str(tmp_path / "jobtype.json")], job_type="probe"
    )
    asyncio.run(producer.send(target, [producer.build(target, {"id": "p-1"}, job_id="p-1")]))

    with tls_redis.client() as client:
        assert client.llen(name) == 1


def _pool(name: str, server: RedisServer, ca_secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "jobTypes": ["probe"],
            "replicas": 0,
            "template": {"spec": {"containers": [{"name": "worker", "image": "worker:1"}]}},
            "queue": {
                "redis": {
                    "address": server.address,
                    "list": f"jobs-{name}",
                    "tls": {"caSecretRef": {"name": ca_secret, "key": "ca.crt"}, "serverName": SERVER_NAME},
                }
            },
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 3,
                "targetDepthPerReplica": 5,
                "pollingIntervalSeconds": 1,
            },
        },
    }


def _reachable(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    body = json.loads(cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json").stdout)
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "QueueReachable"), None)


def test_the_operator_reads_depth_over_tls_and_names_a_wrong_ca_in_queue_reachable(
    operator: Cluster,
    namespace: str,
    tls_redis: RedisServer,
    authorities: tuple[Authority, Authority],
    tmp_path: Path,
) -> None:
    cluster = operator
    signer, other = authorities
    # Given the namespace lets the operator read its queue Secrets, and two CA bundles there
    cluster.kubectl(
        "create", "rolebinding", "workerfleet-queue-credentials", "-n", namespace,
        f"--clusterrole={RELEASE}-queue-credentials",
        f"--serviceaccount={RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}",
    )  # fmt: skip
    for secret, authority in (("queue-ca", signer), ("other-ca", other)):
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            secret,
            "-n",
            namespace,
            f"--from-file=ca.crt={authority.pair.cert}",
        )
    with tls_redis.client() as client:
        client.lpush("jobs-trusting", job("t-1"), job("t-2"))
    job_type = {
        "apiVersion": "workerfleet.dev/v1alpha1",
        "kind": "JobType",
        "metadata": {"name": "probe"},
        "spec": {"lane": "fast", "timeoutSeconds": 30},
    }
    documents = (
        job_type,
        _pool("trusting", tls_redis, "queue-ca"),
        _pool("mistrusting", tls_redis, "other-ca"),
    )

    # When pools name the server's CA, and another CA
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input_text="\n---\n".join(json.dumps(d) for d in documents)
    )

    # Then the first pool's depth is read over TLS (and it scales on it)
    trusted = eventually(
        lambda: (c := _reachable(cluster, namespace, "trusting")) and c["status"] == "True" and c,
        what="QueueReachable=True over TLS",
        timeout=90,
    )
    assert trusted["reason"] == "DepthRead", trusted
    # And the second pool says the certificate was refused, and why
    refused = eventually(
        lambda: (c := _reachable(cluster, namespace, "mistrusting")) and c["status"] == "False" and c,
        what="QueueReachable=False for the wrong CA",
        timeout=90,
    )
    assert refused["reason"] == "QueueUnreachable", refused
    assert "TLS: certificate verify failed" in refused["message"], refused
    # And the workers read the CA the way they read queue credentials: by reference, from the Secret
    deployment = json.loads(
        cluster.kubectl("get", "deployment", "trusting", "-n", namespace, "-o", "json").stdout
    )
    env = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKERFLEET_QUEUE_CA"]["valueFrom"] == {"secretKeyRef": {"name": "queue-ca", "key": "ca.crt"}}
