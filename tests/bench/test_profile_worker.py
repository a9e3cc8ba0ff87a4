"""`python -m bench.profile_worker`: profiled functions sorted into the parts the README names."""

from __future__ import annotations

from bench.profile_worker import part_of


def test_functions_fall_into_their_part_by_file_and_name() -> None:
    assert part_of("~:0(<method 'poll' of 'select.epoll' objects>)") == "waiting on the server (epoll)"
    assert part_of("/usr/lib/python3.11/asyncio/base_events.py:1845(_run_once)") == (
        "asyncio event loop, tasks, futures"
    )
    assert part_of(".venv/lib/site-packages/redis/asyncio/connection.py:1730(_pack_command)") == (
        "Redis client (redis-py)"
    )
    assert part_of("operator/workerfleet/worker/jsonlog.py:19(format)") == "per-job log line (logging, JSON)"
    assert part_of("operator/workerfleet/worker/envelope.py:168(decode)") == "envelope decode (pydantic)"
    assert part_of("operator/workerfleet/worker/runtime.py:368(_process)") == (
        "workerfleet runtime and backend"
    )
    assert (
        part_of("~:0(<built-in method builtins.isinstance>)") == "other (builtins called from all of these)"
    )
