"""How verif/runner.py builds and starts the simulators: the Verilator model exposes the top
module's ports and nothing else, and cocotb rewrites the assertions of the benches only."""

import json
import os
from pathlib import Path

import numpy
import pytest
from _pytest.pathlib import fnmatch_ex

from smartfabric.hdl.params import SMALLEST
from smartfabric.synth.verilog import TOP_NAME, generate_verilog, top_ports
from smartfabric.verif import runner

VERILOG = f"""module other(a);
  input a;
endmodule
module {TOP_NAME}(clk, rst, s0_data, m0_ready);
  input clk;
  input rst;
  input [63:0] s0_data;
  output m0_ready;
  wire \\$12 ;
  wire [3:0] internal;
endmodule
"""


def test_control_file_makes_exactly_the_ports_public(tmp_path):
    source = tmp_path / f"{TOP_NAME}.v"
    source.write_text(VERILOG)
    vlt = runner._write_public_ports(source)
    lines = vlt.read_text().splitlines()
    assert lines[0] == "`verilator_config"
    assert lines[1:] == [f'public_flat_rw -module "{TOP_NAME}" -var "{name}"'
                         for name in ("clk", "rst", "s0_data", "m0_ready")]


def test_control_file_of_the_switch_lists_every_port(tmp_path):
    source = tmp_path / f"{TOP_NAME}.v"
    source.write_text(generate_verilog(SMALLEST))
    names = {line.split('"')[3] for line in
             runner._write_public_ports(source).read_text().splitlines()[1:]}
    assert names == {name for _, name, _ in top_ports(source.read_text())}
    assert {"clk", "rst", "s0_valid", "m1_ready", "s_axil_awaddr"} <= names


def test_unchanged_control_file_is_not_rewritten(tmp_path):
    """The model is rebuilt when an input is newer than it: an identical control file keeps
    its time stamp, even when the Verilog was written again."""
    source = tmp_path / f"{TOP_NAME}.v"
    source.write_text(VERILOG)
    vlt = runner._write_public_ports(source)
    os.utime(vlt, (1, 1))
    runner._write_public_ports(source)
    assert vlt.stat().st_mtime == 1
    source.write_text(VERILOG.replace("m0_ready", "m0_valid"))
    runner._write_public_ports(source)
    assert vlt.stat().st_mtime != 1 and '"m0_valid"' in vlt.read_text()


def test_control_file_newer_than_the_verilog_is_not_read_again(tmp_path, monkeypatch):
    source = tmp_path / f"{TOP_NAME}.v"
    source.write_text(VERILOG)
    vlt = runner._write_public_ports(source)
    os.utime(source, (1, 1))
    monkeypatch.setattr(runner, "top_ports", lambda text: pytest.fail("Verilog read again"))
    assert runner._write_public_ports(source) == vlt


def test_verilator_command_has_no_public_flat_rw(tmp_path, monkeypatch):
    source = tmp_path / f"{TOP_NAME}.v"
    source.write_text(VERILOG)
    vlt = runner._write_public_ports(source)
    commands = []
    r = runner._VerilatorPortsPublic()
    monkeypatch.setattr(r, "_simulator_in_path_build_only", lambda: None)
    r.executable = "verilator"
    monkeypatch.setattr(r, "_execute", lambda cmds, cwd: commands.extend(cmds))
    runner._build_locked(r, "verilator", [vlt, source], tmp_path / "build")
    verilate = commands[0]
    assert not any(arg.startswith("--public") for arg in verilate)
    assert verilate.index(str(vlt)) < verilate.index(str(source))


def test_assertions_are_rewritten_in_the_benches_only(monkeypatch, tmp_path):
    """run_test hands cocotb a pattern that matches the bench modules (failure messages with
    values) and not the libraries they import (rewritten uncached at every start)."""
    seen = {}

    class FakeRunner:
        def test(self, **kwargs):
            seen.update(kwargs["extra_env"])
            results = tmp_path / "results.xml"
            results.write_text('<testsuites><testsuite tests="1"><testcase name="t"/>'
                               '</testsuite></testsuites>')
            return results
    monkeypatch.setattr(runner, "build", lambda params, sim, build_root: (FakeRunner(), tmp_path))
    runner.run_test(SMALLEST, "verilator", "t")
    pattern = seen["COCOTB_REWRITE_ASSERTION_FILES"]
    assert json.loads(seen["SMARTFABRIC_PARAMS"]) == SMALLEST.as_dict()
    benches = Path(runner.__file__).parent
    assert fnmatch_ex(pattern, benches / "test_switch.py")
    assert fnmatch_ex(pattern, benches / "env.py")
    assert not fnmatch_ex(pattern, Path(numpy.__file__))
    assert not fnmatch_ex(pattern, Path(runner.__file__).parent.parent / "models" / "reduction.py")
