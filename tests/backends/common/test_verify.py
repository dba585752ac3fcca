"""backends/common/verify.py: what both backends' verify compare, and how (no program is run here)."""

from __future__ import annotations

from switchc.backends.common.verify import SMALL_BYTES, collective_comparisons


def _entry(kind: str, size: int, count: int = 1) -> dict:
    return {"kind": kind, "mesh_axes": ["expert"], "group_size": 2, "count": count, "bytes_per_device": size}


def test_small_all_to_alls_are_compared_and_small_reductions_on_neither_side() -> None:
    """A tiny Switch model's all-to-alls are a few hundred bytes each: the report lists every one and
    the program runs every one, so all are compared (they were dropped from the measured side alone,
    a false count MISMATCH). A reduction of at most SMALL_BYTES is the step's scalars: left out of
    the report's side as of the measured one (the report's 4-byte loss sum was compared against none)."""
    report = {
        "spec": {"mesh": {"expert": 2}},
        "comm": {
            "collectives": [
                _entry("all-to-all", 5120, 4),  # the encoder's dispatch and combine, forward and backward
                _entry("all-to-all", 1280, 4),  # the decoder's: 1280 bytes each
                _entry("all-reduce", 65536, 2),
                _entry("all-reduce", 128, 3),  # norm scales' gradients
                _entry("all-reduce", SMALL_BYTES),  # at most SMALL_BYTES: left out
                _entry("all-reduce", 4),  # the loss summed over the batch
            ]
        },
    }
    measured = [("all-to-all", (0, 1), 5120)] * 4 + [("all-to-all", (0, 1), 1280)] * 4
    measured += [("all-reduce", (0, 1), 65536)] * 2 + [("all-reduce", (0, 1), 4)] * 3  # loss, norm partial sums
    rows = {row.what: row for row in collective_comparisons(report, measured, bytes_tolerance=0.0, source="XLA")}
    count = rows["all-to-all over expert (2 devices): count"]
    assert (count.report, count.measured) == (8, 8) and count.ok
    a2a_bytes = rows["all-to-all over expert (2 devices): bytes per device"]
    assert (a2a_bytes.report, a2a_bytes.measured) == (25600, 25600) and a2a_bytes.ok
    reduce_bytes = rows["all-reduce over expert (2 devices): bytes per device"]
    assert (reduce_bytes.report, reduce_bytes.measured) == (131072, 131072) and reduce_bytes.ok
    assert reduce_bytes.note == "2 in the report, 2 in XLA"


def test_a_small_all_to_all_whose_devices_are_unread_fails_a_row() -> None:
    report = {"spec": {"mesh": {"expert": 2}}, "comm": {"collectives": []}}
    (row,) = collective_comparisons(report, [("all-to-all", None, 256)], bytes_tolerance=0.02, source="XLA")
    assert row.what == "collectives over unread devices: bytes per device" and row.measured == 256 and not row.ok


def test_compared_keeps_every_all_to_all_and_reductions_over_small_bytes() -> None:
    from switchc.backends.common.verify import compared

    assert compared("all-to-all", 4) and compared("all-reduce", SMALL_BYTES + 1)
    assert not compared("all-reduce", SMALL_BYTES) and not compared("all-gather", 8)
