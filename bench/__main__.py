"""``python -m bench``: run every benchmark in this directory, one after the other.

A benchmark is a module ``bench/<name>.py`` (not starting with ``_``) that runs as
``python -m bench.<name>``, prints its own table and exits 0 when it ran. Each runs in
its own process so one benchmark's event loop, ports and simulator cannot skew the next.
``python -m bench NAME...`` runs only those.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def benchmarks() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        path.stem
        for path in here.glob("*.py")
        if not path.stem.startswith("_") and path.stem != "__init__"
    )


def main(argv: list[str]) -> int:
    available = benchmarks()
    wanted = argv or available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available)}")
        return 2
    failed: list[str] = []
    for name in wanted:
        print(f"== bench {name}", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False)
        if done.returncode != 0:
            failed.append(f"{name} (exit {done.returncode})")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
