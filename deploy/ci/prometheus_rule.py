"""deploy/kubernetes/base/prometheus-rule.yaml is deploy/prometheus/alerts.yaml wrapped as a
PrometheusRule, generated here: `--write` rewrites it, `--check` (deploy/check) fails when the
committed file is not what the rules file gives."""
import pathlib
import sys

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
SOURCE = DEPLOY / "prometheus" / "alerts.yaml"
TARGET = DEPLOY / "kubernetes" / "base" / "prometheus-rule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/ci/prometheus_rule.py: do not edit.
# Change the rules there, then run `python3 deploy/ci/prometheus_rule.py --write`.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: provisioner
  labels:
    app.kubernetes.io/name: provisioner
    release: kube-prometheus-stack
spec:
"""


def render() -> str:
    body = [
        "  " + line if line.strip() else ""
        for line in SOURCE.read_text().splitlines()
        if not line.startswith("#")
    ]
    return HEADER + "\n".join(body).rstrip("\n") + "\n"


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "--check"
    if mode == "--write":
        TARGET.write_text(render())
        return 0
    if not TARGET.exists() or TARGET.read_text() != render():
        print(
            f"{TARGET.relative_to(DEPLOY.parent)} differs from {SOURCE.relative_to(DEPLOY.parent)}; "
            "run: python3 deploy/ci/prometheus_rule.py --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
