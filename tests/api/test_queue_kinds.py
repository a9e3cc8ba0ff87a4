"""The queue kinds: each backend's facts, and a registry no backend can be missing from."""

from __future__ import annotations

from typing import Any

import pytest

from workerfleet.api.common import SecretKeySelector
from workerfleet.api.queue_kinds import KINDS, kind_of, spoken_list
from workerfleet.api.queue_kinds.base import Allowlist, CredentialNeeds
from workerfleet.api.worker_contract import WorkerEnv
from workerfleet.api.workerpool import Queue
from workerfleet.backends.sources import DEPTH_SOURCES
from workerfleet.worker.backend_factory import CONSUMERS


def ref(name: str, key: str) -> SecretKeySelector:
    return SecretKeySelector(name=name, key=key)


AUTH = {
    "usernameSecretRef": {"name": "q", "key": "user"},
    "passwordSecretRef": {"name": "q", "key": "pass"},
}
TLS_CA = {"caSecretRef": {"name": "ca", "key": "ca.crt"}}
STORE = {
    "address": "store:6379",
    "auth": {"passwordSecretRef": {"name": "s", "key": "pass"}},
    "tls": {"caSecretRef": {"name": "sca", "key": "ca.crt"}},
}
PROMETHEUS = {"address": "https://prometheus:9090", "query": "sum(depth)"}

PLAIN = {
    "redis": {"redis": {"address": "redis:6379", "list": "jobs"}},
    "redisStream": {"redisStream": {"address": "redis:6379", "stream": "jobs", "consumerGroup": "g"}},
    "rabbitmq": {"rabbitmq": {"address": "rabbit:5672", "queue": "jobs"}},
    "prometheus": {"prometheus": PROMETHEUS},
}
SECURED = {
    "redis": {"redis": {"address": "redis:6379", "list": "jobs", "auth": AUTH, "tls": TLS_CA}},
    "redisStream": {
        "redisStream": {
            "address": "redis:6379",
            "stream": "jobs",
            "consumerGroup": "g",
            "auth": AUTH,
            "tls": TLS_CA,
        }
    },
    "rabbitmq": {
        "rabbitmq": {
            "address": "rabbit:5672",
            "queue": "jobs",
            "auth": AUTH,
            "tls": TLS_CA,
            "idempotencyStore": STORE,
        }
    },
    "prometheus": {
        "prometheus": {**PROMETHEUS, "bearerTokenSecretRef": {"name": "p", "key": "token"}, "tls": TLS_CA}
    },
}


def kind(document: dict[str, Any]) -> tuple[Any, Any]:
    return kind_of(Queue.model_validate(document))


def test_every_field_of_the_queue_is_a_registered_kind_named_as_in_manifests() -> None:
    assert [k.field for k in KINDS] == list(Queue.model_fields)
    assert [k.name for k in KINDS] == [Queue.model_fields[k.field].alias or k.field for k in KINDS]


def test_every_kind_has_a_depth_source_and_a_worker_consumer() -> None:
    names = {k.name for k in KINDS}
    assert set(DEPTH_SOURCES) == names
    assert set(CONSUMERS) == names


@pytest.mark.parametrize("name", list(PLAIN))
def test_the_queue_names_its_kind_and_settings(name: str) -> None:
    found, spec = kind(PLAIN[name])
    assert found.name == name
    assert spec == getattr(Queue.model_validate(PLAIN[name]), found.field)


def test_a_queue_without_a_backend_has_no_kind() -> None:
    with pytest.raises(ValueError, match="names no backend"):
        kind_of(Queue.model_construct())


@pytest.mark.parametrize(
    ("name", "queue_name", "description", "address"),
    [
        ("redis", "jobs", "Redis list jobs at redis:6379", ("redis:6379", Allowlist.QUEUES)),
        ("redisStream", "jobs", "Redis stream jobs at redis:6379", ("redis:6379", Allowlist.QUEUES)),
        ("rabbitmq", "jobs", "RabbitMQ queue jobs at rabbit:5672", ("rabbit:5672", Allowlist.QUEUES)),
        (
            "prometheus",
            None,
            "a queue the operator only watches",
            ("https://prometheus:9090", Allowlist.PROMETHEUS),
        ),
    ],
)
def test_name_description_and_address(
    name: str, queue_name: str | None, description: str, address: tuple[str, Allowlist]
) -> None:
    found, spec = kind(PLAIN[name])
    assert found.queue_name(spec) == queue_name
    assert found.describe(spec) == description
    assert found.address(spec) == address


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("redis", CredentialNeeds(ref("q", "user"), ref("q", "pass"), ca=ref("ca", "ca.crt"))),
        ("redisStream", CredentialNeeds(ref("q", "user"), ref("q", "pass"), ca=ref("ca", "ca.crt"))),
        ("rabbitmq", CredentialNeeds(ref("q", "user"), ref("q", "pass"), ca=ref("ca", "ca.crt"))),
        ("prometheus", CredentialNeeds(bearer_token=ref("p", "token"), ca=ref("ca", "ca.crt"))),
    ],
)
def test_the_operator_reads_the_secrets_the_kind_names(name: str, needs: CredentialNeeds) -> None:
    found, spec = kind(SECURED[name])
    assert found.credentials(spec) == needs
    plain, plain_spec = kind(PLAIN[name])
    assert plain.credentials(plain_spec) == CredentialNeeds()


def test_credential_needs_list_their_references_by_credentials_field() -> None:
    needs = CredentialNeeds(ref("a", "u"), ref("a", "p"), ref("b", "t"), ref("c", "ca"))
    assert [field for field, _ in needs.references()] == ["username", "password", "bearer_token", "ca_pem"]
    assert list(CredentialNeeds().references()) == []


@pytest.mark.parametrize(
    ("name", "plain", "secured"),
    [
        ("redis", [], [WorkerEnv.QUEUE_USERNAME, WorkerEnv.QUEUE_PASSWORD, WorkerEnv.QUEUE_CA]),
        ("redisStream", [], [WorkerEnv.QUEUE_USERNAME, WorkerEnv.QUEUE_PASSWORD, WorkerEnv.QUEUE_CA]),
        (
            "rabbitmq",
            [],
            [
                WorkerEnv.QUEUE_USERNAME,
                WorkerEnv.QUEUE_PASSWORD,
                WorkerEnv.QUEUE_CA,
                WorkerEnv.STORE_PASSWORD,
                WorkerEnv.STORE_CA,
            ],
        ),
        ("prometheus", None, None),
    ],
)
def test_what_the_worker_container_reads_from_secrets(
    name: str, plain: list[WorkerEnv] | None, secured: list[WorkerEnv] | None
) -> None:
    for document, variables in ((PLAIN[name], plain), (SECURED[name], secured)):
        found, spec = kind(document)
        needs = found.worker_needs(spec)
        if variables is None:
            assert needs is None
        else:
            assert needs is not None
            assert [variable for variable, _ in needs.environment()] == variables


@pytest.mark.parametrize(
    ("document", "shared"),
    [
        (PLAIN["redis"], True),
        (PLAIN["redisStream"], True),
        (PLAIN["rabbitmq"], False),
        (SECURED["rabbitmq"], True),
        (PLAIN["prometheus"], True),
    ],
)
def test_idempotency_keys_are_shared_unless_rabbitmq_has_no_store(
    document: dict[str, Any], shared: bool
) -> None:
    found, spec = kind(document)
    assert found.keys_shared(spec) is shared


@pytest.mark.parametrize(
    ("name", "trigger_type", "metadata", "secrets"),
    [
        (
            "redis",
            "redis",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "enableTLS": "true",
                "listName": "jobs",
                "listLength": "10",
                "activationListLength": "2",
            },
            [("ca", ref("ca", "ca.crt")), ("password", ref("q", "pass")), ("username", ref("q", "user"))],
        ),
        (
            "redisStream",
            "redis-streams",
            {
                "address": "redis:6379",
                "databaseIndex": "0",
                "enableTLS": "true",
                "stream": "jobs",
                "consumerGroup": "g",
                "lagCount": "10",
                "activationLagCount": "2",
            },
            [("ca", ref("ca", "ca.crt")), ("password", ref("q", "pass")), ("username", ref("q", "user"))],
        ),
        (
            "rabbitmq",
            "rabbitmq",
            {
                "protocol": "amqp",
                "host": "amqps://rabbit:5672/",
                "queueName": "jobs",
                "mode": "QueueLength",
                "value": "10",
                "activationValue": "2",
            },
            [("username", ref("q", "user")), ("password", ref("q", "pass"))],
        ),
        (
            "prometheus",
            "prometheus",
            {
                "serverAddress": "https://prometheus:9090",
                "query": "sum(depth)",
                "threshold": "10",
                "activationThreshold": "2",
                "ignoreNullValues": "true",
                "authModes": "bearer",
            },
            [("bearerToken", ref("p", "token"))],
        ),
    ],
)
def test_keda_trigger_per_kind(
    name: str, trigger_type: str, metadata: dict[str, str], secrets: list[tuple[str, SecretKeySelector]]
) -> None:
    found, spec = kind(SECURED[name])
    trigger = found.keda_trigger(spec, "10", "2")
    assert (trigger.type, trigger.metadata, trigger.secrets) == (trigger_type, metadata, secrets)


def test_keda_is_given_the_ca_of_redis_only() -> None:
    assert {k.name: k.keda_takes_ca for k in KINDS} == {
        "redis": True,
        "redisStream": True,
        "rabbitmq": False,
        "prometheus": False,
    }


@pytest.mark.parametrize(
    ("words", "spoken"),
    [(["a"], "a"), (["a", "b"], "a or b"), (["a", "b", "c", "d"], "a, b, c or d")],
)
def test_spoken_list(words: list[str], spoken: str) -> None:
    assert spoken_list(words) == spoken
