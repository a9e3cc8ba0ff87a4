"""`python -m bench.peers`: the pure parts (percentiles, rates, best rounds, ratios, the table)."""

from __future__ import annotations

import pytest

from bench import peers
from bench.peers import Run


def run(name: str, concurrency: int, rate: float, p99: float | None = 5.0, round_number: int = 1) -> Run:
    return Run(
        name,
        concurrency,
        rate,
        startup_seconds=0.3,
        rss_mib=40.0,
        p50_ms=1.0,
        p99_ms=p99,
        round=round_number,
        cpu_us_per_job=1e6 / rate,
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert peers.percentile(values, 0.5) == 50.0
    assert peers.percentile(values, 0.99) == 99.0
    assert peers.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        peers.percentile([], 0.5)


def test_rate_counts_the_intervals_between_starts() -> None:
    assert peers.jobs_per_second(10.0, 12.0, 1001) == pytest.approx(500.0)


def test_the_best_round_counts_and_ratios_are_to_the_named_floor() -> None:
    runs = [
        run("bare-brpop", 16, 4000.0),
        run("bare-brpop", 16, 5000.0),
        run("workerfleet-list", 16, 3000.0),
        run("workerfleet-list", 16, 4000.0),
        run("workerfleet-list", 64, 4500.0),  # no floor ran at 64: no ratio
        run("celery", 16, 1000.0),
        run("saq", 16, 2000.0),
    ]
    best = peers.best_runs(runs)
    assert best[("bare-brpop", 16)].jobs_per_second == 5000.0
    found = peers.ratios(best, peers.CONTENDERS)
    assert found == {("workerfleet-list", 16): pytest.approx(0.8)}
    fastest = peers.fastest_peer(best, peers.CONTENDERS, 16)
    assert fastest is not None
    assert fastest.contender == "saq"
    assert peers.fastest_peer(best, peers.CONTENDERS, 1) is None


def test_table_has_a_row_per_run_with_its_guarantees() -> None:
    best = peers.best_runs([run("bare-brpop", 1, 5000.0), run("workerfleet-list", 1, 2500.0, p99=None)])
    lines = peers.table(best, peers.CONTENDERS, [1, 16])
    assert len(lines) == 4
    assert lines[2].startswith("| bare BRPOP loop | 1 | 5,000 | - |")
    assert "| workerfleet, Redis list | 1 | 2,500 | 0.50 | 400 | 1.0 | - |" in lines[3]
    assert lines[3].endswith("| yes | yes: heartbeat recovery |")


def test_every_contender_runs_in_a_known_environment_and_workerfleet_rows_name_a_floor() -> None:
    names = {contender.name for contender in peers.CONTENDERS}
    assert {contender.venv for contender in peers.CONTENDERS} <= {".venv", ".venv-bench", ".venv-bench-arq"}
    for contender in peers.CONTENDERS:
        if contender.name.startswith("workerfleet-"):
            assert contender.floor in names


def test_ratios_are_taken_within_each_round_and_their_range_is_shown() -> None:
    runs = [
        run("bare-brpop", 16, 10000.0, round_number=1),
        run("workerfleet-list", 16, 3000.0, round_number=1),
        run("bare-brpop", 16, 5000.0, round_number=2),  # a busy moment hit the floor's second round
        run("workerfleet-list", 16, 2000.0, round_number=2),
    ]
    spread = peers.ratio_spread(runs, peers.CONTENDERS)
    assert list(spread) == [("workerfleet-list", 16)]
    assert spread[("workerfleet-list", 16)] == pytest.approx((0.3, 0.4))
    lines = peers.table(peers.best_runs(runs), peers.CONTENDERS, [16], spread)
    assert "| workerfleet, Redis list | 16 | 3,000 | 0.30 (0.30-0.40) |" in lines[3]


def test_each_workerfleet_backend_is_compared_with_the_fastest_peer() -> None:
    best = peers.best_runs(
        [
            run("celery", 16, 1000.0),
            run("dramatiq-rabbitmq", 16, 4000.0),
            run("workerfleet-list", 16, 6000.0),
            run("workerfleet-stream", 16, 2000.0),
        ]
    )
    assert peers.against_peers(best, peers.CONTENDERS, [1, 16]) == [
        "concurrency 16: fastest peer Dramatiq 2.2 (RabbitMQ) (4,000 jobs/s);"
        " workerfleet Redis list 1.50x, Redis stream 0.50x"
    ]
