"""The Helm chart: lint, render every toggle, validate each manifest offline, scan with a policy checker."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from devenv.toolchain import KUBERNETES_VERSION, binaries
from workerfleet.api.crdgen import render_all
from workerfleet.api.worker_contract import METRICS_PORT_NAME
from workerfleet.planners.children import POOL_LABEL

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "workerfleet"
VALUE_SETS = {
    "defaults": [],
    **{path.name.removesuffix("-values.yaml"): ["-f", str(path)] for path in sorted(CHART.glob("ci/*.yaml"))},
}
# Kinds of the Prometheus operator: no schema of theirs ships offline, so their shape is checked here.
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# kopf's peering kinds: checked against the CRDs the chart ships.
PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries()["helm"].path), *args], capture_output=True, text=True, check=False, timeout=60
    )


def _render(values: list[str]) -> list[dict[str, Any]]:
    result = _helm("template", "wf", str(CHART), "--namespace", "workerfleet-system", *values)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_passes(value_set: str) -> None:
    result = _helm("lint", "--strict", str(CHART), *VALUE_SETS[value_set])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_manifest_matches_the_kubernetes_schema(value_set: str) -> None:
    documents = _render(VALUE_SETS[value_set])
    version = KUBERNETES_VERSION.removeprefix("v")
    for document in documents:
        if document["kind"] in MONITORING_KINDS:
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            assert document["spec"], document
            continue
        if document["kind"] in PEERING_KINDS:
            _check_against_shipped_crd(document)
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_every_toggle_on_renders_every_optional_part() -> None:
    kinds = {document["kind"] for document in _render(VALUE_SETS["every-toggle-on"])}
    assert kinds >= {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "RoleBinding",
        "KopfPeering",
    }


def test_keda_mode_registers_no_metrics_api() -> None:
    documents = _render(VALUE_SETS["keda-mode"])
    kinds = [document["kind"] for document in documents]
    assert "APIService" not in kinds
    assert not [d for d in documents if d["metadata"]["name"].endswith("-metrics-api-registration")]
    [cluster_role] = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-cluster")
    ]
    assert "apiservices" not in {resource for rule in cluster_role["rules"] for resource in rule["resources"]}
    bindings = [d["roleRef"]["name"] for d in documents if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    assert "system:auth-delegator" not in bindings
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    assert not [
        arg
        for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if arg.startswith("--metrics-api")
    ]


def test_the_pod_monitor_is_off_by_default() -> None:
    assert "PodMonitor" not in {document["kind"] for document in _render(VALUE_SETS["defaults"])}


@pytest.mark.parametrize(
    ("values", "namespaces"),
    [
        (["--set", "metrics.podMonitor.enabled=true"], {"any": True}),
        (
            ["--set", "metrics.podMonitor.enabled=true", "--set", "watchNamespaces={media,reports}"],
            {"matchNames": ["media", "reports"]},
        ),
    ],
)
def test_one_pod_monitor_scrapes_every_worker_pod_on_its_metrics_port(
    values: list[str], namespaces: dict[str, Any]
) -> None:
    [monitor] = [d for d in _render(values) if d["kind"] == "PodMonitor"]
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == namespaces
    assert spec["selector"] == {"matchExpressions": [{"key": POOL_LABEL, "operator": "Exists"}]}
    [endpoint] = spec["podMetricsEndpoints"]
    # the port name and path the operator gives every worker pod running the runtime
    assert (endpoint["port"], endpoint["path"]) == (METRICS_PORT_NAME, "/metrics")


def test_prometheus_rule_has_the_five_alerts() -> None:
    [rule] = [d for d in _render(VALUE_SETS["every-toggle-on"]) if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "WorkerfleetQueueBacklog",
        "WorkerfleetJobsNearDeadline",
        "WorkerfleetPoolDegraded",
        "WorkerfleetFallbackActive",
        "WorkerfleetReviewBacklog",
    }
    assert alerts["WorkerfleetQueueBacklog"]["for"] == "10m"
    assert alerts["WorkerfleetReviewBacklog"]["expr"] == "workerfleet_review_oldest_age_seconds > 14400"
    assert alerts["WorkerfleetPoolDegraded"]["for"] == "5m"


def test_the_service_monitor_keeps_the_pools_namespace_label() -> None:
    # The operator's series carry the pool's namespace: the target's (the operator's) must not replace it
    [monitor] = [d for d in _render(VALUE_SETS["every-toggle-on"]) if d["kind"] == "ServiceMonitor"]
    assert [endpoint.get("honorLabels") for endpoint in monitor["spec"]["endpoints"]] == [True]


def test_grafana_dashboard_is_valid_json() -> None:
    [dashboard] = [
        d
        for d in _render(VALUE_SETS["every-toggle-on"])
        if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    panels = json.loads(dashboard["data"]["workerfleet.json"])["panels"]
    assert any("workerfleet_queue_depth" in target["expr"] for panel in panels for target in panel["targets"])
    expressions = {target["expr"] for panel in panels for target in panel["targets"]}
    assert {"workerfleet_review_depth", "workerfleet_dead_letter_depth"} <= expressions


@pytest.mark.parametrize(
    "bad_value",
    [
        "replicaCount=11",
        "replicaCount=-1",
        "peering.lifetimeSeconds=1",
        "peering.name=Not_A_Name",
        "spreadReplicas=always",
        "podDisruptionBudget.minAvailable=0",
        "logLevel=trace",
        "metricsApi.port=80",
        "unknownKey=1",
        "image.digest=latest",
        "apiRateLimit.qps=0",
        "apiRateLimit.burst=0",
        "resyncPeriodSeconds=1",
    ],
)
def test_bad_values_fail_at_install_time(bad_value: str) -> None:
    result = _helm("template", "wf", str(CHART), "--set", bad_value)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_the_operator_may_not_escalate_or_bind_by_default() -> None:
    rules = [
        rule
        for document in _render(VALUE_SETS["defaults"])
        if document["kind"] == "ClusterRole"
        for rule in document["rules"]
    ]
    verbs = {verb for rule in rules for verb in rule["verbs"]}
    resources = {resource for rule in rules for resource in rule["resources"]}
    assert not verbs & {"escalate", "bind", "impersonate", "*"}
    assert "*" not in resources
    assert "pods/exec" not in resources


def _bound_rules(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of the roles the chart itself binds to the operator."""
    bound = {
        (document["roleRef"]["kind"], document["roleRef"]["name"])
        for document in documents
        if document["kind"] in ("ClusterRoleBinding", "RoleBinding")
    }
    return [
        rule
        for document in documents
        if (document["kind"], document["metadata"]["name"]) in bound
        for rule in document["rules"]
    ]


def test_the_operator_reads_no_secret_unless_granted() -> None:
    # By default: no Secret anywhere; a namespace admin binds the queue-credentials ClusterRole
    default = _render(VALUE_SETS["defaults"])
    assert not [rule for rule in _bound_rules(default) if "secrets" in rule["resources"]]
    reader = _one(
        [d for d in default if d["metadata"]["name"] == "wf-workerfleet-queue-credentials"], "ClusterRole"
    )
    assert reader["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    # Named Secrets: those names only, never list or watch
    named = _render(["--set", "rbac.queueCredentialSecrets={redis-auth}"])
    [secrets] = [rule for rule in _bound_rules(named) if "secrets" in rule["resources"]]
    assert secrets == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get"],
        "resourceNames": ["redis-auth"],
    }


def _policy(documents: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ValidatingAdmissionPolicy of that name and its binding."""
    [policy] = [
        d for d in documents if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == name
    ]
    [binding] = [
        d
        for d in documents
        if d["kind"] == "ValidatingAdmissionPolicyBinding" and d["spec"]["policyName"] == name
    ]
    return policy, binding


def test_a_pool_author_must_hold_what_the_pool_gets_by_default() -> None:
    documents = _render(VALUE_SETS["defaults"])
    policy, binding = _policy(documents, "wf-workerfleet-pool-author")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["validationActions"] == ["Deny"]
    checks = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert checks.count("check('get')") == 16 + 4  # a slot per Secret and per claim named
    jobtypes, jobtypes_binding = _policy(documents, "wf-workerfleet-jobtype-use")
    assert jobtypes_binding["spec"]["validationActions"] == ["Deny"]
    assert " ".join(v["expression"] for v in jobtypes["spec"]["validations"]).count("check('use')") == 24
    # The operator's own writes are held by the other policy instead
    [condition] = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:workerfleet-system:wf-workerfleet" in condition["expression"]
    user = _one(
        [d for d in documents if d["metadata"]["name"] == "wf-workerfleet-jobtype-user"], "ClusterRole"
    )
    assert user["rules"] == [{"apiGroups": ["workerfleet.dev"], "resources": ["jobtypes"], "verbs": ["use"]}]
    # The operator requires both policies before it serves a pool, and may read them by name only
    args = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--admission-policy=wf-workerfleet-pool-author" in args
    assert "--admission-policy=wf-workerfleet-jobtype-use" in args
    assert "--admission-policy=wf-workerfleet-operator-bounds" in args
    assert "--admission-policy=wf-workerfleet-deletion-cost-only" in args
    off = _render(["--set", "admission.enabled=false"])
    assert not [
        d
        for d in off
        if d["kind"].startswith("ValidatingAdmissionPolicy")
        and d["metadata"]["name"].endswith(
            ("-pool-author", "-jobtype-use", "-operator-bounds", "-deletion-cost-only")
        )
    ]


def test_the_allowlists_reach_the_pool_author_policy() -> None:
    documents = _render(
        [
            "--set", "admission.csiDrivers={secrets-store.csi.k8s.io}",
            "--set", "admission.priorityClassNames={batch-low}",
            "--set", "admission.tolerationKeys={dedicated}",
            "--set", "admission.imageRegistries={registry.example.com/team-a}",
        ]
    )  # fmt: skip
    policy, _ = _policy(documents, "wf-workerfleet-pool-author")
    checks = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert 'v.csi.driver in ["secrets-store.csi.k8s.io"]' in checks
    assert 'priorityClassName in ["batch-low"]' in checks
    assert 't.key in ["dedicated"]' in checks
    assert "[\"registry.example.com/team-a\"].exists(r, c.image.startsWith(r + '/'))" in checks
    # Without a registry list, any image
    defaults, _ = _policy(_render([]), "wf-workerfleet-pool-author")
    assert "c.image" not in " ".join(v["expression"] for v in defaults["spec"]["validations"])


def test_the_operator_bounds_follow_the_served_namespaces_and_the_ceiling() -> None:
    policy, binding = _policy(_render([]), "wf-workerfleet-operator-bounds")
    assert binding["spec"]["validationActions"] == ["Deny"]
    expressions = [v["expression"] for v in policy["spec"]["validations"]]
    assert '["kube-system","kube-public","kube-node-lease","workerfleet-system"]' in expressions[0]
    assert '"configmaps"' in policy["spec"]["variables"][-1]["expression"]  # the delegable set
    # A release namespace that is watched is served: its children may be written there
    watched, _ = _policy(
        _render(["--set", "watchNamespaces={workerfleet-system}"]), "wf-workerfleet-operator-bounds"
    )
    assert '"workerfleet-system"' not in watched["spec"]["validations"][0]["expression"]


def test_the_operator_bounds_cover_every_field_of_a_pool_but_replicas() -> None:
    """The operator may change spec.replicas of a pool only: the policy names every other field."""
    policy, _ = _policy(_render([]), "wf-workerfleet-operator-bounds")
    [pool_rule] = [
        v["expression"] for v in policy["spec"]["validations"] if "spec.replicas" in v.get("message", "")
    ]
    crd = yaml.safe_load(render_all()["workerfleet.dev_workerpools.yaml"])
    fields = set(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    for field in fields - {"replicas"}:
        assert f"object.spec.{field} ==" in pool_rule or f"object.spec.?{field} ==" in pool_rule, field


def test_the_operator_is_given_the_ceiling_and_the_allowlists() -> None:
    documents = _render(
        [
            "--set",
            "allowedAddresses.queues={*.queues.svc:6379}",
            "--set",
            "allowedAddresses.prometheus={https://prom:9090}",
        ]
    )
    args = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    [delegable] = [arg for arg in args if arg.startswith("--delegable-permissions=")]
    assert json.loads(delegable.partition("=")[2]) == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    ]
    assert "--queue-credentials-role=wf-workerfleet-queue-credentials" in args
    assert "--allow-queue-address=*.queues.svc:6379" in args
    assert "--allow-prometheus=https://prom:9090" in args


def test_policy_checker_finds_no_failed_kubernetes_check(tmp_path: Path) -> None:
    for value_set, values in VALUE_SETS.items():
        (tmp_path / f"{value_set}.yaml").write_text(yaml.safe_dump_all(_render(values)))
    checkov = Path(sys.executable).parent / "checkov"
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--quiet",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 100, summary
    assert failed == [], failed
    assert summary["parsing_errors"] == 0


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crds = {path.name: path.read_text() for path in (CHART / "crds").glob("*.yaml")}
    assert chart_crds == render_all(), "charts/workerfleet/crds is stale: run `make crds`"


def test_images_pass_the_policy_checker() -> None:
    checkov = Path(sys.executable).parent / "checkov"
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(REPOSITORY / "images"),
            "--framework",
            "dockerfile",
            "--quiet",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 20, report["summary"]
    users = [
        line
        for path in (REPOSITORY / "images").glob("*/Dockerfile")
        for line in path.read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users == ["USER 65532:65532"] * 2


def _check_against_shipped_crd(document: dict[str, Any]) -> None:
    crds = [yaml.safe_load(path.read_text()) for path in (CHART / "crds").glob("kopf.dev_*.yaml")]
    [crd] = [crd for crd in crds if crd["spec"]["names"]["kind"] == document["kind"]]
    group, version = document["apiVersion"].split("/")
    assert (group, version) == (crd["spec"]["group"], crd["spec"]["versions"][0]["name"])
    assert ("namespace" in document["metadata"]) is (crd["spec"]["scope"] == "Namespaced")
    assert set(document) == {"apiVersion", "kind", "metadata"}, "kopf writes the status; the chart none"


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [document] = [d for d in documents if d["kind"] == kind]
    return document


@pytest.mark.parametrize("replicas", [1, 3])
def test_replicas_peer_and_roll_over_without_a_gap(replicas: int) -> None:
    documents = _render(["--set", f"replicaCount={replicas}"])
    deployment = _one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "--standalone" not in container["args"]
    assert {"--peering=workerfleet", "--peering-lifetime=30", "--label-active-pod"} <= set(container["args"])
    env = {item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"] for item in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    budget = _one(documents, "PodDisruptionBudget")["spec"]
    if replicas == 1:
        assert budget["maxUnavailable"] == 1
        assert "minAvailable" not in budget
        assert "affinity" not in pod
    else:
        assert budget["minAvailable"] == 1
        assert "maxUnavailable" not in budget
        [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert (
            term["podAffinityTerm"]["labelSelector"]["matchLabels"]
            == deployment["spec"]["selector"]["matchLabels"]
        )


def test_the_operator_request_rate_is_limited_and_tunable() -> None:
    def args(*values: str) -> set[str]:
        return set(
            _one(_render(list(values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        )

    assert {"--api-qps=100", "--api-burst=200"} <= args()
    assert {"--api-qps=25", "--api-burst=50"} <= args(
        "--set", "apiRateLimit.qps=25", "--set", "apiRateLimit.burst=50"
    )


def test_the_resync_period_is_tunable() -> None:
    def args(*values: str) -> set[str]:
        return set(
            _one(_render(list(values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        )

    assert "--resync-period=300" in args()
    assert "--resync-period=60" in args("--set", "resyncPeriodSeconds=60")


def test_spreading_can_be_required_given_or_off() -> None:
    def affinity(*values: str) -> Any:
        return _one(_render(list(values)), "Deployment")["spec"]["template"]["spec"].get("affinity")

    required = affinity("--set", "spreadReplicas=required")
    assert required["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity("--set", "spreadReplicas=none") is None
    given = affinity("--set", "affinity.nodeAffinity.x=1")
    assert given == {"nodeAffinity": {"x": 1}}
    zones = _one(
        _render(
            [
                "--set-json",
                'topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"zone",'
                '"whenUnsatisfiable":"ScheduleAnyway"}]',
            ]
        ),
        "Deployment",
    )["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert zones[0]["topologyKey"] == "zone"


def _peering_rules(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        rule
        for document in documents
        if document["kind"] == "ClusterRole"
        for rule in document["rules"]
        if "kopf.dev" in rule["apiGroups"]
    ]


def test_cluster_wide_operator_peers_in_one_cluster_peering() -> None:
    documents = _render(["--set", "peering.name=fleet-a", "--set", "peering.lifetimeSeconds=12"])
    [peering] = [d for d in documents if d["kind"] in PEERING_KINDS]
    assert peering["kind"] == "ClusterKopfPeering"
    assert peering["metadata"]["name"] == "fleet-a"
    args = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--peering=fleet-a", "--peering-lifetime=12"} <= set(args)
    # Exactly what kopf (list, watch; get and patch of its own object) and the activity check use
    assert _peering_rules(documents) == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "resourceNames": ["fleet-a"],
            "verbs": ["get", "patch"],
        },
    ]


def test_namespaced_operator_peers_in_each_watched_namespace() -> None:
    documents = _render(["--set", "watchNamespaces={media,reports}"])
    peerings = [d for d in documents if d["kind"] in PEERING_KINDS]
    assert [(p["kind"], p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("KopfPeering", "media", "workerfleet"),
        ("KopfPeering", "reports", "workerfleet"),
    ]
    assert _peering_rules(documents) == [
        {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "resourceNames": ["workerfleet"],
            "verbs": ["get", "patch"],
        },
    ]
    # The namespaced rules reach the peering objects through the per-namespace RoleBindings
    bound = {d["metadata"]["namespace"] for d in documents if d["kind"] == "RoleBinding"}
    assert {"media", "reports"} <= bound


def test_metrics_api_routes_to_the_active_replica_only() -> None:
    documents = _render([])
    service = next(d for d in documents if d["kind"] == "Service" and "metrics-api" in d["metadata"]["name"])
    assert service["spec"]["selector"]["workerfleet.dev/active"] == "true"
    label_role = next(
        d for d in documents if d["kind"] == "Role" and d["metadata"]["name"].endswith("active-label")
    )
    assert label_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    # The active replica takes the label off the other replicas' pods: exactly the Deployment's pods
    deployment = _one(documents, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    [selector] = [arg.split("=", 1)[1] for arg in args if arg.startswith("--active-pod-selector=")]
    match_labels = deployment["spec"]["selector"]["matchLabels"]
    assert selector == "app.kubernetes.io/instance=wf,app.kubernetes.io/name=workerfleet"
    assert dict(pair.split("=") for pair in selector.split(",")) == match_labels
    assert {**match_labels, "workerfleet.dev/active": "true"} == service["spec"]["selector"]
    keda = _render(VALUE_SETS["keda-mode"])
    assert not [d for d in keda if d["kind"] == "Role"]
    args = _one(keda, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--label-active-pod" not in args
    assert not [arg for arg in args if arg.startswith("--active-pod-selector")]


def _certificate(pem_base64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(pem_base64))


def _ca_bundle(documents: list[dict[str, Any]]) -> str:
    """The CA the operator registers the APIService with (base64 PEM, as in caBundle)."""
    [config_map] = [
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-metrics-api-ca")
    ]
    return base64.b64encode(config_map["data"]["ca.crt"].encode()).decode()


def test_the_metrics_api_verifies_tls_by_default_with_a_generated_ca() -> None:
    documents = _render([])
    # Given defaults, the operator registers the APIService with a CA the chart made
    ca = _certificate(_ca_bundle(documents))
    [secret] = [
        d
        for d in documents
        if d["kind"] == "Secret" and d["metadata"]["name"] == "wf-workerfleet-metrics-api-tls"
    ]
    assert secret["type"] == "kubernetes.io/tls"
    serving = _certificate(secret["data"]["tls.crt"])
    assert serving.issuer == ca.subject
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "wf-workerfleet-metrics-api.workerfleet-system.svc" in names.get_values_for_type(x509.DNSName)
    # and the operator serves that certificate, from the mounted Secret
    deployment = _one(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--metrics-api-cert=/etc/workerfleet/metrics-api/tls.crt" in args
    assert "--metrics-api-key=/etc/workerfleet/metrics-api/tls.key" in args
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["metrics-api-certificate"]["secret"]["secretName"] == "wf-workerfleet-metrics-api-tls"


def test_a_given_certificate_secret_is_served_with_its_ca_and_none_is_generated() -> None:
    documents = _render(VALUE_SETS["every-toggle-on"])
    assert _ca_bundle(documents) == "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
    assert not [d for d in documents if d["kind"] == "Secret"]
    pod = _one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["metrics-api-certificate"]["secret"]["secretName"] == "workerfleet-metrics-api-tls"


def test_the_operator_registers_the_metrics_api_and_the_chart_does_not() -> None:
    documents = _render([])
    # The chart templates no APIService: a registered API that nothing answers stalls namespace
    # deletion, so the active replica registers it and the last one to stop removes it
    assert "APIService" not in {d["kind"] for d in documents}
    args = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--register-metrics-api=workerfleet-system/wf-workerfleet-metrics-api" in args
    assert "--metrics-api-ca-file=/etc/workerfleet/metrics-api-ca/ca.crt" in args
    # with the release's ClusterRole as its owner, so the GC removes it on uninstall
    assert "--metrics-api-owner-cluster-role=wf-workerfleet-cluster" in args
    [cluster_role] = [
        d
        for d in documents
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "wf-workerfleet-cluster"
    ]
    rules = [rule for rule in cluster_role["rules"] if "apiservices" in rule["resources"]]
    assert rules == [
        {
            "apiGroups": ["apiregistration.k8s.io"],
            "resources": ["apiservices"],
            "resourceNames": ["v1beta1.external.metrics.k8s.io"],
            "verbs": ["get", "patch", "delete"],
        },
        {"apiGroups": ["apiregistration.k8s.io"], "resources": ["apiservices"], "verbs": ["create"]},
    ]
    owner_rule = [rule for rule in cluster_role["rules"] if "clusterroles" in rule["resources"]]
    assert owner_rule == [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "resourceNames": ["wf-workerfleet-cluster"],
            "verbs": ["get"],
        }
    ]
    # and `create`, which RBAC cannot limit by name, is held to that name and namespace by a policy
    [policy] = [
        d
        for d in documents
        if d["kind"] == "ValidatingAdmissionPolicy"
        and d["metadata"]["name"] == "wf-workerfleet-metrics-api-registration"
    ]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["apiservices"]
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "v1beta1.external.metrics.k8s.io" in expressions
    assert "object.spec.service.namespace == 'workerfleet-system'" in expressions


def test_a_certificate_secret_without_its_ca_is_refused_at_install() -> None:
    result = _helm("template", "wf", str(CHART), "--set", "metricsApi.certificateSecret=mine")
    assert result.returncode != 0
    assert "metricsApi.caBundle" in result.stderr


def _container_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_operator_metrics_are_bound_to_loopback_by_default() -> None:
    documents = _render([])
    container = _container_of(documents)
    assert "--metrics-address=127.0.0.1" in container["args"]
    assert "metrics" not in {port["name"] for port in container["ports"]}
    assert not [d for d in documents if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")]
    policy = _one(documents, "NetworkPolicy")
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"port": "metrics-api"}]]


PROMETHEUS_NAMESPACE = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_exposed_metrics_admit_only_the_named_scrapers() -> None:
    documents = _render(
        [
            "--set",
            "metrics.address=0.0.0.0",
            "--set-json",
            f"networkPolicy.metricsFrom={json.dumps(PROMETHEUS_NAMESPACE)}",
        ]
    )
    assert "--metrics-address=0.0.0.0" in _container_of(documents)["args"]
    assert [d for d in documents if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")]
    [rule] = [
        rule
        for rule in _one(documents, "NetworkPolicy")["spec"]["ingress"]
        if rule["ports"] == [{"port": "metrics"}]
    ]
    assert rule["from"] == PROMETHEUS_NAMESPACE


@pytest.mark.parametrize(
    ("values", "named"),
    [
        # a ServiceMonitor cannot scrape a loopback address
        (["--set", "metrics.serviceMonitor.enabled=true"], "metrics.address"),
        # exposed to the pod network: say who may scrape
        (["--set", "metrics.address=0.0.0.0"], "networkPolicy.metricsFrom"),
    ],
)
def test_metrics_exposed_by_mistake_are_refused_at_install(values: list[str], named: str) -> None:
    result = _helm("template", "wf", str(CHART), *values)
    assert result.returncode != 0
    assert named in result.stderr


def test_with_watched_namespaces_nothing_writable_is_granted_cluster_wide() -> None:
    """Only the APIService (cluster-scoped, held by its own policy) is written with a cluster-wide grant."""
    documents = _render(["--set", "watchNamespaces={media,reports}"])
    cluster_bound = {
        d["roleRef"]["name"]
        for d in documents
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["kind"] == "ClusterRole"
    }
    writes = {
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
        "bind",
        "escalate",
        "impersonate",
    }
    writable = [
        (rule["apiGroups"], rule["resources"])
        for d in documents
        if d["kind"] == "ClusterRole"
        and d["metadata"]["name"] in cluster_bound
        and d["metadata"]["name"].startswith("wf-")
        for rule in d["rules"]
        if writes & set(rule["verbs"])
    ]
    assert writable == [(["apiregistration.k8s.io"], ["apiservices"])] * 2
    assert "wf-workerfleet-namespaced" not in cluster_bound


def _secret_ref_paths(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every `*SecretRef` field of a schema, as a dotted path."""
    found: list[str] = []
    for name, child in (schema.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        found += [here] if name.endswith("SecretRef") else _secret_ref_paths(child, here)
    return found


def test_the_pool_author_policy_checks_every_secret_reference_of_the_crd() -> None:
    policy, _ = _policy(_render([]), "wf-workerfleet-pool-author")
    [queue_secrets] = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == "queueSecrets"]
    crd = yaml.safe_load(render_all()["workerfleet.dev_workerpools.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    paths = _secret_ref_paths(spec)
    assert len(paths) >= 16
    for path in paths:
        assert f"object.spec.{path}.name" in queue_secrets.replace(".?", "."), path


def test_the_operator_may_list_and_patch_pods_but_not_create_delete_or_exec_them() -> None:
    documents = _render(VALUE_SETS["defaults"])
    namespaced = next(
        document
        for document in documents
        if document["kind"] == "ClusterRole" and document["metadata"]["name"].endswith("-namespaced")
    )
    pod_verbs = {
        verb for rule in namespaced["rules"] if "pods" in rule["resources"] for verb in rule["verbs"]
    }
    assert pod_verbs == {"list", "patch"}
