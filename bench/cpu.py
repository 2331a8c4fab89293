"""CPU time of twistd and of its program instances over a load generator's
measured windows, read from /proc (utime + stime, every thread of a process).

The load generator prints ``round-start N`` / ``round-end N`` around each
measured window; :class:`CpuLoadgen` samples /proc in the reader thread the
moment each line arrives, so the window is the generator's own, give or take
a pipe write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench import procs

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a whole process (all its threads), or None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # stat fields 14 and 15


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (program instances, however launched)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def sample(pid: int) -> tuple[float, dict[int, float]]:
    """CPU seconds of ``pid`` and of each of its descendants, now."""
    own = cpu_seconds(pid) or 0.0
    kids = {k: c for k in descendants(pid) if (c := cpu_seconds(k)) is not None}
    return own, kids


class CpuLoadgen(procs.Proc):
    """``loadgen.js`` in throughput mode with marks; samples twistd (``pid``)
    and its descendants at each mark."""

    def __init__(self, config: dict[str, Any], pid: int) -> None:
        self.server_pid = pid
        self.marks: list[tuple[str, tuple[float, dict[int, float]]]] = []
        super().__init__(["node", str(procs.HERE / "loadgen.js"),
                          json.dumps(dict(config, marks=True))])

    def _line(self, line: str) -> None:
        if line.startswith("round-start") or line.startswith("round-end"):
            self.marks.append((line.split()[0], sample(self.server_pid)))

    def windows(self) -> list[dict[str, float]]:
        """CPU seconds used in each measured window: twistd's and the programs'
        (processes alive at both ends of the window)."""
        out = []
        starts = [s for kind, s in self.marks if kind == "round-start"]
        ends = [s for kind, s in self.marks if kind == "round-end"]
        for (own0, kids0), (own1, kids1) in zip(starts, ends):
            programs = sum(kids1[k] - kids0[k] for k in kids1 if k in kids0)
            out.append({"twistd": own1 - own0, "programs": programs})
        return out
