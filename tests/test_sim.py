"""System tests: cocotb benches on the generated Verilog, on Verilator and on Icarus.

Each (simulator, configuration) pair builds once (``sim_build/<sim>_<config>``) and runs its
tests in one xdist group. Seeds are printed by every test; rerun one with
``SMARTFABRIC_SEED=<seed> .venv/bin/pytest tests/test_sim.py -k '<test id>'``.
"""

import os

import pytest

from smartfabric.hdl.params import SwitchParams
from smartfabric.verif.simenv import SIMULATORS, simulator_missing
from smartfabric.verif.runner import run_test, config_tag

LONG = os.environ.get("SMARTFABRIC_LONG", "0") not in ("", "0")

# 4, 8 and 16 ports; the default 8 x 256 configuration runs in `make demo`.
CONFIGS = [
    SwitchParams(n_ports=4, data_width=128, max_payload=512),
    SwitchParams(n_ports=8, data_width=64, max_payload=256),
    SwitchParams(n_ports=16, data_width=64, max_payload=128, voq_depth=4),
]

SWITCH = "smartfabric.verif.test_switch"
HYPERCAST = "smartfabric.verif.test_hypercast"

# (module, testcase, packets per port per pattern on each simulator)
TESTS = [
    (SWITCH, "random_traffic", {"verilator": 24, "icarus": 8}),
    (SWITCH, "bad_input", {"verilator": 1, "icarus": 1}),
    (SWITCH, "tlp_meaning", {"verilator": 1, "icarus": 1}),
    (SWITCH, "no_head_of_line_blocking", {"verilator": 1, "icarus": 1}),
    (SWITCH, "control_port", {"verilator": 1, "icarus": 1}),
    (HYPERCAST, "hypercast_random", {"verilator": 24, "icarus": 8}),
    (HYPERCAST, "hypercast_collectives", {"verilator": 1, "icarus": 1}),
    (HYPERCAST, "hypercast_group_update_race", {"verilator": 1, "icarus": 1}),
    (HYPERCAST, "hypercast_blocked_egress", {"verilator": 1, "icarus": 1}),
    (HYPERCAST, "hypercast_bad_input", {"verilator": 1, "icarus": 1}),
]


def _cases():
    for sim in SIMULATORS:
        for params in CONFIGS:
            for module, test, packets in TESTS:
                group = f"{sim}_{config_tag(params)}"
                yield pytest.param(sim, params, module, test, packets[sim],
                                   id=f"{sim}-n{params.n_ports}w{params.data_width}-{test}",
                                   marks=[pytest.mark.sim, pytest.mark.xdist_group(name=group)])


@pytest.mark.parametrize("sim,params,module,test,packets", list(_cases()))
def test_switch(sim, params, module, test, packets):
    reason = simulator_missing(sim)
    if reason:
        pytest.skip(reason)
    extra = {}
    if sim == "icarus":
        packets = max(1, packets * 8 // params.n_ports)   # Icarus is ~10x slower
        if module == HYPERCAST:
            extra["SMARTFABRIC_SCALE"] = "0.5"
    if LONG:
        packets *= 20
        extra.pop("SMARTFABRIC_SCALE", None)
    run_test(params, sim, test, module=module,
             extra_env={"SMARTFABRIC_PACKETS": str(packets), **extra})
