#!/usr/bin/env python3
"""Checks the Kubernetes manifests (distribution/kubernetes/) and the Helm chart
(distribution/helm/tapio/) the way a cluster would take them.

- Every object is validated against the Kubernetes OpenAPI schemas shipped by PyPI's
  kubernetes-validate, strictly (an unknown field is an error), for the oldest and the newest
  Kubernetes versions the manifests claim (KUBERNETES_VERSIONS).
- Every container states requests and limits, and each is a valid Kubernetes quantity.
- Every pipeline in a ConfigMap is accepted by `tapio validate` (the real binary), and the
  ConfigMaps built from config/examples/ still contain every line of their example, in order.
- The chart is rendered for each mode, with its default values and with every option turned on,
  by scripts/gotemplate.py (helm is in no registry this project can install from); what it
  renders passes the same checks, holds the objects its mode promises, and grants the agent
  exactly the RBAC rules of distribution/kubernetes/rbac.yaml.

Usage: scripts/check-kubernetes.py [--tapio BINARY]
BINARY defaults to the debug build, <$CARGO_TARGET_DIR or target>/debug/tapio.
"""

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gotemplate import Files, Renderer, TemplateError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "distribution" / "kubernetes"
CHART = ROOT / "distribution" / "helm" / "tapio"
# 1.29 is the first with native sidecars (the sidecar example and mode); 1.33 the oldest still
# supported upstream when these were written; 1.37 the newest kubernetes-validate 1.37.0 knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
# A Kubernetes resource quantity: a decimal number with an optional SI or binary suffix.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
# The environment the pods give their pipelines, for `tapio validate`.
POD_ENVIRONMENT = {
    "NODE_NAME": "node-1",
    "KAFKA_BROKERS": "kafka.kafka.svc:9092",
    "CLICKHOUSE_URL": "http://clickhouse.clickhouse.svc:8123",
    "CLICKHOUSE_USER": "tapio",
    "CLICKHOUSE_PASSWORD": "secret",
    "TAPIO_API_ADDRESS": "0.0.0.0:8686",
    "APP_LOG_DIR": "/var/log/app",
}
# What each chart mode must render, by kind.
MODE_KINDS = {
    "agent": {"ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"},
    "aggregator": {"ConfigMap", "ServiceAccount", "Deployment", "HorizontalPodAutoscaler",
                   "PodDisruptionBudget", "Service"},
    "sidecar": {"ConfigMap", "Deployment"},
}
# Which example each chart mode's default pipeline is built from.
MODE_EXAMPLES = {
    "agent": "config/examples/agent-to-kafka.toml",
    "aggregator": "config/examples/aggregator-kafka-to-clickhouse.toml",
    "sidecar": "config/examples/sidecar-app-logs-to-kafka.toml",
}


class Problems:
    """Collects every problem, so one run reports them all."""

    def __init__(self):
        self.found = []

    def add(self, where, message):
        self.found.append(f"{where}: {message}")


def name_of(document):
    return f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"


def validate_schema(where, document, problems):
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.add(where, f"{name_of(document)} against {version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.add(where, f"{name_of(document)}: no schema for it in Kubernetes {version}")


def pod_spec(document):
    spec = document.get("spec", {})
    if document.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
        return spec.get("template", {}).get("spec", {})
    return spec if document.get("kind") == "Pod" else None


def check_resources(where, document, problems):
    spec = pod_spec(document)
    if spec is None:
        return
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        resources = container.get("resources", {})
        label = f"{name_of(document)} container {container.get('name')}"
        for section in ("requests", "limits"):
            values = resources.get(section)
            if not values or "memory" not in values:
                problems.add(where, f"{label}: no {section}.memory")
                continue
            for resource, quantity in values.items():
                if not QUANTITY.match(str(quantity)):
                    problems.add(where, f"{label}: {section}.{resource} {quantity!r} is not a quantity")


def contains_in_order(whole, part):
    """Whether every line of `part` appears in `whole`, in the same order."""
    lines = iter(whole.splitlines())
    return all(any(line == candidate for candidate in lines) for line in part.splitlines())


def without_tests(example):
    """The pipeline of an example file: its text up to its `[[tests]]` (and the comment lines
    that introduce them), which `tapio test` runs in CI and a deployed pipeline leaves out."""
    lines = example.splitlines()
    if "[[tests]]" in lines:
        lines = lines[: lines.index("[[tests]]")]
        while lines and (lines[-1].startswith("#") or not lines[-1].strip()):
            lines.pop()
    return "\n".join(lines) + "\n"


def check_pipeline(where, pipeline, example, tapio, problems):
    expected = None if example is None else without_tests((ROOT / example).read_text())
    if expected is not None and not contains_in_order(pipeline, expected):
        problems.add(where, f"the pipeline no longer contains every line of {example}, in order")
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(pipeline)
        config.flush()
        result = subprocess.run(
            [tapio, "validate", "--config", config.name],
            env={**os.environ, **POD_ENVIRONMENT},
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        problems.add(where, f"tapio validate rejects the pipeline:\n{result.stdout}{result.stderr}")


def check_documents(where, documents, tapio, problems, example_of=lambda document: None):
    for document in documents:
        validate_schema(where, document, problems)
        check_resources(where, document, problems)
        if document.get("kind") == "ConfigMap" and "tapio.toml" in document.get("data", {}):
            check_pipeline(f"{where}: {name_of(document)}", document["data"]["tapio.toml"],
                           example_of(document), tapio, problems)


def load_documents(text):
    return [document for document in yaml.safe_load_all(text) if document]


def check_manifests(tapio, problems):
    files = sorted(MANIFESTS.glob("*.yaml"))
    if not files:
        problems.add(str(MANIFESTS), "no manifests")
    for path in files:
        where = str(path.relative_to(ROOT))
        try:
            documents = load_documents(path.read_text())
        except yaml.YAMLError as error:
            problems.add(where, f"not YAML: {error}")
            continue
        check_documents(where, documents, tapio, problems,
                        lambda document: document["metadata"].get("annotations", {}).get("tapio.dev/example"))
    return files


def deep_merge(base, overlay):
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_chart(values_overlay):
    """Every object the chart renders with values.yaml merged with `values_overlay`."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values_overlay)
    templates = {str(p.relative_to(CHART)): p.read_text() for p in sorted((CHART / "templates").iterdir())}
    files = {str(p.relative_to(CHART)): p.read_text() for p in sorted((CHART / "files").iterdir())}
    context = {
        "Values": values,
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
        "Release": {"Name": "tapio", "Namespace": "tapio", "Service": "Helm"},
        "Files": Files(files),
    }
    renderer = Renderer(templates)
    documents = []
    for name in templates:
        if not Path(name).name.startswith("_"):
            documents += load_documents(renderer.render(name, context))
    return documents


def rbac_rules(documents):
    return [d["rules"] for d in documents if d.get("kind") == "ClusterRole"]


# Every option of the chart turned on, to render the branches the defaults leave out.
EVERYTHING_ON = {
    "kafka": {"tls": {"secretName": "kafka-client-tls"}},
    "clickhouse": {"auth": {"secretName": "clickhouse-credentials"}},
    "image": {"tag": "0.1.0-rc1"},
}


def check_chart(tapio, problems):
    manifest_rules = rbac_rules(load_documents((MANIFESTS / "rbac.yaml").read_text()))
    for mode in MODE_KINDS:
        for variant, overlay in (("defaults", {}), ("everything on", EVERYTHING_ON)):
            where = f"helm chart, mode {mode}, {variant}"
            try:
                documents = render_chart(deep_merge(overlay, {"mode": mode}))
            except (TemplateError, yaml.YAMLError) as error:
                problems.add(where, f"does not render: {error}")
                continue
            kinds = {document["kind"] for document in documents}
            if kinds != MODE_KINDS[mode]:
                problems.add(where, f"renders {sorted(kinds)}, not {sorted(MODE_KINDS[mode])}")
            example = MODE_EXAMPLES[mode] if variant == "defaults" else None
            check_documents(where, documents, tapio, problems, lambda document: example)
            if mode == "agent" and rbac_rules(documents) != manifest_rules:
                problems.add(where, "the ClusterRole's rules differ from distribution/kubernetes/rbac.yaml")
            if variant == "everything on":
                check_everything_on(where, mode, documents, problems)
    try:
        render_chart({"mode": "gateway"})
        problems.add("helm chart, mode gateway", "an unknown mode renders instead of failing")
    except TemplateError as error:
        if "mode must be agent, aggregator or sidecar" not in str(error):
            problems.add("helm chart, mode gateway", f"fails with the wrong message: {error}")


def check_everything_on(where, mode, documents, problems):
    """The secrets named in the values reach the pipeline and the pod."""
    pipeline = next(d for d in documents if d["kind"] == "ConfigMap")["data"]["tapio.toml"]
    if 'ca_file = "/etc/tapio/tls/kafka/ca.crt"' not in pipeline:
        problems.add(where, "the Kafka TLS secret does not reach the pipeline")
    if mode == "aggregator" and 'user = "${CLICKHOUSE_USER}"' not in pipeline:
        problems.add(where, "the ClickHouse credentials do not reach the pipeline")
    rendered = yaml.safe_dump(documents)
    if "secretName: kafka-client-tls" not in rendered:
        problems.add(where, "the Kafka TLS secret is not mounted")
    if "image: tapio:0.1.0-rc1" not in rendered:
        problems.add(where, "image.tag is not used")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    parser.add_argument("--tapio", default=str(Path(target) / "debug" / "tapio"))
    arguments = parser.parse_args()
    if not os.access(arguments.tapio, os.X_OK):
        sys.exit(f"check-kubernetes: no tapio binary at {arguments.tapio} (build it first)")
    problems = Problems()
    files = check_manifests(arguments.tapio, problems)
    check_chart(arguments.tapio, problems)
    for problem in problems.found:
        print(problem, file=sys.stderr)
    if problems.found:
        sys.exit(f"check-kubernetes: {len(problems.found)} problems")
    versions = ", ".join(KUBERNETES_VERSIONS)
    print(f"check-kubernetes: {len(files)} manifest files and the chart in {len(MODE_KINDS)} modes "
          f"valid for Kubernetes {versions} (kubernetes-validate {kubernetes_validate.__version__})")


if __name__ == "__main__":
    main()
