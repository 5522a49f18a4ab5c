"""A real `radgr serve` against the abusive clients of issue 21, measured (not asserted: timing is the machine's).

    python bench/hardening.py --model runs/demo/sft --index runs/demo/index [--seconds 10] [--flood 32]

Three probes against one `radgr serve --engine native` process, each beside its peer measured in the same run:

  huge body      a 10 MB POST /v1/retrieve: its status and answer time, and /healthz latency while it is
                 sent, against /healthz on an idle server
  flood          answers/s of 4 well-behaved clients (127.0.0.1) alone, then beside `--flood` clients of
                 one other address (127.0.0.2) hammering the same endpoint, refused past their address's
                 share of the queue (429, max_pending_per_client): the ratio says whether the flood still
                 starves the others (of queue slots, or of CPU on a small machine)
  slow headers   a client sending one header line per second: how long the server keeps it open
                 (cut at header_timeout_s by server/protocol.py), against an idle keep-alive connection
                 (closed after keep_alive_s)

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.client import RetrievalClient  # noqa: E402

BODY = {"query": "garden chair", "top_k": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, index: str, log: Path, **env) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environ = {**os.environ, "RADGR_MODEL": model, "RADGR_INDEX": index, "RADGR_PORT": str(port),
               "RADGR_ENGINE": "native", **{f"RADGR_{k.upper()}": str(v) for k, v in env.items()}}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("radgr")), "serve"], env=environ,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = RetrievalClient(url, timeout_s=2)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        if client.ready()[0] is not None:
            return proc, url
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server not ready after 240 s")


def healthz_ms(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            out.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.01)


def huge_body(url: str) -> dict[str, float]:
    idle: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=healthz_ms, args=(url, stop, idle))
    t.start()
    time.sleep(1.0)
    stop.set()
    t.join()
    during: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=healthz_ms, args=(url, stop, during))
    t.start()
    payload = b'{"query": "a", "top_k": 3, "user": {"k": "' + b"v " * 5_000_000 + b'"}}'
    t0 = time.perf_counter()
    r = RetrievalClient(url).retrieve_response(content=payload)
    answer_ms = (time.perf_counter() - t0) * 1e3
    time.sleep(0.2)
    stop.set()
    t.join()
    return {"status": r.status_code, "answer_ms": answer_ms, "healthz_idle_p50": statistics.median(idle),
            "healthz_during_max": max(during), "healthz_during_p50": statistics.median(during)}


def answers_per_s(url: str, seconds: float, clients: int, flood: int) -> dict[str, float]:
    """Answers/s (HTTP 200) of `clients` sequential clients from 127.0.0.1 and how many of their requests were
    refused, while `flood` others send from 127.0.0.2 as fast as they can (one abusive address); the flood's
    answers/s and refusals (429/503) too."""
    end = time.monotonic() + seconds
    counts = {"polite_200": 0, "polite_refused": 0, "flood_200": 0, "flood_refused": 0}

    def client(kind: str, address: str):
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(timeout=60, transport=transport) as c:
            while time.monotonic() < end:
                try:
                    status = c.post(f"{url}/v1/retrieve", json=BODY).status_code
                except httpx.HTTPError:
                    status = 0
                counts[f"{kind}_200" if status == 200 else f"{kind}_refused"] += 1

    with ThreadPoolExecutor(clients + flood) as pool:
        for _ in range(flood):
            pool.submit(client, "flood", "127.0.0.2")
        for _ in range(clients):
            pool.submit(client, "polite", "127.0.0.1")
    return {"polite": counts["polite_200"] / seconds, "polite_refused": counts["polite_refused"],
            "flood": counts["flood_200"] / seconds, "flood_refused": counts["flood_refused"]}


def held_open_s(url: str, slow_headers: bool, limit: float = 30.0) -> float:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.settimeout(1.0)
        t0 = time.monotonic()
        if not slow_headers:  # one full request, then idle on the keep-alive connection
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(65536)
        else:
            s.sendall(b"POST /v1/retrieve HTTP/1.1\r\nHost: x\r\n")
        k = 0
        while time.monotonic() - t0 < limit:
            try:
                if slow_headers:
                    s.sendall(f"X-Slow-{k}: {k}\r\n".encode())
                    k += 1
                if s.recv(65536) == b"":
                    return time.monotonic() - t0
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - t0
    return limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--flood", type=int, default=32)
    ap.add_argument("--log", type=Path, default=Path("/tmp/radgr-hardening.log"))
    args = ap.parse_args()
    proc, url = start(args.model, args.index, args.log, beam_width=32, max_pending=8,
                      max_pending_per_client=4, max_batch_requests=4)
    try:
        body = huge_body(url)
        alone = answers_per_s(url, args.seconds, 4, 0)
        flooded = answers_per_s(url, args.seconds, 4, args.flood)
        idle_s = held_open_s(url, slow_headers=False)
        slow_s = held_open_s(url, slow_headers=True)
    finally:
        proc.terminate()
        proc.wait(60)
    print("| probe | measured | peer in the same run | ratio |")
    print("|---|---|---|---|")
    print(f"| 10 MB body | HTTP {body['status']} in {body['answer_ms']:.1f} ms | - | - |")
    during = f"p50 {body['healthz_during_p50']:.1f} ms, max {body['healthz_during_max']:.1f} ms"
    ratio = body["healthz_during_max"] / body["healthz_idle_p50"]
    print(f"| /healthz during it | {during} | idle p50 {body['healthz_idle_p50']:.1f} ms | {ratio:.1f}x |")
    ratio = flooded["polite"] / alone["polite"] if alone["polite"] else float("nan")
    print(f"| 4 clients beside {args.flood} flooding from another address | {flooded['polite']:.1f} answers/s, "
          f"{flooded['polite_refused']} refused (flood: {flooded['flood']:.1f} answers/s, "
          f"{flooded['flood_refused']} refused) | 4 clients alone {alone['polite']:.1f} answers/s, "
          f"{alone['polite_refused']} refused | {ratio:.2f} |")
    print(f"| one header line per second | open {slow_s:.1f} s (bench gives up at 30) | idle keep-alive closed after "
          f"{idle_s:.1f} s | - |")


if __name__ == "__main__":
    main()
