"""`python -m server.healthcheck`: exit 0 when the server on this machine is ready (the image's HEALTHCHECK).

Standard library only, so a check costs a Python start and one request, not a model import.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('RADGR_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: not ready ({exc})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
