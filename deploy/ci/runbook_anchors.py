"""Every runbook_url of deploy/prometheus/alerts.yaml names a heading of docs/RUNBOOK.md (its
GitHub anchor: lowercased, punctuation dropped, spaces to hyphens)."""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def anchor(heading):
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def main():
    anchors = {
        anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    missing = []
    count = 0
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            count += 1
            url = rule.get("annotations", {}).get("runbook_url", "")
            if not rule.get("labels", {}).get("severity"):
                missing.append(f"{rule['alert']}: no severity label")
            path, _, fragment = url.partition("#")
            if path != "docs/RUNBOOK.md" or fragment not in anchors:
                missing.append(f"{rule['alert']}: runbook_url {url!r} is no heading of docs/RUNBOOK.md")
    for problem in missing:
        print(problem, file=sys.stderr)
    if not missing:
        print(f"{count} alerts: each has a severity and a runbook section")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
