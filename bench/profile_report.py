"""Read an lvsd cProfile dump: the top functions by own time, and own time summed per source file."""

from __future__ import annotations

import os
import pstats
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def short(filename: str) -> str:
    """Repo files relative to the repo, library files by their last two path parts."""
    if filename.startswith(str(REPO) + os.sep):
        return os.path.relpath(filename, REPO)
    parts = Path(filename).parts
    return os.path.join(*parts[-2:]) if len(parts) >= 2 else filename


def label(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":  # built-ins: pstats spells them as "~", 0, "<method 'send' ...>"
        return name
    return f"{short(filename)}:{line}({name})"


def summarize(path: str, rps: float, top: int = 25) -> dict:
    stats = pstats.Stats(path)
    stats.sort_stats("tottime")
    total = stats.total_tt or 1e-9
    rows = []
    for key in stats.fcn_list[:top]:  # type: ignore[attr-defined]  # set by sort_stats
        _cc, ncalls, tottime, cumtime, _callers = stats.stats[key]  # type: ignore[attr-defined]
        rows.append({"function": label(key), "ncalls": ncalls, "tottime_s": round(tottime, 3),
                     "tottime_pct": round(100 * tottime / total, 1), "cumtime_s": round(cumtime, 3)})
    by_file: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_file["built-ins (C)" if key[0] == "~" else short(key[0])] += tottime
    files = sorted(by_file.items(), key=lambda item: item[1], reverse=True)[:12]
    return {
        "rps": rps, "file": path, "total_s": round(total, 3), "top": rows,
        "by_file": [{"file": name, "tottime_s": round(t, 3), "pct": round(100 * t / total, 1)} for name, t in files],
        "text": render(rows, files, total),
    }


def render(rows: list[dict], files: list[tuple[str, float]], total: float) -> str:
    lines = [f"{'ncalls':>10} {'tottime':>8} {'%':>5} {'cumtime':>8}  function"]
    for row in rows:
        lines.append(f"{row['ncalls']:>10} {row['tottime_s']:>8.3f} {row['tottime_pct']:>5.1f} "
                     f"{row['cumtime_s']:>8.3f}  {row['function']}")
    lines.append("\nown time per source file:")
    for name, tottime in files:
        lines.append(f"{tottime:>8.3f} s {100 * tottime / total:>5.1f} %  {name}")
    return "\n".join(lines)
