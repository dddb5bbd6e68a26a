"""`lvsadm --vrrp`: the director's VRRP instances as text (or JSON, as lvsd's `vrrp` op gives them)."""

from __future__ import annotations

HEADER = ("Instance", "State", "VRID", "Ver", "Prio", "Interface", "Master", "Addresses")


def text(result: dict) -> str:
    rows = [HEADER]
    for inst in result.get("instances", []):
        prio = str(inst["priority"])
        if inst["priority"] != inst["base_priority"]:
            prio += f"({inst['base_priority']})"
        rows.append((inst["name"], inst["state"], str(inst["vrid"]), f"v{inst['version']}", prio,
                     inst["interface"], inst.get("master") or "-", " ".join(inst["addresses"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return "".join(" ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + " " + row[-1] + "\n"
                   for row in rows)
