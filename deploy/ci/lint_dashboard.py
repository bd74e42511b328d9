"""Lints deploy/grafana/provisioner.json: valid JSON, unique panel ids, a `datasource`
variable of type datasource that every query panel and target uses, and every expr parsed by
Prometheus's own parser (promtool checks them as recording rules; Grafana's $__ variables are
replaced by a duration first).

Usage: python3 lint_dashboard.py PROMTOOL  (deploy/check runs it)."""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = DEPLOY / "grafana" / "provisioner.json"
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)")


def main():
    promtool = sys.argv[1] if len(sys.argv) > 1 else "promtool"
    problems = []
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as error:
        print(f"{DASHBOARD.name}: not JSON: {error}", file=sys.stderr)
        return 1
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("no `datasource` variable of type datasource")

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    seen = {}
    exprs = []
    for panel in panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in seen:
            problems.append(f"panel id {panel.get('id')} of {title!r} is also {seen[panel['id']]!r}'s")
        seen[panel.get("id")] = title
        targets = panel.get("targets", [])
        if targets and panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {title!r} does not use ${{datasource}}")
        for target in targets:
            if target.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                problems.append(f"a target of {title!r} does not use ${{datasource}}")
            if not target.get("expr", "").strip():
                problems.append(f"a target of {title!r} has no expr")
                continue
            exprs.append((title, target["expr"]))
    if not exprs:
        problems.append("no queries")

    # Each expr as a recording rule: promtool parses it with Prometheus's parser.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{n}", "expr": GRAFANA_RANGES.sub("5m", expr)}
        for n, (_, expr) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(rules, file)  # JSON is YAML
        file.flush()
        checked = subprocess.run([promtool, "check", "rules", file.name],
                                 capture_output=True, text=True)
    if checked.returncode != 0:
        problems.append("an expr does not parse:\n" + checked.stdout + checked.stderr)

    for problem in problems:
        print(f"{DASHBOARD.relative_to(DEPLOY.parent)}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{DASHBOARD.name}: {len(seen)} panels, {len(exprs)} queries")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
