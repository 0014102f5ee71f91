"""``smartfabric``: generate Verilog, lint, synthesize, benchmark and demo the switch."""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that answers bad arguments with one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"smartfabric: error: {message}\n")
        sys.exit(2)


def _add_switch_args(p, *, ports=8, width=256):
    p.add_argument("--ports", type=int, default=ports, help=f"number of ports, 2-32 (default {ports})")
    p.add_argument("--data-width", type=int, default=width,
                   help=f"beat width in bits: 64, 128, 256, 512 (default {width})")
    p.add_argument("--max-payload", type=int, default=None, help="max payload bytes (default 256)")
    p.add_argument("--voq-depth", type=int, default=None, help="VOQ depth in beats (default 32)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file with a [switch] table of SwitchParams fields")


def _params(args):
    from .hdl.params import SwitchParams
    fields = {}
    if args.config is not None:
        import tomllib
        try:
            with open(args.config, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"cannot read config {args.config}: {e}")
        table = doc.get("switch", doc)
        known = set(SwitchParams.__dataclass_fields__)
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"unknown keys in {args.config}: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        fields.update(table)
    fields.setdefault("n_ports", args.ports)
    fields.setdefault("data_width", args.data_width)
    if args.max_payload is not None:
        fields["max_payload"] = args.max_payload
    if args.voq_depth is not None:
        fields["voq_depth"] = args.voq_depth
    return SwitchParams(**fields)


def _cmd_generate(args):
    from .synth.verilog import write_verilog, TOP_NAME
    params = _params(args)
    path = write_verilog(params, args.output)
    print(f"wrote {path} (top module {TOP_NAME}; {params.n_ports} ports x {params.data_width} bits)")


def _cmd_lint(args):
    import subprocess
    from .synth.verilog import write_verilog, TOP_NAME
    from .verif.simenv import setup_environment, simulator_missing
    reason = simulator_missing("verilator")
    if reason:
        raise RuntimeError(reason)
    setup_environment()
    params = _params(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_verilog(params, Path(tmp) / f"{TOP_NAME}.v")
        r = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", TOP_NAME,
                            str(path)], capture_output=True, text=True)
    sys.stdout.write(r.stdout + r.stderr)
    if r.returncode:
        raise RuntimeError("verilator --lint-only -Wall reported problems (above)")
    print(f"lint clean: verilator --lint-only -Wall, {params.n_ports} ports x {params.data_width} bits")


def _cmd_synth(args):
    from .synth import ecp5
    params = _params(args)
    ecp5.run_ecp5(params, args.out, freq_mhz=args.freq)


def _run_bench_test(params, sim, testcase, module, env, build_root):
    from .verif.runner import run_test
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = dict(env, SMARTFABRIC_RESULT=str(result))
        run_test(params, sim, testcase, module=module, extra_env=env, build_root=build_root)
        return json.loads(result.read_text())


def _cmd_bench(args):
    params = _params(args)
    tests = {"unicast": "unicast_bench", "multicast": "multicast_bench"}
    if args.kind not in tests:
        raise ValueError(f"unknown benchmark {args.kind!r} (available: {', '.join(tests)})")
    if args.payload_beats < 1:
        raise ValueError(f"--payload-beats must be at least 1, not {args.payload_beats}")
    env = {"SMARTFABRIC_PAYLOAD_BEATS": str(args.payload_beats),
           "SMARTFABRIC_CYCLES": str(args.cycles)}
    if args.seed is not None:
        env["SMARTFABRIC_SEED"] = str(args.seed)
    result = _capture(lambda: _run_bench_test(params, args.sim, tests[args.kind],
                                              "smartfabric.verif.test_perf", env,
                                              args.build_dir), args.json)
    result["simulator"] = args.sim
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")


def _capture(fn, quiet, log=None):
    """Run ``fn`` with the simulator's chatter sent to stderr when JSON goes to stdout, or
    to the file ``log`` (both stdout and stderr) when one is given."""
    if not quiet:
        return fn()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = open(log, "a") if log else None
    os.dup2(target.fileno() if target else 2, 1)
    if target:
        os.dup2(target.fileno(), 2)
    try:
        return fn()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if target:
            target.close()


def _formal_main(argv):
    from .verif.formal import main
    return main(argv)


def _exit_with(status):
    if status:
        raise RuntimeError("formal check failed (see above)")


def _cmd_demo(args):
    from .hdl.params import SwitchParams
    from .synth.verilog import write_verilog, TOP_NAME
    from .verif.runner import run_test
    out = Path(args.out)
    params = SwitchParams()
    path = write_verilog(params, out / f"{TOP_NAME}.v")
    print(f"[1/4] Verilog for the default switch ({params.n_ports} ports x "
          f"{params.data_width} bits): {path}")
    print("[2/4] mixed traffic (writes, reads answered by endpoints, messages; uniform, "
          "permutation, hotspot, incast, bursts; random gaps and backpressure) on that Verilog "
          "in Verilator, every packet and counter checked against the golden model ...",
          flush=True)
    env = {"SMARTFABRIC_PACKETS": str(args.packets)}
    if args.seed is not None:
        env["SMARTFABRIC_SEED"] = str(args.seed)
    log = out / "simulation.log"
    log.unlink(missing_ok=True)
    print(f"      (build and simulator output: {log})", flush=True)
    try:
        mixed = _capture(lambda: _run_bench_test(params, "verilator", "random_traffic",
                                                 "smartfabric.verif.test_switch", env,
                                                 out / "sim"), True, log)
    except (AssertionError, RuntimeError) as e:
        raise RuntimeError(f"{str(e).splitlines()[0]} (details in {log})") from e
    print("[3/4] saturated traffic on the same Verilog: throughput and zero-load latency ...",
          flush=True)
    peak = _capture(lambda: _run_bench_test(params, "verilator", "unicast_bench",
                                            "smartfabric.verif.test_perf",
                                            {"SMARTFABRIC_CYCLES": "1000"}, out / "sim"),
                    True, log)
    print("[4/4] Hypercast: MoE dispatch (64 experts over the ports, top-8, 1 KiB tokens), "
          "fan-out, group updates under traffic and AllGather, every copy checked ...",
          flush=True)
    hypercast = _capture(lambda: _run_bench_test(params, "verilator", "multicast_bench",
                                                 "smartfabric.verif.test_perf",
                                                 {"SMARTFABRIC_CYCLES": "500",
                                                  "SMARTFABRIC_UPDATES": "4",
                                                  "SMARTFABRIC_TOKENS": "24"}, out / "sim"),
                         True, log)
    summary = {"mixed_traffic": mixed, "saturated": peak, "hypercast": hypercast}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print("smartfabric demo")
    hypercast_shown = {k: v for k, v in hypercast.items()
                       if k not in ("fanout_throughput_per_egress", "ports", "data_width",
                                    "voq_depth", "max_payload", "seed")}
    for title, part in (("switch core: mixed traffic, fully checked", mixed),
                        ("switch core: saturated, 4-beat packets (1-beat for single_beat)",
                         peak),
                        ("Hypercast: multicast against unicast copies", hypercast_shown)):
        print(f"  {title}:")
        w = max(len(k) for k in part)
        for k, v in part.items():
            print(f"    {k:{w}s}  {v}")
    print(f"summary written to {out / 'summary.json'}")


def main(argv=None):
    parser = _Parser(prog="smartfabric", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("generate", help="write the switch as one standalone Verilog file")
    _add_switch_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .v file")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on the generated Verilog")
    _add_switch_args(p)
    p.set_defaults(func=_cmd_lint)

    p = sub.add_parser("synth", help="ECP5-85k synthesis and place-and-route (Fmax, LUTs, FFs)")
    _add_switch_args(p, ports=8, width=64)
    p.add_argument("--out", type=Path, default=Path("build/synth"))
    p.add_argument("--freq", type=float, default=150.0, help="target clock in MHz")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("bench", help="measure the RTL in simulation; prints JSON with --json")
    p.add_argument("kind", help="benchmark: unicast or multicast")
    _add_switch_args(p, ports=8, width=64)
    p.add_argument("--payload-beats", type=int, default=4, help="beats per packet (default 4)")
    p.add_argument("--cycles", type=int, default=2000, help="measured cycles per pattern")
    p.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--build-dir", type=Path, default=Path("build/bench"),
                   help="where simulator builds are kept (default build/bench)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("formal", help="formal checks of the core invariants (SymbiYosys)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: _exit_with(_formal_main(args.rest)))

    p = sub.add_parser("demo", help="generate the default switch and run a checked workload")
    p.add_argument("--out", type=Path, default=Path("build/demo"))
    p.add_argument("--packets", type=int, default=16, help="packets per port per pattern")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_cmd_demo)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, AssertionError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"smartfabric: error: {first}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
