"""`python -m bench`: run every benchmark module in bench/ in turn (each prints its table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    status = 0
    for module in sorted(HERE.glob("*.py")):
        if module.stem.startswith("_"):
            continue
        print(f"== bench.{module.stem} ==", flush=True)
        result = subprocess.run([sys.executable, "-m", f"bench.{module.stem}", *sys.argv[1:]])
        status = status or result.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
