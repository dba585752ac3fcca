"""Collective time formulas, gradient bucketing, the step-time breakdown, and hardware profiles."""

from __future__ import annotations

import dataclasses

import pytest

from switchc.analysis import DEFAULT_HARDWARE, builtin_profiles, hardware, load_profiles, report_for
from switchc.analysis.comm import COLLECTIVE_TIME, count_comm, members_per_node
from switchc.analysis.flops import count_flops
from switchc.analysis.step_time import estimate_time
from switchc.errors import PlainUserError, UserError
from switchc.ir.tensor import Mesh
from switchc.passes import lower
from tests.ir.tiny import tiny

CPU = hardware("cpu")


def test_collective_formulas() -> None:
    """Thakur, Rabenseifner and Gropp's costs: log2 n latencies for the reductions and gathers,
    and for an all-to-all the faster of pairwise exchange and Bruck's algorithm."""
    hw = CPU.profile
    bw, lat = hw.interconnect_bandwidth, hw.latency
    size = 8 * 2**20
    assert COLLECTIVE_TIME["all-reduce"](4, size, hw, 4) == pytest.approx(2 * 3 / 4 * size / bw + 2 * 2 * lat)
    assert COLLECTIVE_TIME["all-reduce"](6, size, hw, 6) == pytest.approx(2 * 5 / 6 * size / bw + 2 * 3 * lat)
    for kind in ("all-gather", "reduce-scatter"):
        assert COLLECTIVE_TIME[kind](4, size, hw, 4) == pytest.approx(3 / 4 * size / bw + 2 * lat)
    # a large buffer: pairwise exchange, (n-1)/n of it once; a small one on many devices: Bruck
    assert COLLECTIVE_TIME["all-to-all"](4, size, hw, 4) == pytest.approx(3 / 4 * size / bw + 3 * lat)
    assert COLLECTIVE_TIME["all-to-all"](1024, 4096, hw, 1024) == pytest.approx(10 * (lat + 2048 / bw))
    assert COLLECTIVE_TIME["all-reduce"](1, size, hw, 1) == 0
    assert COLLECTIVE_TIME["all-to-all"](1, size, hw, 1) == 0


def test_a_scalar_all_reduce_over_thousands_of_devices_costs_log_many_latencies() -> None:
    """Switch-C's loss all-reduce over 2048 GPUs: 11 halving and 11 doubling steps of the network's
    latency, not a ring's 2 x 2047."""
    hw = hardware("h100").profile
    assert hw.network is not None
    assert COLLECTIVE_TIME["all-reduce"](2048, 4, hw, 8) == pytest.approx(
        2 * 2047 / 2048 * 4 / hw.network.bandwidth + 22 * hw.network.latency
    )


def test_a_group_that_spans_nodes_is_timed_on_the_network() -> None:
    """h100: 8 GPUs per node on NVLink, InfiniBand between nodes; the last mesh axis is fastest."""
    hw = hardware("h100").profile
    assert hw.network is not None
    mesh = Mesh.of({"data": 4, "expert": 8}, {})
    assert members_per_node(mesh, ("expert",), hw) == 8  # one node
    assert members_per_node(mesh, ("data",), hw) == 1  # four nodes, one member on each
    assert members_per_node(mesh, ("data", "expert"), hw) == 8
    assert members_per_node(Mesh.of({"expert": 16}, {}), ("expert",), hw) == 8
    assert members_per_node(mesh, ("data",), CPU.profile) == 4  # no network: one flat group
    size, net = 64 * 2**20, hw.network
    inside = COLLECTIVE_TIME["all-to-all"](8, size, hw, 8)
    assert inside == pytest.approx(7 / 8 * size / hw.interconnect_bandwidth + 7 * hw.latency)
    # 16 experts on two nodes: 7/16 of the buffer over NVLink while 8/16 crosses InfiniBand
    spanning = COLLECTIVE_TIME["all-to-all"](16, size, hw, 8)
    assert spanning == pytest.approx(8 / 16 * size / net.bandwidth + 7 * hw.latency + 8 * net.latency)
    # spanning nodes, the reductions run at the slowest hop's speed
    spread = COLLECTIVE_TIME["all-reduce"](4, size, hw, 1)
    assert spread == pytest.approx(2 * 3 / 4 * size / net.bandwidth + 2 * 2 * net.latency)
    # a small all-to-all over 64 nodes, one member on each: Bruck's 6 steps beat 63 network latencies
    small = COLLECTIVE_TIME["all-to-all"](64, 64 * 2**10, hw, 1)
    assert small == pytest.approx(6 * (net.latency + 32 * 2**10 / net.bandwidth))
    # the report: the same expert all-to-all costs more once its group leaves the node
    one_node = report_for(tiny("mesh.axes={data: 4, expert: 8}"), hardware("h100")).comm
    two_nodes = report_for(tiny("mesh.axes={expert: 8, data: 4}"), hardware("h100")).comm
    forward = [
        [e for e in comm.collectives if e.kind == "all-to-all" and e.phase == "forward"]
        for comm in (one_node, two_nodes)
    ]
    assert [e.bytes_per_device for e in forward[0]] == [e.bytes_per_device for e in forward[1]]
    assert sum(e.seconds for e in forward[1]) > 1.5 * sum(e.seconds for e in forward[0])


def test_a_network_faster_than_the_interconnect_does_not_speed_up_the_hops_inside_a_node() -> None:
    """A profile may give a network faster than its interconnect: a collective that spans nodes
    still takes hops inside one, so it runs no faster than the interconnect allows (it was timed on
    the network alone, 5,000 times faster than the same all-to-all without a network)."""
    hw = hardware("h100").profile
    assert hw.network is not None
    fast = dataclasses.replace(hw, network=dataclasses.replace(hw.network, bandwidth=1e15, latency=1e-9))
    size = 64 * 2**20
    assert COLLECTIVE_TIME["all-reduce"](16, size, fast, 8) == pytest.approx(
        2 * 15 / 16 * size / hw.interconnect_bandwidth + 2 * 4 * hw.latency
    )
    assert COLLECTIVE_TIME["all-gather"](16, size, fast, 8) == pytest.approx(
        15 / 16 * size / hw.interconnect_bandwidth + 4 * hw.latency
    )
    # the 7/16 of the buffer bound for the node's other GPUs crosses NVLink
    assert COLLECTIVE_TIME["all-to-all"](16, size, fast, 8) >= 7 / 16 * size / hw.interconnect_bandwidth
    # one member per node: every hop crosses the network, at its speed
    assert COLLECTIVE_TIME["all-reduce"](4, size, fast, 1) == pytest.approx(2 * 3 / 4 * size / 1e15 + 2 * 2 * 1e-9)


def test_gradient_all_reduces_over_the_same_axes_pay_latency_once() -> None:
    graph = lower(tiny("mesh.axes={data: 4}"))
    comm = count_comm(graph, CPU.profile)
    gradients = [e for e in comm.collectives if e.phase == "gradient"]
    total = sum(e.bytes_per_device for e in gradients)
    assert sum(e.seconds for e in gradients) == pytest.approx(COLLECTIVE_TIME["all-reduce"](4, total, CPU.profile, 4))
    assert comm.seconds_by_phase["gradient"] == pytest.approx(sum(e.seconds for e in gradients))
    assert comm.bytes_per_device == sum(e.bytes_per_device * e.count for e in comm.collectives)


def test_remat_runs_block_collectives_again() -> None:
    plain = count_comm(lower(tiny("mesh.axes={data: 2, expert: 4}")), CPU.profile)
    remat = count_comm(lower(tiny("mesh.axes={data: 2, expert: 4}", "train.remat=full")), CPU.profile)
    recompute = [e for e in remat.collectives if e.phase == "recompute"]
    assert len(recompute) == 4 and all(e.kind == "all-to-all" for e in recompute)
    assert len(remat.collectives) == len(plain.collectives) + 4


def test_step_time_is_compute_at_the_efficiency_plus_exposed_communication() -> None:
    graph = lower(tiny("mesh.axes={data: 2, expert: 4}"))
    flops, comm = count_flops(graph), count_comm(graph, CPU.profile)
    time = estimate_time(flops, comm, CPU, "float32", 0.25, 32)
    rate = CPU.profile.peak_flops.float32 * 0.25
    assert time.compute_seconds == pytest.approx(flops.executed.train_step_per_device / rate)
    phases = comm.seconds_by_phase
    hidden = max(0.0, phases["gradient"] - time.backward_seconds - time.recompute_seconds)
    assert time.exposed_comm_seconds == pytest.approx(
        phases["forward"] + phases["backward"] + phases["recompute"] + hidden
    )
    assert time.step_seconds == pytest.approx(time.compute_seconds + time.exposed_comm_seconds)
    assert time.sequences_per_second == pytest.approx(32 / time.step_seconds)
    # --mfu applies to the executed FLOPs; the MFU the step time implies counts model FLOPs, and
    # capacity padding and exposed communication keep it below the stated efficiency
    peak = CPU.profile.peak_flops.float32
    assert time.model_flops_utilization == pytest.approx(flops.model.train_step_per_device / time.step_seconds / peak)
    assert 0 < time.model_flops_utilization < 0.25
    with pytest.raises(ValueError):
        estimate_time(flops, comm, CPU, "float32", 0.0, 32)


def test_builtin_profiles() -> None:
    profiles = builtin_profiles()
    assert {"tpuv3", "a100", "h100", "h200", "cpu"} <= set(profiles)
    assert DEFAULT_HARDWARE in profiles
    assert profiles["tpuv3"].profile.peak("bfloat16") == 61.5e12  # one TensorCore: a JAX device
    # the GPUs' capacities are nvidia-smi's totals (141e9, the datasheet's "141GB" read as bytes, was 131 GiB)
    assert profiles["h200"].profile.memory_bytes == 143771 * 2**20
    for found in profiles.values():
        assert found.profile.source and found.profile.peak("float32") > 0


USER = """\
my-gpu:
  description: a made-up accelerator
  source: my own measurements
  peak_flops: {bfloat16: 100.0e12, float32: 25.0e12}
  memory_bytes: 64.0e9
  memory_bandwidth: 2.0e12
  interconnect_bandwidth: 100.0e9
  latency: 4.0e-6
"""


NETWORK = """\
  network:
    devices_per_node: 8
    bandwidth: 50.0e9
    latency: 1.0e-5
"""


def test_memory_bandwidth_is_optional_and_changes_no_figure(tmp_path) -> None:
    """No figure of the report reads it: a profile need not give it (it was required)."""
    with_it, without = tmp_path / "with.yaml", tmp_path / "without.yaml"
    with_it.write_text(USER)
    without.write_text(USER.replace("  memory_bandwidth: 2.0e12\n", ""))
    reports = [report_for(tiny(), hardware("my-gpu", [str(path)])) for path in (with_it, without)]
    assert hardware("my-gpu", [str(without)]).profile.memory_bandwidth is None
    assert reports[0].time == reports[1].time and reports[0].memory == reports[1].memory


def test_a_user_profile_is_used_by_name(tmp_path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(USER)
    found = hardware("my-gpu", [str(path)])
    assert found.profile.peak("float32") == 25e12
    assert set(load_profiles([str(path)])) >= {"my-gpu", "cpu"}
    report = report_for(tiny(), found)
    assert report.time.hardware == "my-gpu"
    path.write_text(USER + NETWORK)
    network = hardware("my-gpu", [str(path)]).profile.network
    assert network is not None and (network.devices_per_node, network.bandwidth) == (8, 50e9)


@pytest.mark.parametrize(
    "text,message,line,column",
    [
        (USER.replace("latency:", "latncy:"), "unknown key 'latncy' in my-gpu", 8, 3),
        (USER.replace("4.0e-6", "-1"), "my-gpu.latency: must be > 0", 8, 12),
        (USER.replace("2.0e12", ".inf"), "my-gpu.memory_bandwidth: must be a finite number", 6, 21),
        (USER.replace("64.0e9", "lots"), "my-gpu.memory_bytes: expected a number", 5, 17),
        (USER.replace("  latency: 4.0e-6\n", ""), "my-gpu: missing 'latency'", 1, 1),
        (USER.replace("float32: 25.0e12", "fp32: 25.0e12"), "unknown key 'fp32'", 4, 36),
        (USER + NETWORK.replace("bandwidth:", "bandwith:"), "unknown key 'bandwith' in my-gpu.network", 11, 5),
        (USER + NETWORK.replace("8", "0"), "my-gpu.network.devices_per_node: must be > 0", 10, 23),
        (USER + NETWORK.replace("8", "8.5"), "my-gpu.network.devices_per_node: expected a whole number", 10, 23),
        (USER.replace("4.0e-6", ".nan"), "my-gpu.latency: must be a finite number", 8, 12),
        (USER.replace("a made-up accelerator", "42"), "my-gpu.description: expected text", 2, 16),
        (USER.replace("my-gpu:", "my-gpu: &a"), "YAML anchor '&a' is not allowed in a hardware file", 1, 9),
    ],
)
def test_a_user_profile_error_is_located(tmp_path, text: str, message: str, line: int, column: int) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        hardware("my-gpu", [str(path)])
    diagnostic = next(d for d in info.value.diagnostics if message in d.message)
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column)
    assert str(diagnostic.span).startswith(str(path))


def test_a_misspelled_key_is_one_error_not_also_a_missing_one(tmp_path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(USER.replace("latency:", "latncy:"))
    with pytest.raises(UserError) as info:
        hardware("my-gpu", [str(path)])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.message == "unknown key 'latncy' in my-gpu" and diagnostic.hint == "did you mean 'latency'?"


def test_unknown_profiles_and_files_are_plain_errors() -> None:
    with pytest.raises(PlainUserError, match="unknown hardware profile 'h10'") as info:
        hardware("h10")
    assert info.value.hint == "did you mean 'h100'?"
    with pytest.raises(PlainUserError, match="no such hardware file"):
        hardware("cpu", ["/nonexistent/gpus.yaml"])


def test_a_missing_key_hint_lists_what_a_profile_needs(tmp_path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(USER.replace("  latency: 4.0e-6\n", ""))
    with pytest.raises(UserError) as info:
        hardware("my-gpu", [str(path)])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.hint == (
        "set all of: description, source, peak_flops, memory_bytes, interconnect_bandwidth, latency; "
        "optional: memory_bandwidth, network"
    )
