"""Timing of the switch's blocks one at a time on an ECP5: Fmax and the critical path of each.

Until session 14 the whole switch did not route at all (router1 had not converged after 8
minutes), and nextpnr names critical paths only after routing. Since then the smallest build
without the header capture routes (``make synth-small``, about 7 minutes, with the ``static``
placer). A block on its own places and routes in seconds to a few minutes, with the
``heap`` placer these figures have always used, so this flow times each block alone and
reports where its longest path runs::

    python -m smartfabric.synth.block_timing                      # every block, SMALLEST
    python -m smartfabric.synth.block_timing --block engine --config synth/lean_8x64.toml

Each block gets the pin wrapper of :func:`smartfabric.synth.ecp5.wrapper_verilog`: every
input comes from a register and every output ends at one, as in the switch, where the
blocks' inputs are registers of their neighbours (configuration registers, stream registers)
and their outputs end at registers. So a block's Fmax here is an upper bound for the switch
(the switch adds the routing between blocks), and its critical path is a path of the block.

Prints one JSON object: ``{"config": ..., "blocks": {name: result, ...}}``, each result as
:func:`run_block` returns it; progress goes to stderr. Every file of a block's run lands in
``<out>/<block>/``.
"""

import json
import sys
import time
from pathlib import Path

from amaranth.back import verilog

from ..argparsing import OneLineParser
from ..hdl.params import SwitchParams, SMALLEST, load_config
from . import ecp5
from .ecp5 import critical_path
from .verilog import top_ports

__all__ = ["BLOCKS", "build_block", "critical_path", "run_block", "main"]

MODULE = "block"


def _ingress(p):
    from ..hdl.ingress import IngressPort
    return IngressPort(p, 0)


def _core(p):
    from ..hdl.core import SwitchCore
    return SwitchCore(p)


def _engine(p):
    from ..hdl.reduce_engine import ReductionEngine
    return ReductionEngine(p)


def _windows(p):
    from ..hdl.window_table import WindowTable
    return WindowTable(p)


def _regs(p):
    from ..hdl.switch import SmartfabricSwitch
    switch = SmartfabricSwitch(p)
    switch._MustUse__silence = True      # only its register block is used (built as it is)
    return switch.regs


def _capture(p):
    from ..hdl.switch import SmartfabricSwitch
    from ..hdl.telemetry import HeaderCapture
    return HeaderCapture(SmartfabricSwitch.SOURCES_PER_PORT * p.n_ports, depth=p.capture_depth)


#: name -> (what it is, constructor from SwitchParams)
BLOCKS = {
    "ingress": ("one ingress port (hdl.ingress.IngressPort, port 0)", _ingress),
    "core": ("the switch core: ingress ports, VOQs, allocator, crossbar, copy addressing "
             "(hdl.core.SwitchCore; the window table is the block `windows`)", _core),
    "windows": ("the window table and its receiver-window scan (hdl.window_table.WindowTable)",
                _windows),
    "engine": ("the reduction engine (hdl.reduce_engine.ReductionEngine)", _engine),
    "regs": ("the AXI4-Lite register block (hdl.regblock.RegisterBlock)", _regs),
    "capture": ("the header capture (hdl.telemetry.HeaderCapture)", _capture),
}


def build_block(name, params):
    """Verilog text of block ``name`` for ``params``, as module :data:`MODULE`."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; blocks: {', '.join(BLOCKS)}")
    return verilog.convert(BLOCKS[name][1](params), name=MODULE, emit_src=False)


def run_block(name, params, out_dir, *, freq_mhz=150, seed=1, router="router2",
              timeout_s=None, log=print):
    """Synthesise, place and route block ``name`` alone in its pin wrapper on an ECP5-85k
    (speed 8, CABGA381) and return ``{"block", "description", "fmax_mhz", "yosys_cells",
    "critical_path", "steps_s"}`` (also written to ``out_dir/block.json``).
    ``critical_path`` is :func:`critical_path` of nextpnr's report.

    Raises ValueError for an unknown block or router, RuntimeError when a tool fails (with the
    tail of its log)."""
    if router not in ecp5.ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ecp5.ROUTERS)}, not {router!r}")
    text = build_block(name, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = {}
    (out / f"{MODULE}.v").write_text(text)
    wtext, n_in, n_out = ecp5.wrapper_verilog(top_ports(text, module=MODULE), module=MODULE)
    (out / f"{ecp5.WRAPPER_NAME}.v").write_text(wtext)

    t = time.monotonic()
    cells = ecp5.module_cells(ecp5.synthesise(out, MODULE, label=f"block {name}",
                                        timeout_s=timeout_s), MODULE)
    steps["yosys"] = round(time.monotonic() - t, 1)
    log(f"{name}: yosys {cells.get('LUT4', 0)} LUT4, {cells.get('CCU2C', 0)} CCU2C, "
        f"{cells.get('TRELLIS_FF', 0)} FF [{steps['yosys']:.0f} s]")

    t = time.monotonic()
    report = ecp5.place_and_route(out, freq_mhz=freq_mhz, seed=seed, router=router,
                                  extra_args=("--detailed-timing-report",),
                                  label=f"block {name}", timeout_s=timeout_s)
    steps["nextpnr"] = round(time.monotonic() - t, 1)
    clock = ecp5.main_clock(report.get("fmax", {}))
    result = {
        "block": name,
        "description": BLOCKS[name][0],
        "fmax_mhz": round(float(report["fmax"][clock]["achieved"]), 2),
        "target_mhz": freq_mhz,
        "router": router,
        "seed": seed,
        "io_bits": {"in": n_in, "out": n_out},
        "yosys_cells": {k: v for k, v in sorted(cells.items()) if not k.startswith("$")},
        "critical_path": critical_path(report),
        "steps_s": steps,
    }
    (out / "block.json").write_text(json.dumps(result, indent=2) + "\n")
    path = result["critical_path"]
    log(f"{name}: Fmax {result['fmax_mhz']:.1f} MHz"
        + (f", {path['delay_ns']} ns from {path['from']} to {path['to']}" if path else "")
        + f" [{steps['nextpnr']:.0f} s]")
    return result


def main(argv=None):
    parser = OneLineParser(prog="smartfabric.synth.block_timing",
                     description="Fmax and critical path of each block of the switch, placed "
                                 "and routed alone on an ECP5-85k")
    parser.add_argument("--block", action="append", choices=list(BLOCKS),
                        help="a block to time (repeatable; default: all)")
    parser.add_argument("--config", type=Path,
                        help="TOML build configuration (default: hdl.params.SMALLEST)")
    parser.add_argument("--out", type=Path, default=Path("build/block_timing"))
    parser.add_argument("--freq", type=float, default=150.0, help="target MHz (default 150)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--router", default="router2", choices=ecp5.ROUTERS)
    args = parser.parse_args(argv)
    try:
        params = SwitchParams(**load_config(args.config)) if args.config else SMALLEST
        if not args.freq > 0:
            raise ValueError(f"frequency must be positive, not {args.freq:g}")
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    names = args.block or [b for b in BLOCKS if b != "capture" or params.capture_depth]
    if "capture" in names and not params.capture_depth:
        parser.error("this build has no header capture (capture_depth = 0)")
    results = {}
    for name in names:
        try:
            results[name] = run_block(name, params, args.out / name, freq_mhz=args.freq,
                                      seed=args.seed, router=args.router,
                                      log=lambda s: print(s, file=sys.stderr, flush=True))
        except RuntimeError as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return 1
    print(json.dumps({"config": params.as_dict(), "blocks": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
