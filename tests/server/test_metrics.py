"""Server metrics: one engine batch lands in every series by hand-counted values; two servers keep apart."""

from __future__ import annotations

from prometheus_client import generate_latest

from server.engine import BatchStats
from server.metrics import ServerMetrics


def sample(m: ServerMetrics, name: str, **labels) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def test_a_batch_is_counted_in_every_series():
    m = ServerMetrics()
    m.observe_batch(BatchStats(requests=3, beams_per_step=[3, 300, 600], invalid=2, seconds=0.07))
    m.observe_batch(BatchStats(requests=1, beams_per_step=[1, 128], invalid=0, seconds=0.02))
    assert sample(m, "radgr_batch_requests_count") == 2 and sample(m, "radgr_batch_requests_sum") == 4
    assert sample(m, "radgr_batch_requests_bucket", le="2.0") == 1  # the 1-request batch only
    assert sample(m, "radgr_beams_total") == 3 + 300 + 600 + 1 + 128
    assert sample(m, "radgr_beams_per_step_count") == 5
    assert sample(m, "radgr_beams_per_step_bucket", le="128.0") == 3  # 3, 1 and 128
    assert sample(m, "radgr_beams_per_step_bucket", le="512.0") == 4  # ... and 300
    assert sample(m, "radgr_invalid_sids_total") == 2  # the clean batch adds nothing
    assert sample(m, "radgr_batch_decode_seconds_sum") == 0.07 + 0.02
    assert sample(m, "radgr_batch_decode_seconds_bucket", le="0.025") == 1


def test_two_servers_in_one_process_keep_their_own_counts():
    a, b = ServerMetrics(), ServerMetrics()
    a.requests.labels("200").inc()
    a.errors.labels("503").inc(2)
    assert sample(a, "radgr_requests_total", status="200") == 1
    assert sample(b, "radgr_requests_total", status="200") is None
    assert sample(a, "radgr_errors_total", status="503") == 2
    a.info.info({"model": "m", "index": "i", "engine": "native"})
    text = generate_latest(a.registry).decode()
    assert 'radgr_server_info{engine="native",index="i",model="m"} 1.0' in text
    assert sample(b, "radgr_server_info", engine="native", index="i", model="m") is None
