"""Peak resident memory of a command and all its child processes (Linux /proc), plus wall time.

Run: python benchmarks/peak_memory.py -- invoke train --task=five-rare
`time -v` reports only the largest single process; Grain workers and the generator's spawned
processes run beside the main one, so this sums the whole process tree every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

PAGE_KIB = 4


def tree_pids(root: int) -> list[int]:
    """root and all its live descendants."""
    pids, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                frontier += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return pids


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 once it has exited)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs=argparse.REMAINDER)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak_total = peak_single = 0
    while process.poll() is None:
        sizes = [rss_kib(pid) for pid in tree_pids(process.pid)]
        peak_total, peak_single = max(peak_total, sum(sizes)), max(peak_single, max(sizes))
        time.sleep(args.interval)
    print(json.dumps({"command": " ".join(command), "returncode": process.returncode,
                      "wall_s": round(time.perf_counter() - start, 1),
                      "peak_rss_tree_gib": round(peak_total / 2**20, 2),
                      "peak_rss_largest_process_gib": round(peak_single / 2**20, 2)}))


if __name__ == "__main__":
    main()
