"""`python -m server.healthcheck`: exit 0 when the server on this machine is ready (the image's HEALTHCHECK).

Through the one client (`server.client`: httpx and the API models), so a check costs a Python start and
one request, not a model import.
"""

from __future__ import annotations

import os
import sys

from server.client import RetrievalClient


def main() -> int:
    client = RetrievalClient(f"http://127.0.0.1:{os.environ.get('RADGR_PORT', '8000')}", timeout_s=5.0)
    answer, why = client.ready()
    if answer is None:
        print(f"{client.url}: not ready ({why})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
