"""Build the switch's Verilog and run cocotb tests on it, on Verilator or Icarus."""

import fcntl
import json
import os
from pathlib import Path

from cocotb_tools.runner import Verilator, get_runner

from .simenv import setup_environment, simulator_missing
from ..hdl.params import SwitchParams
from ..models.reduction import DTYPE_NAMES
from ..synth.verilog import write_verilog, top_ports, TOP_NAME

__all__ = ["config_tag", "build", "run_test"]

REPO = Path(__file__).resolve().parent.parent

# cocotb 2 installs pytest's assertion rewriting for every module the simulator's Python
# imports ("*.py"), so numpy, SystemRDL and the models were parsed and rewritten at every
# test's start, uncached: 2.1 s of a 3.3 s test. Rewriting the benches (this folder) keeps
# their failure messages and starts a test in 0.5 s.
_REWRITE_ASSERTIONS = f"*{os.sep}verif{os.sep}*.py"


def config_tag(params: SwitchParams):
    return (f"n{params.n_ports}_w{params.data_width}_mps{params.max_payload}"
            f"_q{params.voq_depth}_win{params.n_windows}_id{params.n_id_routes}"
            f"_g{params.n_groups}_rg{params.n_rgroups}_rb{params.reduce_buffer_beats}"
            f"_t{sum(1 << DTYPE_NAMES.index(d) for d in params.reduce_dtypes):x}"
            f"_cd{params.capture_depth}")


def _waves():
    return os.environ.get("WAVES", "0") not in ("", "0")


def build(params: SwitchParams, sim, build_root=None):
    """Generate Verilog for ``params`` and build the simulator model (skipped when up to
    date). Returns the runner and its build directory."""
    reason = simulator_missing(sim)
    if reason:
        raise RuntimeError(reason)
    setup_environment()
    build_root = Path(build_root or REPO / "sim_build")
    build_dir = build_root / f"{sim}_{config_tag(params)}"
    # One elaboration per configuration, shared by both simulators' builds (a 16-port
    # switch takes minutes); parallel workers wait for the one that writes it.
    verilog_dir = build_root / f"verilog_{config_tag(params)}"
    verilog_dir.mkdir(parents=True, exist_ok=True)
    with open(verilog_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        source = write_verilog(params, verilog_dir / f"{TOP_NAME}.v", reuse=True)
        sources = [source]
        if sim == "verilator":
            sources.insert(0, _write_public_ports(source))
    runner = _VerilatorPortsPublic() if sim == "verilator" else get_runner(sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # parallel test workers share one build
        _build_locked(runner, sim, sources, build_dir)
    return runner, build_dir


def _write_public_ports(source):
    """Write, beside ``source``, the Verilator control file that makes the top module's ports,
    and nothing else, public (the benches touch only ports); returns its path. Made again only
    when ``source`` is newer (every test start comes here; a 16-port source is 11 MB), and
    rewritten only when its text changes, so an up-to-date model is not rebuilt."""
    path = source.with_name("public_ports.vlt")
    if path.exists() and path.stat().st_mtime >= source.stat().st_mtime:
        return path
    text = "`verilator_config\n" + "".join(
        f'public_flat_rw -module "{TOP_NAME}" -var "{name}"\n'
        for _, name, _ in top_ports(source.read_text()))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


class _VerilatorPortsPublic(Verilator):
    """cocotb's Verilator runner without its ``--public-flat-rw``, which makes every signal
    public: the ports are made public by a control file instead (:func:`_write_public_ports`).
    A public signal cannot be optimised away: at 16 ports, the top module's own 7,400 internal
    signals (``--public-depth 1``) made 46 MB of C++ against 38 MB, and a build of 257 s
    against 226 s; every signal (cocotb's default) doubles the C++."""

    def _build_command(self):
        cmds = super()._build_command()
        verilate = cmds[0]
        if "--public-flat-rw" not in verilate:
            raise RuntimeError("cocotb's Verilator runner no longer passes --public-flat-rw: "
                               "update _VerilatorPortsPublic for this cocotb version")
        verilate.remove("--public-flat-rw")
        return cmds


def _build_locked(runner, sim, sources, build_dir):
    if sim == "verilator":
        # Verilator's own optimisations stay on: they inline the per-instance modules, which
        # leaves the C++ compiler a few large files instead of thousands of small ones.
        # --output-split-cfuncs: functions of at most about 1,000 statements, which g++
        # compiles in 50 CPU-seconds instead of 72 at 8 ports (the same simulation speed).
        args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0", "--x-initial", "0",
                "--output-split-cfuncs", "1000"]
    else:
        args = ["-g2005"]   # Icarus 11 with -g2012 can leave Amaranth's always @* at X
    runner.build(sources=sources, hdl_toplevel=TOP_NAME, build_dir=build_dir,
                 build_args=args, timescale=("1ns", "1ps"), waves=_waves(), always=False)


def run_test(params: SwitchParams, sim, testcase, *, seed=None, module="smartfabric.verif.test_switch",
             extra_env=None, build_root=None):
    """Run one cocotb test; raise AssertionError if it failed. Returns the results file."""
    runner, build_dir = build(params, sim, build_root)
    env = {"SMARTFABRIC_PARAMS": json.dumps(params.as_dict()),
           "COCOTB_REWRITE_ASSERTION_FILES": _REWRITE_ASSERTIONS}
    if seed is not None:
        env["SMARTFABRIC_SEED"] = str(seed)
    for key in ("SMARTFABRIC_SEED", "SMARTFABRIC_SCALE", "SMARTFABRIC_PACKETS"):
        if key in os.environ and key not in env:
            env[key] = os.environ[key]
    env.update(extra_env or {})
    test_dir = build_dir / f"run_{testcase}"
    results = runner.test(test_module=module, hdl_toplevel=TOP_NAME, testcase=testcase,
                          build_dir=build_dir, test_dir=test_dir, extra_env=env,
                          waves=_waves())
    from cocotb_tools.check_results import get_results
    total, failed = get_results(results)
    if failed or total == 0:
        raise AssertionError(f"{testcase} on {sim}: {failed} of {total} failed "
                             f"(log above; results in {results})")
    return results
