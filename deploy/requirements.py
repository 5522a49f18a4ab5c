"""Print the requirements of pyproject.toml (core + the given extras), one per line.

The image installs them in a layer of their own, before the code is copied, so a code change
does not reinstall torch and vLLM:  python deploy/requirements.py cpu > /tmp/requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml"), sys.argv[1].split(","))))
