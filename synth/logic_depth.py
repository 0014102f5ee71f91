"""Logic depth of the switch after ECP5 technology mapping: where the long paths are.

The routed Fmax of the whole switch (``make synth-small``) names one longest path and moves
by 3-6% with the placer's seed alone, and nextpnr's slack histogram of the 56.93 MHz run had
some 12,000 endpoints missing 150 MHz (docs/fpga-area.md, session 17). Neither says how
much of the design has to change, or whether a change made paths shorter. This flow does,
without place and route and without the placer's noise: Yosys maps the switch for the ECP5
(``synth_ecp5``, as ``make synth`` does) and every register input, memory input and
output of the switch gets the number of logic levels of its longest path from a register,
a memory output or an input::

    python -m smartfabric.synth.logic_depth --config synth/smallest_2x64.toml
    python -m smartfabric.synth.logic_depth --netlist build/synth_small/out.json

**Levels.** Each hop that is routed through the fabric counts one: a ``LUT4``, the read of
a 16 x 4 distributed RAM (``TRELLIS_DPR16X4``: address to data), the entry into a carry
chain (any data input of a ``CCU2C``). The ripple inside a carry chain counts
:data:`CARRY_STEP` per ``CCU2C`` (two bits), and a ``PFUMX`` or ``L6MUX21`` (which widens a
LUT inside its slice) counts nothing. The weights are nextpnr's: in the routed run of the
smallest build on 2026-12-07 (57.35 MHz, seed 1), a LUT took 0.18 ns, a carry chain's entry
0.36 ns and each further ``CCU2C`` 0.056 ns, while the routing into each LUT or chain took
0.5 to 4 ns (12.5 of the critical path's 17.44 ns). That path, a reduction lane's checks into
``engine.l0_reason_q``, is 10 levels by this count: about 1.75 ns a level, so a path of more
than :data:`LEVELS_150MHZ` levels is not expected to meet 150 MHz (6.67 ns) at this
design's placement. The count is a measure to compare designs with, not a timing analysis:
it knows no placement, and a high-fanout net costs more routing than a level.

Each endpoint is named by the register it feeds (the net its ``Q`` drives, as the Amaranth
design named it), the memory cell, or the output port, and belongs to a **block**: the first
two parts of the name with instance numbers replaced by ``*`` (``core.ingress0.events`` is
in ``core.ingress*``), so a block's figures cover all its instances.

Prints one JSON object: ``{"config", "threshold", "endpoints", "over", "histogram",
"blocks", "deepest"}`` (:func:`analyse`); progress goes to stderr.
"""

import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from ..argparsing import OneLineParser

__all__ = ["CARRY_STEP", "LEVELS_150MHZ", "analyse", "block_of", "main"]

#: Levels added per ``CCU2C`` (two bits) that a carry ripples through (0.056 ns of a routed
#: level's 1.2-1.75 ns).
CARRY_STEP = 0.05
#: Deepest path, in levels, expected to meet 150 MHz at the switch's measured 1.75 ns a level.
LEVELS_150MHZ = 4

#: The switch's module (``synth.verilog.TOP_NAME``, not imported: the analysis needs no HDL).
MODULE = "smartfabric_switch"
_SEQ_INPUTS = {"TRELLIS_FF": ("DI", "CE", "LSR", "M"),
               "TRELLIS_DPR16X4": ("DI", "WAD", "WRE")}


def block_of(name):
    """The block an endpoint named ``name`` belongs to: its first two dotted parts, instance
    numbers as ``*`` (``core.voq0_1.storage`` -> ``core.voq*_*``)."""
    parts = name.split(".")[:2] if "." in name else [name.split("[")[0]]
    return ".".join(re.sub(r"\d+", "*", p) for p in parts)


#: Net names Yosys derives from the cells it mapped (``x_LUT4_Z_CCU2C_S0``), not the design's.
_DERIVED = re.compile(r"^\\?\$|_(LUT4|CCU2C|TRELLIS_FF|TRELLIS_DPR16X4|PFUMX|L6MUX21|DP16KD)(_|$)")


def _bit_names(module):
    """bit -> the shortest name of a net the design named (not Yosys's ``$`` names, nor
    the names it derives from mapped cells)."""
    names = {}
    for net, info in module["netnames"].items():
        if info.get("hide_name") or _DERIVED.search(net):
            continue
        for k, b in enumerate(info["bits"]):
            if isinstance(b, str):
                continue
            name = net if len(info["bits"]) == 1 else f"{net}[{k}]"
            if b not in names or len(name) < len(names[b]):
                names[b] = name
    return names


def analyse(netlist, module=MODULE, *, threshold=LEVELS_150MHZ, deepest=12):
    """Logic levels of every endpoint of ``module`` in a Yosys JSON ``netlist`` (a dict, as
    ``synth_ecp5 -json`` writes it).

    Returns a dict: ``endpoints`` (how many), ``over`` (how many are deeper than
    ``threshold``), ``histogram`` (whole levels -> endpoints), ``blocks`` (block -> ``{"
    endpoints", "over", "max_levels", "deepest", "from"}``: the block's deepest endpoint
    and where its path starts; deepest block first) and ``deepest`` (the ``deepest``
    deepest endpoints, each ``{"endpoint", "block", "levels", "from", "through", "luts",
    "carry_cells"}``: its deepest path's start, the memories it reads on the way, and the
    LUT4s and carry cells it passes). ValueError for a combinational loop."""
    mod = netlist["modules"][module]
    driver = {}          # bit -> (cell name, output port)
    for cname, cell in mod["cells"].items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "output":
                for b in bits:
                    if not isinstance(b, str):
                        driver[b] = (cname, port)
    cells = mod["cells"]
    names = _bit_names(mod)
    level = {}           # bit -> levels of its longest path
    via = {}             # bit -> the input bit its longest path came through

    def inputs_of(bit):
        """(input bit, levels added) pairs of the cell driving ``bit``; None at a start."""
        if bit not in driver:
            return None          # a module input
        cname, port = driver[bit]
        cell = cells[cname]
        kind, conn = cell["type"], cell["connections"]
        if kind == "LUT4":
            return [(conn[p][0], 1) for p in "ABCD"]
        if kind in ("PFUMX", "L6MUX21"):
            ports = ("ALUT", "BLUT", "C0") if kind == "PFUMX" else ("D0", "D1", "SD")
            return [(conn[p][0], 0) for p in ports]
        if kind == "TRELLIS_DPR16X4":
            return [(b, 1) for b in conn["RAD"]]
        if kind == "CCU2C":
            data = [conn[p][0] for p in ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1")]
            return [(b, 1) for b in data] + [(conn["CIN"][0], CARRY_STEP)]
        # a register or a block RAM output starts a path; so does any other cell (the
        # switch maps to none: a DSP block would be counted as registered)
        return None

    def resolve(bit):
        stack = [bit]
        expanded = set()     # bits whose inputs were pushed: seen again unresolved, a loop
        while stack:
            b = stack[-1]
            if b in level:
                stack.pop()
                continue
            ins = inputs_of(b)
            if ins is None:
                level[b] = 0
                stack.pop()
                continue
            pending = [i for i, _ in ins if not isinstance(i, str) and i not in level]
            if pending:
                if b in expanded:
                    where = names.get(b) or driver[b][0]
                    raise ValueError(f"combinational loop through {where}")
                expanded.add(b)
                stack.extend(pending)
                continue
            best, best_in = 0, None
            for i, add in ins:
                v = (0 if isinstance(i, str) else level[i]) + add
                if v > best:
                    best, best_in = v, (None if isinstance(i, str) else i)
            level[b] = best
            via[b] = best_in
            stack.pop()
        return level[bit]

    endpoints = {}       # endpoint name -> (levels, deepest input bit)

    def note(name, bits):
        endpoints.setdefault(name, (0, None))     # constant inputs only: no levels
        for b in bits:
            if isinstance(b, str):
                continue
            v = resolve(b)
            if endpoints[name][1] is None or v > endpoints[name][0]:
                endpoints[name] = (v, b)

    for cname, cell in cells.items():
        kind, conn = cell["type"], cell["connections"]
        if kind == "TRELLIS_FF":
            q = conn["Q"][0]
            name = names.get(q, cname)
            note(name, [conn[p][0] for p in _SEQ_INPUTS[kind] if p in conn])
        elif kind == "TRELLIS_DPR16X4":
            note(cname, [b for p in _SEQ_INPUTS[kind] for b in conn[p]])
        elif kind == "DP16KD":
            note(cname, [b for p, bits in conn.items()
                         if cell["port_directions"][p] == "input" and not p.startswith("CLK")
                         for b in bits])
    for pname, port in mod["ports"].items():
        if port["direction"] == "output":
            note(pname, port["bits"])

    def label(bit):
        """A name for ``bit``: its memory if a memory drives it, else the design's name of
        its net, else the name Yosys derived for its cell, cut back to the design's part."""
        cname = driver[bit][0] if bit in driver else None
        if cname and cells[cname]["type"] == "TRELLIS_DPR16X4":
            return re.sub(r"\.\d+\.\d+$", "", cname)
        if bit in names or not cname:
            return names.get(bit, str(bit))
        return _DERIVED.split(cname.lstrip("\\"))[0] or cname

    def path(bit):
        """The deepest path into ``bit``: where it starts (a register, a memory output or an
        input, by name), the distributed-RAM reads it passes (memory cells, by name), and
        how many LUT4s and carry cells it runs through. Yosys keeps the names of registers
        and memories, not of the logic ABC mapped, so that is what a path can say."""
        luts = carry = 0
        mems = []
        start = None
        while bit is not None:
            if bit in driver:
                cname, _ = driver[bit]
                kind = cells[cname]["type"]
                if kind == "LUT4":
                    luts += 1
                elif kind == "CCU2C":
                    carry += 1
                elif kind == "TRELLIS_DPR16X4":
                    mem = label(bit)
                    if not mems or mems[-1] != mem:
                        mems.append(mem)
            if via.get(bit) is None:
                start = label(bit)
            bit = via.get(bit)
        return {"from": start, "through": mems[::-1], "luts": luts, "carry_cells": carry}

    hist = Counter()
    blocks = defaultdict(lambda: {"endpoints": 0, "over": 0, "max_levels": 0})
    block_worst = {}
    for name, (v, b) in endpoints.items():
        hist[int(v)] += 1
        blk_name = block_of(name)
        blk = blocks[blk_name]
        blk["endpoints"] += 1
        blk["over"] += v > threshold
        if blk_name not in block_worst or v > block_worst[blk_name][0]:
            blk["max_levels"] = round(v, 3)
            block_worst[blk_name] = (v, name, b)
    for blk_name, (v, name, b) in block_worst.items():
        blocks[blk_name]["deepest"] = name
        blocks[blk_name]["from"] = path(b)["from"] if b is not None else None
    worst = sorted(endpoints.items(), key=lambda kv: -kv[1][0])[:deepest]
    return {
        "threshold": threshold,
        "endpoints": len(endpoints),
        "over": sum(v > threshold for v, _ in endpoints.values()),
        "histogram": dict(sorted(hist.items())),
        "blocks": dict(sorted(blocks.items(), key=lambda kv: (-kv[1]["max_levels"],
                                                              -kv[1]["over"]))),
        "deepest": [{"endpoint": name, "block": block_of(name), "levels": round(v, 3),
                     **path(b)} for name, (v, b) in worst],
    }


def main(argv=None):
    from ..argparsing import add_switch_arguments, switch_params
    parser = OneLineParser(prog="smartfabric.synth.logic_depth",
                           description="Logic levels of the switch's paths after ECP5 mapping "
                                       "(Yosys only, no place and route).")
    add_switch_arguments(parser, ports=2, width=64)
    parser.add_argument("--netlist", type=Path,
                        help="analyse this Yosys JSON netlist (out.json of `smartfabric synth`) "
                             "instead of synthesising the build")
    parser.add_argument("--out", type=Path, default=Path("build/logic_depth"),
                        help="output directory of the synthesis (default build/logic_depth)")
    parser.add_argument("--threshold", type=float, default=LEVELS_150MHZ,
                        help=f"levels counted as too deep (default {LEVELS_150MHZ}: 150 MHz)")
    parser.add_argument("--deepest", type=int, default=12,
                        help="how many of the deepest endpoints to list with their paths "
                             "(default 12)")
    args = parser.parse_args(argv)
    if args.deepest < 0:
        parser.error(f"--deepest must be 0 or more, not {args.deepest}")
    config = None
    if args.netlist is None:
        from .ecp5 import synthesise, write_sources
        try:
            params = switch_params(args)
        except ValueError as e:
            parser.error(str(e))
        config = params.as_dict()
        args.out.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        v, _, _ = write_sources(params, args.out)
        print(f"yosys: synth_ecp5 of {v} ...", file=sys.stderr)
        try:
            synthesise(args.out, MODULE)
        except RuntimeError as e:      # its message ends with the log's tail: keep one line
            print(f"smartfabric.synth.logic_depth: {str(e).splitlines()[0]}", file=sys.stderr)
            return 1
        print(f"yosys: {time.monotonic() - t:.0f} s", file=sys.stderr)
        netlist_path = args.out / "out.json"
    else:
        netlist_path = args.netlist
    try:
        netlist = json.loads(Path(netlist_path).read_text())
    except (OSError, ValueError) as e:
        parser.error(f"cannot read netlist {netlist_path}: {e}")
    if not isinstance(netlist, dict) or MODULE not in netlist.get("modules", {}):
        parser.error(f"{netlist_path} has no module {MODULE}")
    try:
        result = analyse(netlist, threshold=args.threshold, deepest=args.deepest)
    except ValueError as e:
        parser.error(f"{netlist_path}: {e}")
    print(json.dumps({"config": config, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
