"""``smartfabric``: generate Verilog, lint, synthesize, benchmark and demo the switch."""

import json
import os
import sys
import tempfile
from pathlib import Path

from .argparsing import OneLineParser, add_switch_arguments, switch_params

__all__ = ["main"]


def _cmd_generate(args):
    from .synth.verilog import write_verilog, TOP_NAME
    params = switch_params(args)
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
    params = switch_params(args)
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
    ecp5.run_from_args(ecp5.params_from_args(args), args)


def _run_bench_test(params, sim, testcase, module, env, build_root):
    from .verif.runner import run_test
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = dict(env, SMARTFABRIC_RESULT=str(result))
        run_test(params, sim, testcase, module=module, extra_env=env, build_root=build_root)
        return json.loads(result.read_text())


def _cmd_bench(args):
    params = switch_params(args)
    tests = {"unicast": "unicast_bench", "multicast": "multicast_bench",
             "allreduce": "allreduce_bench"}
    if args.kind not in tests:
        raise ValueError(f"unknown benchmark {args.kind!r} (available: {', '.join(tests)})")
    if args.payload_beats < 1:
        raise ValueError(f"--payload-beats must be at least 1, not {args.payload_beats}")
    env = {"SMARTFABRIC_PAYLOAD_BEATS": str(args.payload_beats),
           "SMARTFABRIC_CYCLES": str(args.cycles)}
    if args.kind == "allreduce":
        params = _allreduce_params(args, params)
        sizes = _byte_sizes(args.bytes, params)
        env["SMARTFABRIC_BYTES"] = ",".join(map(str, sizes))
    elif args.bytes is not None:
        raise ValueError("--bytes is an option of the allreduce benchmark")
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


def _cmd_reduce(args):
    from .reduce_tool import run_reduce
    status = run_reduce(args)
    if status:
        sys.exit(status)


def _allreduce_params(args, params):
    """The allreduce benchmark's build: bf16 only and 4 groups unless a --config says
    otherwise (every type at 16 ports takes minutes to elaborate; the rate does not depend
    on the type)."""
    import dataclasses
    from .hdl.params import load_config
    fixed = set(load_config(args.config)) if args.config is not None else set()
    change = {}
    if "reduce_dtypes" not in fixed:
        change["reduce_dtypes"] = ("bf16",)
    if "n_rgroups" not in fixed:
        change["n_rgroups"] = 4
    return dataclasses.replace(params, **change)


def _byte_sizes(text, params):
    """``--bytes`` (one size or a comma-separated list, K/M suffixes allowed)."""
    text = text or "65536"
    sizes = []
    for item in text.split(","):
        item = item.strip().upper()
        scale = {"K": 1024, "M": 1 << 20}.get(item[-1:], 1) if item else 1
        number = item[:-1] if scale > 1 else item
        if not number.isdigit():
            raise ValueError(f"--bytes {text!r}: sizes are integers, optionally with K or M")
        size = int(number) * scale
        unit = params.n_ports * params.data_width // 8
        if size <= 0 or size % unit:
            raise ValueError(f"--bytes {size}: must be a positive multiple of ports x beat "
                             f"bytes ({unit})")
        sizes.append(size)
    return sizes


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


def _cmd_formal(args):
    from .verif.formal import run
    failed = run(args)
    if failed:
        raise RuntimeError(f"{failed} formal check{'s' * (failed > 1)} failed (see above)")


def _cmd_demo(args):
    from .hdl.params import SwitchParams
    from .synth.verilog import write_verilog, TOP_NAME
    from .verif.runner import run_test
    out = Path(args.out)
    params = SwitchParams()
    path = write_verilog(params, out / f"{TOP_NAME}.v")
    print(f"[1/5] Verilog for the default switch ({params.n_ports} ports x "
          f"{params.data_width} bits): {path}")
    print("[2/5] mixed traffic (writes, reads answered by endpoints, messages; uniform, "
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
    print("[3/5] saturated traffic on the same Verilog: throughput and zero-load latency ...",
          flush=True)
    peak = _capture(lambda: _run_bench_test(params, "verilator", "unicast_bench",
                                            "smartfabric.verif.test_perf",
                                            {"SMARTFABRIC_CYCLES": "1000"}, out / "sim"),
                    True, log)
    print("[4/5] Hypercast: MoE dispatch (64 experts over the ports, top-8, 1 KiB tokens), "
          "fan-out, group updates under traffic and AllGather, every copy checked ...",
          flush=True)
    hypercast = _capture(lambda: _run_bench_test(params, "verilator", "multicast_bench",
                                                 "smartfabric.verif.test_perf",
                                                 {"SMARTFABRIC_CYCLES": "500",
                                                  "SMARTFABRIC_UPDATES": "4",
                                                  "SMARTFABRIC_TOKENS": "24"}, out / "sim"),
                         True, log)
    print("[5/5] in-network reduction: AllReduce and ReduceScatter of bf16 and fp8 (E4M3) "
          "sums through the engine, every element checked bit for bit against the golden "
          "model, timed against a ring over unicast ...", flush=True)
    reduction = {}
    for dtype, sizes in (("bf16", "4096,16384,65536"), ("fp8_e4m3", "65536")):
        reduction[dtype] = _capture(lambda: _run_bench_test(
            params, "verilator", "allreduce_bench", "smartfabric.verif.test_perf",
            {"SMARTFABRIC_DTYPE": dtype, "SMARTFABRIC_BYTES": sizes}, out / "sim"), True, log)
    plot = _plot_allreduce(reduction["bf16"], out / "allreduce.png")
    summary = {"mixed_traffic": mixed, "saturated": peak, "hypercast": hypercast,
               "reduction": reduction}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print("smartfabric demo")
    hypercast_shown = {k: v for k, v in hypercast.items()
                       if k not in ("fanout_throughput_per_egress", "ports", "data_width",
                                    "voq_depth", "max_payload", "seed")}
    for title, part in (("switch core: mixed traffic, fully checked", mixed),
                        ("switch core: saturated, 4-beat packets (1-beat for single_beat)",
                         peak),
                        ("Hypercast: multicast against unicast copies", hypercast_shown),
                        ("in-network reduction (sum; every element bit-exact)",
                         _reduction_lines(reduction))):
        print(f"  {title}:")
        w = max(len(k) for k in part)
        for k, v in part.items():
            print(f"    {k:{w}s}  {v}")
    print(f"AllReduce time against message size, switch vs ring: {plot}")
    print(f"summary written to {out / 'summary.json'}")


def _reduction_lines(reduction):
    """Demo summary lines of the allreduce benchmark runs."""
    lines = {}
    for dtype, result in reduction.items():
        for entry in result["sizes"]:
            ar, rs = entry["allreduce"], entry["reducescatter"]
            lines[f"{dtype} {entry['bytes'] // 1024} KiB"] = (
                f"{entry['elements_checked']} elements checked; AllReduce "
                f"{ar['engine_cycles']} cycles vs ring {ar['ring_cycles']} "
                f"(speedup {ar['speedup_vs_ring']}, theory {ar['theoretical_speedup']}), "
                f"GPU IO -{100 * ar['io_reduction']:.1f}%; ReduceScatter speedup "
                f"{rs['speedup_vs_ring']}")
    return lines


def _plot_allreduce(result, path):
    """AllReduce cycles, engine and ring, against bytes per member."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = [e["bytes"] for e in result["sizes"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [e["allreduce"]["engine_cycles"] for e in result["sizes"]], "o-",
            label="in-switch AllReduce (engine)")
    ax.plot(sizes, [e["allreduce"]["ring_cycles"] for e in result["sizes"]], "s-",
            label="ring AllReduce over unicast")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("bytes per member")
    ax.set_ylabel("cycles")
    ax.set_title(f"AllReduce, {result['ports']} ports x {result['data_width']} bits, "
                 f"{result['dtype']} sum")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parser():
    """The command line of ``smartfabric``, every sub-command."""
    from .synth.flow_options import add_synth_arguments
    from .verif.formal_options import add_formal_arguments
    parser = OneLineParser(prog="smartfabric", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("generate", help="write the switch as one standalone Verilog file")
    add_switch_arguments(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .v file")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on the generated Verilog")
    add_switch_arguments(p)
    p.set_defaults(func=_cmd_lint)

    p = sub.add_parser("synth", help="ECP5-85k synthesis and place-and-route (Fmax, LUTs, FFs)")
    add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("bench", help="measure the RTL in simulation; prints JSON with --json")
    p.add_argument("kind", help="benchmark: unicast, multicast or allreduce")
    add_switch_arguments(p, ports=8, width=64)
    p.add_argument("--payload-beats", type=int, default=4, help="beats per packet (default 4)")
    p.add_argument("--cycles", type=int, default=2000, help="measured cycles per pattern")
    p.add_argument("--bytes", default=None, help="allreduce: bytes per member, one size or a "
                   "comma-separated list (K and M suffixes; default 64K)")
    p.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--build-dir", type=Path, default=Path("build/bench"),
                   help="where simulator builds are kept (default build/bench)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("reduce", help="reduce an .npy through the switch RTL and check it "
                                      "bit for bit against the golden model")
    p.add_argument("--dtype", required=True, help="element type: int8 int16 int32 uint8 uint16 "
                   "uint32 fp32 fp16 bf16 fp8_e4m3 fp8_e5m2")
    p.add_argument("--op", required=True, help="sum, min, max (and, or, xor for integers)")
    p.add_argument("--no-saturate", action="store_true",
                   help="fp8 sums overflow to inf / NaN instead of saturating")
    p.add_argument("--collective", choices=["allreduce", "reducescatter", "reduce"],
                   default="allreduce")
    p.add_argument("--sim", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--ports", type=int, default=None,
                   help="switch ports (default: the smallest of 4, 8, 16, 32 that fits)")
    p.add_argument("--data-width", type=int, default=64, choices=[64, 128, 256, 512],
                   help="beat width in bits (default 64)")
    p.add_argument("--input", type=Path, required=True,
                   help=".npy of shape (members, elements): raw bits or native values")
    p.add_argument("--output", type=Path, required=True, help=".npy to write the result to")
    p.add_argument("--seed", type=int, default=None, help="seed of the write cuts and the "
                   "member permutation")
    p.add_argument("--build-dir", type=Path, default=Path("build/reduce"),
                   help="where simulator builds are kept (default build/reduce)")
    p.set_defaults(func=_cmd_reduce)

    p = sub.add_parser("formal", help="formal checks of the core invariants (SymbiYosys)")
    add_formal_arguments(p)
    p.set_defaults(func=_cmd_formal)

    p = sub.add_parser("demo", help="generate the default switch and run a checked workload")
    p.add_argument("--out", type=Path, default=Path("build/demo"))
    p.add_argument("--packets", type=int, default=16, help="packets per port per pattern")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, RuntimeError, AssertionError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"smartfabric: error: {first}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
