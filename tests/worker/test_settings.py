from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workerfleet.api.jobtype import JobTypeSpec
from workerfleet.worker.backend_factory import keys_per_process, open_backend
from workerfleet.worker.rabbitmq import RabbitMQBackend
from workerfleet.worker.redis_list import RedisListBackend
from workerfleet.worker.redis_stream import RedisStreamBackend
from workerfleet.worker.settings import (
    DEFAULT_POLICIES_PATH,
    ConfigurationError,
    effective_drain_seconds,
    load_policies,
    parse_policies,
    settings_from_env,
)

REDIS_QUEUE = {"redis": {"address": "redis.queues:6379", "list": "jobs:resize"}}


def env(**overrides: Any) -> dict[str, str]:
    base = {
        "WORKERFLEET_POOL": "thumbs",
        "WORKERFLEET_REVISION": "5d8c7",
        "WORKERFLEET_QUEUE": json.dumps(REDIS_QUEUE),
    }
    return {**base, **overrides}


def test_defaults_suit_a_pod() -> None:
    settings = settings_from_env(env())
    assert (settings.pool, settings.revision) == ("thumbs", "5d8c7")
    assert settings.queue.redis is not None
    assert settings.queue.redis.list_key == "jobs:resize"
    assert settings.policies_path == DEFAULT_POLICIES_PATH
    assert (settings.concurrency, settings.metrics_port, settings.drain_seconds) == (1, 8000, None)
    assert settings.worker_id
    assert (settings.limits.max_bytes, settings.limits.max_depth) == (1_048_576, 64)


def test_tuning_comes_from_the_environment() -> None:
    settings = settings_from_env(
        env(
            WORKERFLEET_POLICIES="/tmp/p.json",
            WORKERFLEET_CONCURRENCY="8",
            WORKERFLEET_DRAIN_SECONDS="25",
            WORKERFLEET_HANDLERS="app.handlers, app.more ,",
            WORKERFLEET_WORKER_ID="w1",
            WORKERFLEET_LOG_LEVEL="debug",
            WORKERFLEET_MAX_MESSAGE_BYTES="65536",
            WORKERFLEET_MAX_NESTING_DEPTH="16",
        )
    )
    assert (settings.limits.max_bytes, settings.limits.max_depth) == (65_536, 16)
    assert settings.policies_path == Path("/tmp/p.json")
    assert (settings.concurrency, settings.drain_seconds, settings.worker_id) == (8, 25.0, "w1")
    assert settings.handler_modules == ("app.handlers", "app.more")
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"WORKERFLEET_POOL": ""}, "WORKERFLEET_POOL"),
        ({"WORKERFLEET_QUEUE": "{"}, "WORKERFLEET_QUEUE"),
        ({"WORKERFLEET_QUEUE": json.dumps({"redis": {"address": "nope", "list": "x"}})}, "WORKERFLEET_QUEUE"),
        (
            {
                "WORKERFLEET_QUEUE": json.dumps(
                    {**REDIS_QUEUE, "rabbitmq": {"address": "r:5672", "queue": "q"}}
                )
            },
            "exactly one",
        ),
        ({"WORKERFLEET_CONCURRENCY": "0"}, "WORKERFLEET_CONCURRENCY"),
        ({"WORKERFLEET_CONCURRENCY": "2.5"}, "whole number"),
        ({"WORKERFLEET_METRICS_PORT": "http"}, "WORKERFLEET_METRICS_PORT"),
        ({"WORKERFLEET_LOG_LEVEL": "loud"}, "WORKERFLEET_LOG_LEVEL"),
        ({"WORKERFLEET_STALL_SECONDS": "0.5"}, "WORKERFLEET_STALL_SECONDS must lie between 1 and 86400"),
        ({"WORKERFLEET_MAX_MESSAGE_BYTES": "1MiB"}, "WORKERFLEET_MAX_MESSAGE_BYTES must be a number"),
        (
            {"WORKERFLEET_MAX_MESSAGE_BYTES": "100"},
            "WORKERFLEET_MAX_MESSAGE_BYTES must lie between 1024 and 536870912",
        ),
        ({"WORKERFLEET_MAX_NESTING_DEPTH": "1"}, "WORKERFLEET_MAX_NESTING_DEPTH must lie between 2 and 128"),
        (
            {"WORKERFLEET_MAX_NESTING_DEPTH": "500"},
            "WORKERFLEET_MAX_NESTING_DEPTH must lie between 2 and 128",
        ),
    ],
)
def test_bad_settings_are_named(overrides: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        settings_from_env(env(**overrides))


def test_the_password_never_shows_in_the_settings_repr() -> None:
    settings = settings_from_env(env(WORKERFLEET_QUEUE_USERNAME="app", WORKERFLEET_QUEUE_PASSWORD="hunter2"))
    assert settings.credentials.password == "hunter2"
    assert "hunter2" not in repr(settings)


POLICIES = {
    "jobTypes": {
        "resize-image": {
            "lane": "fast",
            "timeoutSeconds": 60,
            "deadlineSeconds": 600,
            "retry": {"maxAttempts": 5, "backoff": {"initialSeconds": 1, "maxSeconds": 300, "multiplier": 2}},
            "deadLetter": {"queue": "resize-image.dlq"},
            "idempotency": {"keyField": "id"},
        },
        "transcode": {"lane": "heavy", "timeoutSeconds": 3600},
    }
}


def test_policies_parse_with_the_jobtype_model(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(POLICIES))
    policies = load_policies(path)
    assert policies["resize-image"].retry.max_attempts == 5
    assert policies["resize-image"].dead_letter is not None
    assert policies["resize-image"].dead_letter.queue == "resize-image.dlq"
    assert policies["transcode"].retry.max_attempts == 3  # the API's default
    assert effective_drain_seconds(settings_from_env(env()), policies) == 3600


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "not JSON"),
        ("[]", "jobTypes"),
        ('{"jobTypes": []}', "jobTypes"),
        ('{"jobTypes": {"x": {"lane": "fast", "timeoutSeconds": 600}}}', "'x'"),
        ('{"jobTypes": {"x": {"lane": "fast", "timeoutSeconds": 5, "colour": "red"}}}', "'x'"),
    ],
)
def test_bad_policy_files_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        parse_policies(text)


def test_a_missing_policy_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the policy file"):
        load_policies(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("queue", "backend_type"),
    [
        (REDIS_QUEUE, RedisListBackend),
        ({"redisStream": {"address": "r:6379", "stream": "s", "consumerGroup": "g"}}, RedisStreamBackend),
        ({"rabbitmq": {"address": "r:5672", "queue": "q"}}, RabbitMQBackend),
    ],
)
def test_the_backend_follows_the_queue_kind(queue: dict[str, Any], backend_type: type) -> None:
    settings = settings_from_env(env(WORKERFLEET_QUEUE=json.dumps(queue)))
    assert isinstance(open_backend(settings, {}), backend_type)


@pytest.mark.parametrize(
    ("queue", "extra_env", "complaint"),
    [
        (
            {"prometheus": {"address": "http://prom:9090", "query": "sum(x)"}},
            {},
            "their own client",
        ),
        (
            {"redis": {**REDIS_QUEUE["redis"], "tls": {"caSecretRef": {"name": "ca", "key": "ca.crt"}}}},
            {},
            "WORKERFLEET_QUEUE_CA",
        ),
        (
            {"redis": {**REDIS_QUEUE["redis"], "auth": {"passwordSecretRef": {"name": "s", "key": "p"}}}},
            {},
            "WORKERFLEET_QUEUE_PASSWORD",
        ),
        (
            {
                "rabbitmq": {
                    "address": "r:5672",
                    "queue": "q",
                    "auth": {
                        "usernameSecretRef": {"name": "s", "key": "u"},
                        "passwordSecretRef": {"name": "s", "key": "p"},
                    },
                }
            },
            {"WORKERFLEET_QUEUE_PASSWORD": "pw"},
            "WORKERFLEET_QUEUE_USERNAME",
        ),
        (
            {
                "rabbitmq": {
                    "address": "r:5672",
                    "queue": "q",
                    "idempotencyStore": {
                        "address": "k:6379",
                        "auth": {"passwordSecretRef": {"name": "s", "key": "p"}},
                    },
                }
            },
            {"WORKERFLEET_QUEUE_PASSWORD": "pw"},
            "idempotency store has auth set, but WORKERFLEET_STORE_PASSWORD",
        ),
        (
            {
                "rabbitmq": {
                    "address": "r:5672",
                    "queue": "q",
                    "idempotencyStore": {
                        "address": "k:6379",
                        "tls": {"caSecretRef": {"name": "c", "key": "k"}},
                    },
                }
            },
            {"WORKERFLEET_QUEUE_CA": "pem"},
            "WORKERFLEET_STORE_CA",
        ),
    ],
)
def test_unusable_queues_are_refused_at_start(
    queue: dict[str, Any], extra_env: dict[str, str], complaint: str
) -> None:
    settings = settings_from_env(env(WORKERFLEET_QUEUE=json.dumps(queue), **extra_env))
    with pytest.raises(ConfigurationError, match=complaint):
        open_backend(settings, {})


@pytest.mark.parametrize(
    ("rabbitmq", "warned"),
    [
        ({"address": "r:5672", "queue": "q"}, ["keyed"]),
        ({"address": "r:5672", "queue": "q", "idempotencyStore": {"address": "k:6379"}}, []),
    ],
)
def test_keyed_job_types_on_rabbitmq_without_a_store_are_named(
    rabbitmq: dict[str, Any], warned: list[str]
) -> None:
    settings = settings_from_env(env(WORKERFLEET_QUEUE=json.dumps({"rabbitmq": rabbitmq})))
    policies = {
        "keyed": JobTypeSpec.model_validate(
            {"lane": "fast", "timeoutSeconds": 10, "idempotency": {"keyField": "id"}}
        ),
        "plain": JobTypeSpec.model_validate({"lane": "fast", "timeoutSeconds": 10}),
    }
    assert keys_per_process(settings, policies) == warned
    redis_settings = settings_from_env(env(WORKERFLEET_QUEUE=json.dumps(REDIS_QUEUE)))
    assert keys_per_process(redis_settings, policies) == []
