"""The doctor's report: one block per real server, one line per check; or JSON for tools."""

from __future__ import annotations

import json

from pylvs.doctor.model import NA, OK, PROBLEM, UNKNOWN, Report

LABEL = {OK: "ok", PROBLEM: "PROBLEM", UNKNOWN: "?", NA: "-"}


def text(reports: list[Report]) -> str:
    if not reports:
        return "No DR or TUN real servers to check.\n"
    lines: list[str] = []
    for r in reports:
        t = r.target
        lines.append(f"{t.service} -> {t.name}")
        for v in r.verdicts:
            sure = f" [{v.certainty}]" if v.status == PROBLEM or (v.status == OK and v.certainty != "certain") else ""
            lines.append(f"  {LABEL[v.status]:<8} {v.check:<13} {v.text}{sure}")
            if v.fix and v.status in (PROBLEM, UNKNOWN):
                lines.append(f"  {'':<8} {'':<13} fix: {v.fix}")
        lines.append("")
    lines.append(summary(reports))
    return "\n".join(lines) + "\n"


def summary(reports: list[Report]) -> str:
    problems = sum(len(r.problems) for r in reports)
    unknown = sum(1 for r in reports for v in r.verdicts if v.status == UNKNOWN)
    bad = sum(1 for r in reports if not r.clean)
    if not bad:
        return f"All {len(reports)} real server(s) look fine."
    return (f"{problems} problem(s), {unknown} check(s) that could not tell, on {bad} of {len(reports)} "
            f"real server(s).")


def as_json(reports: list[Report]) -> str:
    return json.dumps({"real_servers": [r.as_dict() for r in reports], "clean": all(r.clean for r in reports)},
                      indent=2, sort_keys=True) + "\n"


def exit_code(reports: list[Report]) -> int:
    """0: every check passed or does not apply; 1: a problem, or a check that could not tell."""
    return 0 if all(r.clean for r in reports) else 1
