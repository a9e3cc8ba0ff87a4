"""`make demo REAL_NODE=1`: the demo's pool placed on the real node with the image built here."""

from __future__ import annotations

from devenv import demo, images, node


def test_on_the_real_node_the_pool_runs_the_built_image_there_and_elsewhere_it_is_unchanged() -> None:
    simulated = demo.worker_pool("127.0.0.1:6379", "http://127.0.0.1:9090", demo.Timing())
    real = demo.worker_pool(
        "10.250.0.1:6379", "http://10.250.0.1:9090", demo.REAL_NODE_TIMING, real_node=True
    )

    [container] = real["spec"]["template"]["spec"]["containers"]
    assert container["image"] == images.image_reference("demo-worker").removeprefix("docker.io/")
    assert container["imagePullPolicy"] == "Never"
    assert real["spec"]["template"]["spec"]["nodeSelector"] == {node.NODE_LABEL: "true"}
    assert real["spec"]["template"]["spec"]["tolerations"][0]["key"] == node.TAINT_KEY
    assert real["spec"]["queue"]["redis"]["address"] == "10.250.0.1:6379"
    assert "nodeSelector" not in simulated["spec"]["template"]["spec"]
    [simulated_container] = simulated["spec"]["template"]["spec"]["containers"]
    assert simulated_container["image"] == f"workerfleet/demo-worker:{demo.STABLE_VERSION}"


def test_the_real_node_demo_leaves_out_only_the_steps_that_need_the_host_to_reach_the_workers() -> None:
    assert [step for step in demo.SCENARIO if step not in demo.REAL_NODE_SCENARIO] == [
        demo.review_and_replay,
        demo.breaker_trips_and_closes,
    ]
    assert demo.REAL_NODE_TIMING.max_replicas < demo.Timing().max_replicas
