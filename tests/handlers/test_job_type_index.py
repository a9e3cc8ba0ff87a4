from __future__ import annotations

from workerfleet.handlers.job_type_index import JobTypeIndex


def test_a_job_type_finds_the_pools_of_its_namespace_that_serve_it() -> None:
    index = JobTypeIndex()
    index.update("team-a", "thumbs", ["resize", "crop"])
    index.update("team-a", "videos", ["resize"])
    index.update("team-b", "thumbs", ["resize"])
    assert index.pools_serving("team-a", "resize") == ["thumbs", "videos"]
    assert index.pools_serving("team-a", "crop") == ["thumbs"]
    assert index.pools_serving("team-b", "resize") == ["thumbs"]
    assert index.pools_serving("team-b", "crop") == []


def test_a_pool_that_drops_a_job_type_no_longer_serves_it() -> None:
    index = JobTypeIndex()
    index.update("team-a", "thumbs", ["resize", "crop"])
    index.update("team-a", "thumbs", ["crop"])
    assert index.pools_serving("team-a", "resize") == []
    assert index.pools_serving("team-a", "crop") == ["thumbs"]


def test_a_deleted_pool_serves_nothing() -> None:
    index = JobTypeIndex()
    index.update("team-a", "thumbs", ["resize"])
    index.forget("team-a", "thumbs")
    index.forget("team-a", "never-seen")
    assert index.pools_serving("team-a", "resize") == []


def test_thousands_of_pools_are_indexed_without_waiting_for_each_other() -> None:
    index = JobTypeIndex()
    for number in range(3000):
        index.update(f"ns-{number % 10}", f"pool-{number}", [f"type-{number % 7}"])
    assert len(index.pools_serving("ns-3", "type-3")) == len(
        [n for n in range(3000) if n % 10 == 3 and n % 7 == 3]
    )
