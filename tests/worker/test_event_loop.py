"""The worker's event loop: uvloop where the speedups extra is installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
import importlib.util

from workerfleet.worker import event_loop


def test_the_loop_is_uvloop_exactly_when_it_is_installed_and_runs_the_worker_to_its_result() -> None:
    installed = importlib.util.find_spec("uvloop") is not None
    assert event_loop.loop_name() == ("uvloop" if installed else "asyncio")

    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = event_loop.run(main())
    assert module.startswith("uvloop") == installed
