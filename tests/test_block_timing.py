"""Per-block timing flow (``smartfabric.synth.block_timing``): blocks, path summary, command
line. The place-and-route run itself (a minute for the header capture) is long-only."""

import json
import os
import subprocess
import sys

import pytest

from smartfabric.hdl.params import SMALLEST
from smartfabric.synth import block_timing as bt
from smartfabric.synth import ecp5
from smartfabric.synth.verilog import top_ports

LONG = os.environ.get("SMARTFABRIC_LONG", "0") not in ("", "0")


@pytest.mark.parametrize("name", list(bt.BLOCKS))
def test_every_block_builds_with_a_wrapper(name):
    text = bt.build_block(name, SMALLEST)
    ports = top_ports(text, module=bt.MODULE)
    assert {"clk", "rst"} <= {n for _, n, _ in ports}
    wrapper, n_in, n_out = ecp5.wrapper_verilog(ports, module=bt.MODULE)
    assert n_in > 0 and n_out > 0 and f"{bt.MODULE} u_switch" in wrapper


def _step(kind, delay, cell, port):
    return {"type": kind, "delay": delay, "from": {"cell": "x", "port": "Q"},
            "to": {"cell": cell, "port": port}}


def test_critical_path_summary_folds_carry_chains_and_splits_delay():
    path = [_step("clk-to-q", 0.4, "ff_a", "Q"), _step("routing", 1.0, "lut", "A"),
            _step("logic", 0.3, "cc0", "FCO"), _step("logic", 0.06, "cc1", "FCO"),
            _step("logic", 0.0, "cc1", "FCO"), _step("logic", 0.33, "cc2", "F"),
            _step("routing", 2.0, "lut2", "B"), _step("logic", 0.2, "lut2", "Z"),
            _step("setup", 0.0, "ff_b", "DI")]
    path[0]["from"] = {"cell": "ff_a", "port": "CLK"}
    got = bt.critical_path({"critical_paths": [{"path": path}]})
    delays = [st["delay"] for st in path]
    logic = sum(d for st, d in zip(path, delays) if st["type"] != "routing")
    assert got["from"] == "ff_a.CLK" and got["to"] == "ff_b.DI"
    assert got["delay_ns"] == round(sum(delays), 2)
    assert got["logic_ns"] == round(logic, 2)
    assert got["routing_ns"] == round(sum(delays) - logic, 2)
    assert got["logic_steps"] == 7
    names = [s[1] for s in got["steps"]]
    assert names == ["ff_a.Q", "... 3 carry steps", "cc2.F", "lut2.Z", "ff_b.DI"]
    times = [s[0] for s in got["steps"]]
    assert times == sorted(times) and times[-1] == got["delay_ns"]
    assert bt.critical_path({"critical_paths": []}) is None


def test_critical_path_is_the_clocked_one():
    """nextpnr lists the paths from and to the unconstrained pins beside the clock's; the
    summary is the clock's, wherever it is in the list."""
    def entry(frm, to, cell):
        return {"from": frm, "to": to,
                "path": [_step("clk-to-q", 0.4, cell, "Q"), _step("setup", 0.1, cell, "DI")]}
    clk = "posedge clk"
    report = {"critical_paths": [entry("<async>", clk, "pin_in"), entry(clk, clk, "ff_a"),
                                 entry(clk, "<async>", "pin_out")]}
    assert bt.critical_path(report)["to"] == "ff_a.DI"
    assert ecp5.critical_path is bt.critical_path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "smartfabric.synth.block_timing", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--block", "crossbar"], "invalid choice: 'crossbar'"),
    (["--freq", "0"], "frequency must be positive"),
    (["--router", "router3"], "invalid choice: 'router3'"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_config_gets_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[switch]\nn_ports = 2\nwindowz = 4\n")
    r = _cli("--config", str(cfg), "--block", "regs")
    assert r.returncode == 2 and "windowz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_capture_block_of_a_build_without_one_gets_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "nocap.toml"
    cfg.write_text("[switch]\nn_ports = 2\ncapture_depth = 0\n")
    r = _cli("--config", str(cfg), "--block", "capture")
    assert r.returncode == 2 and r.stdout == ""
    assert "no header capture" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="place and route of one block, about a minute; "
                                      "SMARTFABRIC_LONG=1")
def test_capture_block_places_routes_and_names_its_path(tmp_path):
    r = _cli("--block", "capture", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)["blocks"]["capture"]
    assert result["fmax_mhz"] > 0
    path = result["critical_path"]
    assert path is not None and path["delay_ns"] > 0
    # the reported Fmax is the reciprocal of the reported path (nextpnr rounds both)
    assert abs(1000 / path["delay_ns"] - result["fmax_mhz"]) < 0.05 * result["fmax_mhz"]
    assert json.loads((tmp_path / "capture" / "block.json").read_text()) == result
