"""Renders each kustomization (base and overlays) with `kubectl kustomize` and validates every
object: built-in kinds with kubernetes-validate (strict, for KUBERNETES_VERSION), custom
resources against the CRDs committed under deploy/schemas/ (their openAPIV3Schema, with unknown
fields refused as the API server would prune them), and every pod template against the
`restricted` Pod Security standard the namespace enforces.

Usage: python3 validate_manifests.py KUBECTL  (deploy/check runs it)."""
import copy
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"
DEPLOY = pathlib.Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/production"]
# Every kind the manifests may hold that is not Kubernetes' own, with its CRD's file.
CRDS = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def closed(schema):
    """The schema with `additionalProperties: false` wherever it lists properties and keeps no
    unknown fields: a misspelt field fails here instead of being pruned by the API server."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # The object's envelope is Kubernetes', not the CRD's.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def crd_schema(group, kind, version):
    path = DEPLOY / "schemas" / CRDS[(group, kind)]
    crd = yaml.safe_load(path.read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return closed(served["schema"]["openAPIV3Schema"])
    raise SystemExit(f"{path.name} has no version {version} of {kind}")


def restricted_violations(obj):
    """What the `restricted` Pod Security standard refuses in the object's pod template."""
    spec = obj["spec"]["template"]["spec"]
    pod = spec.get("securityContext", {})
    problems = []
    for container in spec.get("initContainers", []) + spec["containers"]:
        ctx = container.get("securityContext", {})
        name = container["name"]
        if not (ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True):
            problems.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as UID 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(ctx.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        seccomp = ctx.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable (house rule)")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"volume {volume['name']}: hostPath")
    return problems


def main():
    kubectl = sys.argv[1] if len(sys.argv) > 1 else "kubectl"
    failures = 0
    for kustomization in KUSTOMIZATIONS:
        directory = DEPLOY / "kubernetes" / kustomization
        rendered = subprocess.run(
            [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
        ).stdout
        objects = [o for o in yaml.safe_load_all(rendered) if o]
        for obj in objects:
            group, _, version = obj["apiVersion"].rpartition("/")
            name = f"{kustomization}: {obj['kind']}/{obj['metadata']['name']}"
            try:
                if (group, obj["kind"]) in CRDS:
                    jsonschema.Draft7Validator(crd_schema(group, obj["kind"], version)).validate(obj)
                else:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
                failures += 1
                path = "/".join(str(p) for p in error.absolute_path)
                print(f"{name}: {path}: {error.message}", file=sys.stderr)
                continue
            except kubernetes_validate.SchemaNotFoundError as error:
                failures += 1
                print(f"{name}: {error.message} (a CRD kind? add its schema)", file=sys.stderr)
                continue
            if obj["kind"] in POD_TEMPLATE_KINDS:
                for problem in restricted_violations(obj):
                    failures += 1
                    print(f"{name}: not `restricted`: {problem}", file=sys.stderr)
        print(f"{kustomization}: {len(objects)} objects checked")
    if failures:
        print(f"{failures} problems", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
