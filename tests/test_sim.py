"""System tests: cocotb benches on the generated Verilog, on Verilator and on Icarus.

Each configuration is elaborated once (``sim_build/verilog_<config>``) and each (simulator,
configuration) pair builds once from it (``sim_build/<sim>_<config>``); ``make test`` builds
them all in parallel before pytest starts (verif/prebuild.py), so no worker waits for
another's build. Seeds are printed by every test; rerun one with
``SMARTFABRIC_SEED=<seed> .venv/bin/pytest tests/test_sim.py -k '<test id>'``.
"""

import os

import pytest

from smartfabric.hdl.params import SwitchParams
from smartfabric.verif.simenv import SIMULATORS, simulator_missing
from smartfabric.verif.runner import run_test
from smartfabric.verif.prebuild import SYSTEM_CONFIGS, TEST_ENGINE

LONG = os.environ.get("SMARTFABRIC_LONG", "0") not in ("", "0")

# 4, 8 and 16 ports (verif/prebuild.py, where `make test` builds them before pytest starts).
CONFIGS = SYSTEM_CONFIGS

SWITCH = "smartfabric.verif.test_switch"
HYPERCAST = "smartfabric.verif.test_hypercast"
REDUCE = "smartfabric.verif.test_reduce"

# (module, testcase, packets per port per pattern on each simulator; a dict by port count
# where it differs, None: not run). Every test runs on both simulators at 4 and 8 ports;
# Icarus at 16 ports (about 10x slower than Verilator there) runs the random traffic and
# the error paths, Verilator all of them, to keep `make test` within 15 minutes.
_ONCE_ICARUS_4_8 = {"verilator": 1, "icarus": {4: 1, 8: 1, 16: None}}
TESTS = [
    (SWITCH, "random_traffic", {"verilator": 24, "icarus": 8}),
    (SWITCH, "bad_input", {"verilator": 1, "icarus": 1}),
    (SWITCH, "tlp_meaning", _ONCE_ICARUS_4_8),
    (SWITCH, "no_head_of_line_blocking", _ONCE_ICARUS_4_8),
    (SWITCH, "control_port", _ONCE_ICARUS_4_8),
    (HYPERCAST, "hypercast_random", {"verilator": 24, "icarus": 8}),
    (HYPERCAST, "hypercast_collectives", _ONCE_ICARUS_4_8),
    (HYPERCAST, "hypercast_group_update_race", _ONCE_ICARUS_4_8),
    (HYPERCAST, "hypercast_blocked_egress", _ONCE_ICARUS_4_8),
    (HYPERCAST, "hypercast_bad_input", {"verilator": 1, "icarus": 1}),
    # reduce_random: 0 = every element type x operation of the build, k = k random ones.
    # Verilator runs all of them at every width; Icarus, to keep `make test` under 15
    # minutes, 8 random ones at 4 ports and 6 at 8 (a different draw with every seed); at
    # 16 ports (None: not run) only the error paths, which are where width matters.
    (REDUCE, "reduce_random", {"verilator": 0, "icarus": {4: 8, 8: 6, 16: None}}),
    (REDUCE, "reduce_bad_input", {"verilator": 1, "icarus": 1}),
    (REDUCE, "reduce_timeout", {"verilator": 1, "icarus": {4: 1, 8: 1, 16: None}}),
]

# Only on the first configuration (every element type, the widest beats): elements per type.
VOLUME_TESTS = [
    (REDUCE, "reduce_volume", {"verilator": 50_000, "icarus": 400}),
]

# Fault campaign (verif/test_faults.py; parity: verif/test_parity.py), soak
# (verif/test_soak.py: packets offered in all; 1,000,000 on Verilator in make regress-long),
# fuzz campaign (verif/test_fuzz.py: packets per port) and telemetry
# (verif/test_telemetry_sys.py: random packets per port), on the 8-port configuration.
FAULTS = "smartfabric.verif.test_faults"
SOAK = "smartfabric.verif.test_soak"
FUZZ = "smartfabric.verif.test_fuzz"
PARITY = "smartfabric.verif.test_parity"
TELEMETRY = "smartfabric.verif.test_telemetry_sys"
FAULT_TESTS = [
    (FAULTS, "fault_stuck_egress", {"verilator": 2, "icarus": 1}),     # x 1,000 cycles
    (FAULTS, "fault_ingress_stall", {"verilator": 1, "icarus": 1}),
    (FAULTS, "fault_port_disabled_mid_packet", {"verilator": 1, "icarus": 1}),
    (PARITY, "fault_parity", {"verilator": 2, "icarus": 1}),
    (SOAK, "soak_mixed", {"verilator": 1000, "icarus": 200}),
    (FUZZ, "fuzz_packets", {"verilator": 80, "icarus": 24}),
    (FUZZ, "fuzz_reconfig", {"verilator": 80, "icarus": 24}),
    (FUZZ, "fuzz_reset", {"verilator": 16, "icarus": 6}),
    (TELEMETRY, "telemetry_counters", {"verilator": 8, "icarus": 2}),
    (TELEMETRY, "telemetry_capture", {"verilator": 1, "icarus": 1}),
]


# make regress-long: 10 million elements per element type through a 4 x 512 build (a quarter
# of the cycles of 4 x 128 per element; the bench's per-cycle Python is what takes the time).
LONG_VOLUME = [(SwitchParams(n_ports=4, data_width=512, max_payload=512, **TEST_ENGINE),
                REDUCE, "reduce_volume", 10_000_000)]


def _cases():
    if LONG:
        for params, module, test, count in LONG_VOLUME:
            yield pytest.param("verilator", params, module, test, count,
                               id=f"verilator-n{params.n_ports}w{params.data_width}-{test}-long",
                               marks=pytest.mark.sim)
    for sim in SIMULATORS:
        for k, params in enumerate(CONFIGS):
            extra = {0: VOLUME_TESTS, 1: FAULT_TESTS}.get(k, [])
            for module, test, packets in TESTS + extra:
                count = packets[sim]
                if isinstance(count, dict):
                    count = count[params.n_ports]
                if count is None:
                    continue
                yield pytest.param(sim, params, module, test, count,
                                   id=f"{sim}-n{params.n_ports}w{params.data_width}-{test}",
                                   marks=pytest.mark.sim)


@pytest.mark.parametrize("sim,params,module,test,packets", list(_cases()))
def test_switch(sim, params, module, test, packets):
    reason = simulator_missing(sim)
    if reason:
        pytest.skip(reason)
    extra = {}
    if module not in (REDUCE, SOAK) and (sim == "icarus" or params.n_ports > 8):
        # the same traffic in all at every port count (Icarus is ~10x slower: also at 4)
        packets = max(1, packets * 8 // params.n_ports)
        if module == HYPERCAST:
            extra["SMARTFABRIC_SCALE"] = "0.5"
    if LONG and test == "soak_mixed" and sim == "verilator":
        packets = 1_000_000
    elif LONG and not (test == "reduce_volume" and params.data_width == 512):
        packets *= 20
        extra.pop("SMARTFABRIC_SCALE", None)
    run_test(params, sim, test, module=module,
             extra_env={"SMARTFABRIC_PACKETS": str(packets), **extra})
