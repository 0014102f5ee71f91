# amaranth: UnusedElaboratable=no
# (parameter checks construct blocks that raise, or are never elaborated)
"""Block tests of the in-network reduction engine (hdl/reduce_engine.py) in Amaranth's simulator.

A Python driver builds contribution packets (MWr with an INC descriptor, ``models.formats``
helpers, header and ``keep`` per docs/protocol.md) from each member's buffer, cut into writes of
random sizes (so random DW alignments) with random gaps, skew between members and interleaving
of groups; the checker reassembles every result packet, checks its header, destinations and
``keep``, and compares every byte with ``models.reduction.reduce`` on the members' buffers, bit
for bit, round by round. Random tests print their seed; ``SMARTFABRIC_SEED=<n>`` reruns one.
"""

import random
from collections import deque
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartfabric.hdl.params import SwitchParams
from smartfabric.hdl.reduce_datapath import ElemType, ReduceOp
from smartfabric.hdl.reduce_engine import Collective, ConfigError, ReductionEngine
from smartfabric.models import formats as F
from smartfabric.models.formats import DropReason as R
from smartfabric.models.reduction import (
    DTYPE_NAMES, DTYPES, ELEMENT_EVENTS, OPS, reduce, reduce_scatter_chunks, reduce_with_events,
)

DEFAULT_SEED = 0x5EED_0E17
COMPLETER_ID = 0xBEEF


def params(n_ports=4, data_width=64, *, dtypes=("int32",), n_rgroups=4, beats=256,
           max_payload=128):
    return SwitchParams(n_ports=n_ports, data_width=data_width, max_payload=max_payload,
                        n_rgroups=n_rgroups, reduce_buffer_beats=beats, reduce_dtypes=dtypes)


# ============================================================================================
# groups, data and contribution packets
# ============================================================================================

@dataclass
class Group:
    gid: int
    members: tuple
    dtype: str
    op: str
    size: int
    buf_base: int
    buf_beats: int
    saturate: bool = True
    collective: Collective = Collective.ALLREDUCE
    root: int = 0
    base: int = None
    result_offset: int = None
    notify_offset: int = None

    def __post_init__(self):
        self.members = tuple(sorted(self.members))
        if self.base is None:
            self.base = 0x4000_0000 + self.gid * 0x0010_0000
        if self.result_offset is None:
            self.result_offset = 0x1000_0000 + self.gid * 0x0100_0000
        if self.notify_offset is None:
            self.notify_offset = 0x0F00_0000 + self.gid * 0x100

    @property
    def mask(self):
        return sum(1 << p for p in self.members)

    @property
    def pfx(self):
        return F.inc_prefix(self.gid, self.dtype, self.op)

    @property
    def esize(self):
        return DTYPES[self.dtype].width // 8

    def config(self, enable=1, **override):
        cfg = dict(enable=enable, members=self.mask, elem_type=ElemType[self.dtype],
                   op=ReduceOp[self.op], saturate=int(self.saturate),
                   collective=self.collective, root=self.root, base=self.base, size=self.size,
                   buf_base=self.buf_base, buf_beats=self.buf_beats,
                   result_offset=self.result_offset, notify_offset=self.notify_offset)
        cfg.update(override)
        return cfg

    def dests(self, offset):
        """Destination mask of the result byte at ``offset``."""
        if self.collective == Collective.REDUCE:
            return 1 << self.root
        if self.collective == Collective.REDUCESCATTER:
            chunks = reduce_scatter_chunks(self.size // self.esize, len(self.members))
            for i, (lo, hi) in enumerate(chunks):
                if lo * self.esize <= offset < hi * self.esize:
                    return 1 << self.members[i]
            raise AssertionError(f"offset {offset} in no chunk")
        return self.mask


def random_elements(rng, dtype, count):
    """Raw bits: uniform random patterns, clustered exponents with random signs (rounding,
    cancellation) and special values, mixed per element."""
    d = DTYPES[dtype]
    w = d.width
    raw = rng.integers(0, 1 << w, size=count, dtype=np.uint64)
    if not d.is_float:
        specials = np.array([0, 1, d.mask, d.sign_bit, d.sign_bit - 1], dtype=np.uint64)
        pick = rng.random(count) < 0.2
        raw[pick] = rng.choice(specials, size=int(pick.sum()))
        return raw.astype(d.container)
    man = d.man_bits
    e0 = int(rng.integers(1, d.max_exp_field + 1))
    exps = np.clip(e0 - rng.integers(0, man + 3, size=count), 0, d.max_exp_field)
    fracs = rng.integers(0, 1 << man, size=count, dtype=np.uint64)
    fracs = np.where(exps == d.max_exp_field, np.minimum(fracs, d.max_finite & ((1 << man) - 1)),
                     fracs)
    clustered = (rng.integers(0, 2, size=count, dtype=np.uint64) << np.uint64(w - 1)) | \
        (exps.astype(np.uint64) << np.uint64(man)) | fracs
    specials = [0, d.sign_bit, d.max_finite, d.max_finite | d.sign_bit, 1, d.canonical_nan]
    if d.has_inf:
        specials += [d.inf_bits, d.inf_bits | d.sign_bit]
    specials = np.array(specials, dtype=np.uint64)
    kind = rng.random(count)
    out = np.where(kind < 0.75, clustered, raw)
    sp = kind > 0.97
    out[sp] = rng.choice(specials, size=int(sp.sum()))
    return out.astype(d.container)


def mwr_header(addr, len_dw, requester, *, tag=0, td=0, first_be=0xF, last_be=None):
    """A Memory Write header (3-DW below 4 GiB, else 4-DW) as the 128-bit sideband value."""
    if last_be is None:
        last_be = 0 if len_dw == 1 else 0xF
    four = addr >= 1 << 32
    dw0 = F.field_put(0, F.DW0, "fmt", F.Fmt.DW4_DATA if four else F.Fmt.DW3_DATA)
    dw0 = F.field_put(dw0, F.DW0, "type", F.Type.MEM)
    dw0 = F.field_put(dw0, F.DW0, "length", len_dw & 0x3FF)
    dw0 = F.field_put(dw0, F.DW0, "td", td)
    dw1 = requester << 16 | tag << 8 | last_be << 4 | first_be
    if four:
        dw2, dw3 = addr >> 32, addr & 0xFFFF_FFFC
    else:
        dw2, dw3 = addr & 0xFFFF_FFFC, 0
    return dw0 | dw1 << 32 | dw2 << 64 | dw3 << 96


def hdr_fields(hdr):
    dw = [(hdr >> (32 * k)) & 0xFFFF_FFFF for k in range(4)]
    fmt = F.field_get(dw[0], F.DW0, "fmt")
    four = fmt & 1
    addr = (dw[2] << 32 | dw[3]) if four else dw[2]
    length = F.field_get(dw[0], F.DW0, "length") or 1024
    return dict(fmt=fmt, type=F.field_get(dw[0], F.DW0, "type"), length=length,
                td=F.field_get(dw[0], F.DW0, "td"), addr=addr & ~3,
                requester=F.field_get(dw[1], F.REQ_DW1, "requester_id"),
                first_be=F.field_get(dw[1], F.REQ_DW1, "first_be"),
                last_be=F.field_get(dw[1], F.REQ_DW1, "last_be"), dw=dw)


class Packet:
    """One packet as beats: the header beside the first; random bytes in the lanes ``keep``
    marks invalid and on the ``hdr``/``pfx`` sideband of later beats (the engine must ignore
    them); ``err`` on the last beat when ``err``."""

    def __init__(self, hdr, pfx, payload, lanes, rng, *, err=False):
        self.hdr, self.pfx = hdr, pfx
        n = max(1, -(-len(payload) // lanes))
        self.beats = []
        for i in range(n):
            chunk = payload[i * lanes:(i + 1) * lanes]
            garbage = rng.getrandbits(8 * (lanes - len(chunk))) << (8 * len(chunk))
            self.beats.append({
                "data": int.from_bytes(chunk, "little") | garbage,
                "keep": (1 << len(chunk)) - 1, "first": int(i == 0), "last": int(i == n - 1),
                "hdr": hdr if i == 0 else rng.getrandbits(128),
                "pfx": pfx if i == 0 else rng.getrandbits(32),
                "err": int(err and i == n - 1)})


def contribution(spec, port, data, offset, len_dw, lanes, rng, *, td=False, **kw):
    """The MWr carrying ``data[offset:offset + 4 len_dw]`` of ``port`` to group ``spec``."""
    payload = bytes(data[offset:offset + 4 * len_dw])
    if td:
        payload += rng.randbytes(4)                  # ECRC DW: ignored by the engine
    hdr = mwr_header(spec.base + offset, len_dw, port, tag=rng.getrandbits(8), td=int(td))
    return Packet(hdr, spec.pfx, payload, lanes, rng, **kw)


def split_writes(rng, size, max_payload, style="random"):
    """(offset, len_dw) of the writes covering [0, size), in order."""
    out, off, max_dw = [], 0, max_payload // 4
    while off < size:
        left = (size - off) // 4
        if style == "max":
            k = max_dw
        else:
            r = rng.random()
            k = max_dw if r < 0.3 else rng.randint(1, 4) if r < 0.6 else rng.randint(1, max_dw)
        k = min(k, left)
        out.append((off, k))
        off += 4 * k
    return out


def member_packets(spec, port, data, lanes, rng, max_payload, *, style="random", td_prob=0.1):
    return [contribution(spec, port, data, off, k, lanes, rng, td=rng.random() < td_prob)
            for off, k in split_writes(rng, spec.size, max_payload, style)]


def interleave(rng, seqs):
    """Random merge of several sequences, each kept in order."""
    seqs = [deque(s) for s in seqs if s]
    out = []
    while seqs:
        s = rng.choice(seqs)
        out.append(s.popleft())
        if not s:
            seqs.remove(s)
    return out


# ============================================================================================
# scoreboard
# ============================================================================================

class Scoreboard:
    """Expected result bytes per group and round; checks every result packet and notice."""

    def __init__(self, specs, lanes):
        self.specs = {s.gid: s for s in specs}
        self.lanes = lanes
        self.rounds = {s.gid: deque() for s in specs}     # expected result bytes per round
        self.inputs = {s.gid: deque() for s in specs}
        self.pos = {s.gid: 0 for s in specs}
        self.done = {s.gid: 0 for s in specs}
        self.notices = []                                  # (dest port, offset, dict)
        self.result_beats = 0
        self.round_events = {s.gid: deque() for s in specs}   # element events per round
        # element statistics of the completed rounds: {gid: {event: count}}
        self.events = {s.gid: dict.fromkeys(ELEMENT_EVENTS, 0) for s in specs}

    def add_round(self, spec, rng, rows=None):
        """New contributions of every member (random, or ``rows``: {port: raw elements});
        returns {port: bytes}."""
        n_el = spec.size // spec.esize
        if rows is None:
            rows = {p: random_elements(rng, spec.dtype, n_el) for p in spec.members}
        expect, events = reduce_with_events(spec.dtype, spec.op,
                                            np.stack([rows[p] for p in spec.members]),
                                            saturate=spec.saturate)
        self.rounds[spec.gid].append(expect.astype(expect.dtype.newbyteorder("<")).tobytes())
        self.inputs[spec.gid].append(rows)
        self.round_events[spec.gid].append({k: int(v.sum()) for k, v in events.items()})
        return {p: rows[p].astype(rows[p].dtype.newbyteorder("<")).tobytes() for p in rows}

    def drop_round(self, gid):
        """The group's current round was aborted: forget it."""
        self.rounds[gid].popleft()
        self.inputs[gid].popleft()
        self.round_events[gid].popleft()
        self.pos[gid] = 0

    def pending(self):
        return sum(len(r) for r in self.rounds.values())

    def packet(self, pkt):
        h = hdr_fields(pkt["hdr"])
        assert h["type"] == F.Type.MEM and h["fmt"] in (F.Fmt.DW3_DATA, F.Fmt.DW4_DATA), h
        assert (h["fmt"] == F.Fmt.DW4_DATA) == (h["addr"] >= 1 << 32), "header size vs address"
        if h["fmt"] == F.Fmt.DW3_DATA:
            assert h["dw"][3] == 0
        assert h["td"] == 0 and h["requester"] == COMPLETER_ID and h["first_be"] == 0xF
        assert h["last_be"] == (0 if h["length"] == 1 else 0xF)
        assert pkt["rebase"] == 1 and pkt["pfx"] == 0
        nbytes = 4 * h["length"]
        assert len(pkt["data"]) == nbytes, f"payload {len(pkt['data'])} bytes, header {nbytes}"
        addr = h["addr"]
        for gid, spec in self.specs.items():
            if spec.result_offset <= addr < spec.result_offset + spec.size:
                return self._result(spec, addr - spec.result_offset, pkt, nbytes)
        assert nbytes == 4 and bin(pkt["dests"]).count("1") == 1, f"stray packet at {addr:#x}"
        dw = int.from_bytes(pkt["data"], "little")
        self.notices.append((pkt["dests"].bit_length() - 1, addr,
                             {k: F.field_get(dw, F.INC_NOTICE, k) for k in F.INC_NOTICE}))

    def _result(self, spec, off, pkt, nbytes):
        gid = spec.gid
        assert self.rounds[gid], f"group {gid}: result at offset {off} after the last round"
        assert off == self.pos[gid], \
            f"group {gid}: result at offset {off}, expected {self.pos[gid]}"
        want = self.rounds[gid][0][off:off + nbytes]
        if pkt["data"] != want:
            es = spec.esize
            bad = [i for i in range(0, nbytes, es) if pkt["data"][i:i + es] != want[i:i + es]]
            i = bad[0]
            el = (off + i) // es
            ins = {p: hex(int(r[el])) for p, r in self.inputs[gid][0].items()}
            raise AssertionError(
                f"group {gid} ({spec.dtype} {spec.op}) round {self.done[gid]}: {len(bad)} wrong "
                f"elements in [{off}, {off + nbytes}); element {el}: got "
                f"{pkt['data'][i:i + es][::-1].hex()} want {want[i:i + es][::-1].hex()} "
                f"inputs {ins}")
        d_first, d_last = spec.dests(off), spec.dests(off + nbytes - 1)
        assert d_first == d_last, f"group {gid}: packet [{off}, {off + nbytes}) spans chunks"
        assert pkt["dests"] == d_first, f"group {gid}: dests {pkt['dests']:#x}, want {d_first:#x}"
        self.pos[gid] += nbytes
        if self.pos[gid] == spec.size:
            self.rounds[gid].popleft()
            self.inputs[gid].popleft()
            for k, v in self.round_events[gid].popleft().items():
                self.events[gid][k] += v
            self.pos[gid] = 0
            self.done[gid] += 1


# ============================================================================================
# the bench: one testbench drives every lane, the result stream and the configuration
# ============================================================================================

class Bench:
    """Drives ``contrib[p]`` from per-lane queues, applies random backpressure on ``result``,
    reassembles result packets into the scoreboard and records every event.

    Queue items (per lane, and a ``control`` queue): a :class:`Packet`; ``("delay", n)``;
    ``("wait", predicate)``; ``("do", fn(ctx, bench))``.
    """

    def __init__(self, p, specs, rng, *, gap=0.2, stall=0.2, timeout=0, max_cycles=20000):
        self.p = p
        self.dut = ReductionEngine(p)
        self.rng = rng
        self.nrng = np.random.default_rng(rng.getrandbits(32))     # element data
        self.N, self.L = p.n_ports, p.data_width // 8
        self.board = Scoreboard(specs, self.L)
        self.queues = [deque() for _ in range(self.N)]
        self.control = deque()
        self.gap = gap if isinstance(gap, list) else [gap] * self.N
        self.stall = stall
        self.timeout = timeout
        self.max_cycles = max_cycles
        self.cycle = 0
        self.cur = [None] * self.N
        self.idx = [0] * self.N
        self.wait = [0] * self.N
        self.rx = None
        self.accepted = [0] * self.N
        self.accepted_at = []       # (cycle, port) of accepted events
        self.rejected = []          # (cycle, port, reason, hdr, pfx)
        self.completed = []         # (cycle, group)
        self.aborted = []
        self.config_errors = []     # (cycle, group, cause)
        self.events = {}            # element statistics pulsed: {group: {event: count}}
        self.max_amount = 0         # the largest amount of one pulse
        self.lane_stall = [0] * self.N
        self.sent = []              # (cycle, port, packet) at each packet's last beat
        self.out_cycles = []        # cycles of result beats
        self.active = 0
        self.done = lambda: True

    def arm(self, spec, **override):
        """Control items: program the group, raise enable, wait until it is active."""
        gid = spec.gid

        def program(ctx, b):
            ctx.set(b.dut.config[gid], spec.config(enable=0, **override))

        def enable(ctx, b):
            ctx.set(b.dut.config[gid].enable, 1)
        return [("do", program), ("delay", 1), ("do", enable),
                ("wait", lambda: self.active >> gid & 1)]

    def wait_active(self, gid):
        return ("wait", lambda: self.active >> gid & 1)

    def _step_queue(self, q, ctx, lane=None):
        """Runs control items at the head of ``q``; returns the packet to send, if any."""
        while q:
            item = q[0]
            if isinstance(item, Packet):
                return item
            kind, arg = item
            if kind == "delay":
                q.popleft()
                if arg > 0:
                    q.appendleft(("delay_", arg))
                    return None
            elif kind == "delay_":
                q.popleft()
                if arg > 1:
                    q.appendleft(("delay_", arg - 1))
                return None
            elif kind == "wait":
                if not arg():
                    return None
                q.popleft()
            elif kind == "do":
                q.popleft()
                arg(ctx, self)
            else:
                raise ValueError(kind)
        return None

    def idle(self):
        return all(c is None for c in self.cur) and not any(self.queues) and not self.control

    async def testbench(self, ctx):
        dut, N, rng = self.dut, self.N, self.rng
        ctx.set(dut.timeout, self.timeout)
        ctx.set(dut.completer_id, COMPLETER_ID)
        sigs = [dut.contrib[p].ready for p in range(N)] + [dut.contrib[p].valid for p in range(N)]
        sigs += [dut.result.valid, dut.result.ready, dut.result.payload, dut.active,
                 dut.completed, dut.aborted, dut.config_error, dut.bad_config]
        sigs += [getattr(dut, name) for name in ELEMENT_EVENTS]
        sigs += [dut.lane_events[p] for p in range(N)]
        held = None
        drained = 0
        while True:
            if self.idle() and self.done() and self.rx is None:
                drained += 1
                if drained > 20:
                    break
            if self.cycle >= self.max_cycles:
                raise AssertionError(
                    f"timeout at cycle {self.cycle}: lanes {[len(q) for q in self.queues]} "
                    f"cur {[c is not None for c in self.cur]} control {list(self.control)[:2]} "
                    f"rounds left {dict((g, len(r)) for g, r in self.board.rounds.items())} "
                    f"pos {self.board.pos} rejected "
                    f"{[(c, p, R(r).name) for c, p, r, *_ in self.rejected]} config errors "
                    f"{self.config_errors} aborted {self.aborted} active {self.active:#x}")
            self._step_queue(self.control, ctx)
            for p in range(N):
                if self.cur[p] is None:
                    pkt = self._step_queue(self.queues[p], ctx, p)
                    if pkt is not None and rng.random() >= self.gap[p]:
                        self.queues[p].popleft()
                        self.cur[p], self.idx[p] = pkt, 0
                        ctx.set(dut.contrib[p].payload, pkt.beats[0])
                        ctx.set(dut.contrib[p].valid, 1)
                    else:
                        ctx.set(dut.contrib[p].valid, 0)
                elif self.wait[p]:
                    self.wait[p] -= 1
                    if not self.wait[p]:
                        ctx.set(dut.contrib[p].payload, self.cur[p].beats[self.idx[p]])
                        ctx.set(dut.contrib[p].valid, 1)
            ctx.set(dut.result.ready, int(rng.random() >= self.stall))
            vals = await ctx.tick().sample(*sigs)
            vals = vals[2:]
            ready, valid = vals[:N], vals[N:2 * N]
            o_valid, o_ready, o_pl, active, comp, abrt, cerr, badc = vals[2 * N:2 * N + 8]
            counts = vals[2 * N + 8:2 * N + 8 + len(ELEMENT_EVENTS)]
            events = vals[2 * N + 8 + len(ELEMENT_EVENTS):]
            for name, ev in zip(ELEMENT_EVENTS, counts):
                if ev.valid:
                    assert 0 < ev.amount <= self.L, f"cycle {self.cycle}: {name} {ev}"
                    per = self.events.setdefault(ev.group, dict.fromkeys(ELEMENT_EVENTS, 0))
                    per[name] += ev.amount
                    self.max_amount = max(self.max_amount, ev.amount)
            self.active = active
            assert not badc, f"cycle {self.cycle}: reducer bad_config"
            # result stream rules: a stalled beat holds still
            if held is not None:
                assert o_valid and o_pl.as_value().value == held, \
                    f"cycle {self.cycle}: result changed while stalled"
            held = o_pl.as_value().value if o_valid and not o_ready else None
            if o_valid and o_ready:
                self._result_beat(o_pl)
            if comp.valid:
                self.completed.append((self.cycle, comp.group))
            if abrt.valid:
                self.aborted.append((self.cycle, abrt.group))
                if self.board.rounds.get(abrt.group):
                    self.board.drop_round(abrt.group)
            if cerr.valid:
                self.config_errors.append((self.cycle, cerr.group, ConfigError(cerr.cause)))
            for p in range(N):
                ev = events[p]
                if ev.accept:
                    self.accepted[p] += 1
                    self.accepted_at.append((self.cycle, p))
                if ev.reject:
                    self.rejected.append((self.cycle, p, R(ev.reason), ev.hdr, ev.pfx))
                if valid[p] and self.cur[p] is not None and not self.wait[p]:
                    if ready[p]:
                        self.idx[p] += 1
                        if self.idx[p] == len(self.cur[p].beats):
                            self.sent.append((self.cycle, p, self.cur[p]))
                            self.cur[p] = None
                            ctx.set(dut.contrib[p].valid, 0)
                        elif rng.random() < self.gap[p]:
                            ctx.set(dut.contrib[p].valid, 0)
                            self.wait[p] = 1 + rng.randrange(2)
                        else:
                            ctx.set(dut.contrib[p].payload, self.cur[p].beats[self.idx[p]])
                    else:
                        self.lane_stall[p] += 1
            self.cycle += 1

    def _result_beat(self, pl):
        b = pl.beat
        self.out_cycles.append(self.cycle)
        self.board.result_beats += 1
        assert b.err == 0
        if self.rx is None:
            assert b.first, f"cycle {self.cycle}: result beat without first"
            self.rx = {"hdr": b.hdr, "pfx": b.pfx, "dests": pl.dests, "rebase": pl.rebase,
                       "data": b""}
        else:
            assert not b.first, f"cycle {self.cycle}: first inside a packet"
            assert pl.dests == self.rx["dests"]
        keep = b.keep
        nb = keep.bit_length()
        assert keep == (1 << nb) - 1, f"keep {keep:#x} not contiguous from lane 0"
        if not b.last:
            assert nb == self.L, "a non-final beat must be full"
        self.rx["data"] += (b.data & ((1 << 8 * nb) - 1)).to_bytes(nb, "little")
        if b.last:
            pkt, self.rx = self.rx, None
            self.board.packet(pkt)

    def run(self):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_testbench(self.testbench)
        sim.run()
        return self

    # ---- helpers for tests
    def rejects(self):
        return [(p, r) for _, p, r, _, _ in self.rejected]


def feed_rounds(bench, specs, rounds, rng, *, style="random", td_prob=0.1, skew=40,
                rows=None):
    """Queue ``rounds`` rounds of every group: each member's packets, the groups a member
    belongs to interleaved at random within a round (round by round, so the rings cannot
    deadlock across groups: docs/reduction-engine.md 7), after a random start skew per lane.
    ``rows``: {gid: [{port: raw elements} per round]} for groups whose data is given (others
    get random elements). Returns {gid: [{port: bytes} per round]}."""
    per_port = {p: [] for p in range(bench.N)}
    sent = {spec.gid: [] for spec in specs}
    for r in range(rounds):
        streams = {p: [] for p in range(bench.N)}
        for spec in specs:
            given = (rows or {}).get(spec.gid)
            data = bench.board.add_round(spec, bench.nrng, given[r] if given else None)
            sent[spec.gid].append(data)
            for p in spec.members:
                streams[p].append(member_packets(spec, p, data[p], bench.L, rng,
                                                 bench.p.max_payload, style=style,
                                                 td_prob=td_prob))
        for p in range(bench.N):
            per_port[p] += interleave(rng, streams[p])
    for p in range(bench.N):
        bench.queues[p].append(("delay", rng.randrange(skew + 1)))
        bench.queues[p].extend(per_port[p])
    return sent


def arm_all(bench, specs):
    for spec in specs:
        bench.control.extend(bench.arm(spec))
    for p in range(bench.N):
        for spec in specs:
            bench.queues[p].append(bench.wait_active(spec.gid))


def finish_when_results_done(bench):
    bench.done = lambda: bench.board.pending() == 0


def run_clean_rounds(bench, specs, rounds, rng):
    """Arm every group, feed ``rounds`` rounds of every group, run until every result is in,
    and check that each round completed with nothing rejected."""
    arm_all(bench, specs)
    feed_rounds(bench, specs, rounds, rng)
    finish_when_results_done(bench)
    bench.run()
    check_complete(bench, specs, rounds)
    assert not bench.rejected


def check_complete(bench, specs, rounds):
    """Every group completed ``rounds`` rounds, nothing aborted, and the engine's element
    statistics (nan, infinity, saturation pulses) add up, per group, to the model's events
    of the completed rounds' results."""
    for spec in specs:
        assert bench.board.done[spec.gid] == rounds, \
            f"group {spec.gid}: {bench.board.done[spec.gid]} of {rounds} rounds"
        n = sum(1 for _, g in bench.completed if g == spec.gid)
        assert n == rounds, f"group {spec.gid}: {n} completed events, {rounds} rounds"
    assert not bench.aborted, f"unexpected aborts {bench.aborted}"
    assert not bench.config_errors, f"unexpected config errors {bench.config_errors}"
    check_events(bench)


def check_events(bench):
    zero = dict.fromkeys(ELEMENT_EVENTS, 0)
    print(f"element statistics per group: {bench.events}")
    for g in set(bench.events) | set(bench.board.events):
        got, want = bench.events.get(g, zero), bench.board.events.get(g, zero)
        assert got == want, f"group {g}: element statistics {got}, model {want}"


# ============================================================================================
# tests: formats and parameters
# ============================================================================================

def test_inc_prefix_and_drop_reasons():
    pfx = F.inc_prefix(0x5A, "fp8_e4m3", "max")
    assert pfx >> 24 == F.SF_PREFIX_HEAD == 0x8E
    assert F.field_get(pfx, F.INC_PREFIX, "kind") == F.SfKind.INC
    assert F.field_get(pfx, F.INC_PREFIX, "group") == 0x5A
    assert F.field_get(pfx, F.INC_PREFIX, "elem_type") == DTYPE_NAMES.index("fp8_e4m3") == \
        ElemType.fp8_e4m3.value
    assert F.field_get(pfx, F.INC_PREFIX, "op") == OPS.index("max") == ReduceOp.max.value
    assert F.field_get(pfx, F.INC_PREFIX, "reserved") == 0
    assert F.inc_prefix(3, 6, 0) == F.inc_prefix(3, "fp32", "sum") == 0x8EC0_0603
    for bad in [dict(group=256, elem_type=0, op=0), dict(group=0, elem_type=16, op=0),
                dict(group=0, elem_type="fp64", op=0), dict(group=0, elem_type=0, op="mul")]:
        with pytest.raises(ValueError):
            F.inc_prefix(**bad)
    # existing codes unchanged, the new ones after them
    assert [R.MC_SPILL, R.INC_BAD_GROUP, R.INC_NOT_MEMBER, R.INC_MISMATCH, R.INC_OFFSET,
            R.INC_OUTSIDE] == list(range(13, 19))
    assert F.inc_notice(R.INC_OFFSET, 7, F.IncNoticeKind.REJECTED) == 0x01_07_11


def test_parameters():
    p = SwitchParams()
    assert (p.n_rgroups, p.reduce_buffer_beats, p.reduce_dtypes) == (64, 512, DTYPE_NAMES)
    assert params(dtypes=["fp32", "int8"]).reduce_dtypes == ("int8", "fp32")
    for kw, msg in [(dict(n_rgroups=0), "n_rgroups"), (dict(n_rgroups=257), "n_rgroups"),
                    (dict(reduce_buffer_beats=100), "reduce_buffer_beats"),
                    (dict(reduce_buffer_beats=1), "reduce_buffer_beats"),
                    (dict(reduce_dtypes=("fp64",)), "reduce_dtypes"),
                    (dict(reduce_dtypes="fp32"), "reduce_dtypes"),
                    (dict(reduce_dtypes=()), "reduce_dtypes")]:
        with pytest.raises(ValueError, match=msg):
            SwitchParams(**kw)
    with pytest.raises(TypeError):
        ReductionEngine({"n_ports": 4})
    # a stage memory smaller than one minimum ring (2 x 256 B / 32 B = 16 beats)
    assert SwitchParams(reduce_buffer_beats=8).reduce_min_group_beats == 16
    with pytest.raises(ValueError, match="reduce_buffer_beats 8"):
        ReductionEngine(SwitchParams(reduce_buffer_beats=8))
    SwitchParams(n_ports=4, data_width=64, max_payload=4096)   # the switch alone: any payload


@pytest.mark.parametrize("kw", [
    dict(n_ports=32, data_width=64, n_rgroups=1, reduce_buffer_beats=64),
    dict(n_ports=2, data_width=512, n_rgroups=256, reduce_buffer_beats=16),
    dict(n_ports=5, data_width=256, n_rgroups=3, reduce_buffer_beats=65536),
], ids=["32x64-1g", "2x512-256g", "5x256-3g-64k"])
def test_elaborates_at_parameter_extremes(kw):
    """The engine builds (elaboration and netlist preparation, no simulation) at the edges of
    the parameter ranges: 32 ports, 512-bit beats, 1 and 256 groups, the deepest memory."""
    from amaranth.hdl import Fragment
    dut = ReductionEngine(SwitchParams(max_payload=128, reduce_dtypes=("int8",), **kw))
    Fragment.get(dut, None).prepare()


# ============================================================================================
# tests: reduction results
# ============================================================================================

# dtype, op, saturate, members, size (bytes)
TYPE_CASES = [
    ("int32", "sum", True, (0, 1, 2, 3), 1020),
    ("fp32", "sum", True, (0, 2, 3), 516),
    ("bf16", "sum", True, (1, 3), 604),
    ("fp8_e4m3", "sum", True, (0, 1, 2), 372),
    ("uint8", "max", True, (0, 1, 3), 300),
    ("fp16", "min", True, (0, 3), 428),
]


@pytest.mark.parametrize("dtype, op, sat, members, size", TYPE_CASES,
                         ids=[f"{c[0]}-{c[1]}-{len(c[3])}m" for c in TYPE_CASES])
def test_allreduce_types(dtype, op, sat, members, size, seed):
    """4 ports x 64 bits: one AllReduce group per type/op, 3 rounds back to back, random write
    sizes and alignments (sizes not a multiple of the beat: partial tail beats), ECRC DWs,
    random gaps, skew and result backpressure; the ring (32 beats) is smaller than an
    operation, so members also wait for each other."""
    rng = random.Random(f"{seed}-{dtype}-{op}")
    spec = Group(1, members, dtype, op, size, buf_base=32, buf_beats=32, saturate=sat)
    b = Bench(params(dtypes=(dtype,), beats=128), [spec], rng, timeout=5000)
    arm_all(b, [spec])
    feed_rounds(b, [spec], 3, rng)
    finish_when_results_done(b)
    b.run()
    check_complete(b, [spec], 3)
    assert not b.rejected
    print(f"{b.cycle} cycles, {b.board.result_beats} result beats, lane stalls {b.lane_stall}")


def test_concurrent_groups_and_collectives(seed):
    """3 ports x 128 bits, 8 group slots, four groups at once: AllReduce (int32 xor, ports 0
    and 2), Reduce (fp32 sum to root 1, 64-bit addresses: 4-DW headers in and out) and two
    ReduceScatters (bf16 over 3 members: chunks of 40, 40, 38 elements; int32 over ports 0
    and 2: 16 and 15 elements). 3 rounds each, every member's groups interleaved at random,
    random write sizes, gaps, skew and result backpressure."""
    rng = random.Random(seed)
    specs = [
        Group(0, (0, 2), "int32", "xor", 300, buf_base=0, buf_beats=32),
        Group(5, (0, 1, 2), "fp32", "sum", 400, buf_base=32, buf_beats=32,
              collective=Collective.REDUCE, root=1, base=0x2_0000_0000,
              result_offset=0x3_0000_0000),
        Group(3, (0, 1, 2), "bf16", "sum", 236, buf_base=64, buf_beats=32,
              collective=Collective.REDUCESCATTER),
        Group(6, (0, 2), "int32", "sum", 124, buf_base=96, buf_beats=16,
              collective=Collective.REDUCESCATTER),
    ]
    assert [hi - lo for lo, hi in reduce_scatter_chunks(118, 3)] == [40, 40, 38]
    b = Bench(params(3, 128, dtypes=("int32", "fp32", "bf16"), n_rgroups=8, beats=128), specs,
              rng, gap=0.25, stall=0.3, timeout=5000, max_cycles=30000)
    run_clean_rounds(b, specs, 3, rng)
    print(f"{b.cycle} cycles, {b.board.result_beats} result beats, lane stalls {b.lane_stall}")


def offsets_and_packets(spec, port, data, lanes, rng, max_payload):
    return [(off, k, contribution(spec, port, data, off, k, lanes, rng))
            for off, k in split_writes(rng, spec.size, max_payload)]


def test_rejections_notices_and_recovery(seed):
    """Every rejection reason, mixed into valid traffic of two groups: the bad contribution is
    dropped whole, reported (event with reason, header and prefix; a notice to the sender at
    the group's notify offset, or 0 without a valid group) and both groups still complete
    every round correctly. A packet cut short (``err`` on its last beat) is discarded silently
    and resent."""
    rng = random.Random(seed)
    p = params(dtypes=("int32", "uint8"), beats=128)
    L = p.data_width // 8
    ga = Group(0, (0, 1, 2), "int32", "sum", 200, buf_base=0, buf_beats=32)
    gb = Group(1, (1, 3), "uint8", "max", 136, buf_base=32, buf_beats=32)
    b = Bench(p, [ga, gb], rng, gap=0.2, stall=0.2, timeout=5000)
    arm_all(b, [ga, gb])
    expected = {q: [] for q in range(4)}      # per port: (reason, packet, notice offset)

    def bad(q, pkt, reason, spec):
        if spec is None or reason in (R.INC_BAD_GROUP, R.MALFORMED):
            off = 0
        else:
            off = spec.notify_offset
        expected[q].append((reason, pkt, off))
        return pkt

    lanes_items = {q: [] for q in range(4)}
    for rnd in range(2):
        data = {g.gid: b.board.add_round(g, b.nrng) for g in (ga, gb)}
        per = {q: [] for q in range(4)}
        for g in (ga, gb):
            for q in g.members:
                per[q].append((g, offsets_and_packets(g, q, data[g.gid][q], L, rng,
                                                      p.max_payload)))
        for q in range(4):
            streams = []
            for g, items in per[q]:
                seq = [pkt for _, _, pkt in items]
                if q == 0 and g is ga:
                    o1, k1, p1 = items[1]
                    last_off, _, _ = items[-1]
                    d = data[g.gid][q]
                    extra = [
                        bad(q, items[0][2], R.INC_OFFSET, g),              # duplicate
                        bad(q, contribution(g, q, d, o1 + 4, 1, L, rng), R.INC_OFFSET, g),
                        bad(q, Packet(p1.hdr, F.inc_prefix(0, "int32", "max"),
                                      d[o1:o1 + 4 * k1], L, rng), R.INC_MISMATCH, g),
                        bad(q, Packet(p1.hdr, F.inc_prefix(0, "uint32", "sum"),
                                      d[o1:o1 + 4 * k1], L, rng), R.INC_MISMATCH, g),
                        bad(q, Packet(mwr_header(g.base - 8, 2, q), g.pfx, bytes(8), L, rng),
                            R.INC_OUTSIDE, g),                             # below base
                        bad(q, Packet(mwr_header(g.base + o1, 1, q, first_be=0x7), g.pfx,
                                      bytes(4), L, rng), R.INC_OUTSIDE, g),  # byte enables
                        bad(q, Packet(mwr_header(g.base + o1, 33, q), g.pfx, bytes(132), L,
                                      rng), R.INC_OUTSIDE, g),             # > max payload
                        Packet(p1.hdr, g.pfx, d[o1:o1 + 4 * k1], L, rng, err=True),  # cut
                    ]
                    past_end = bad(q, Packet(mwr_header(g.base + last_off,
                                                        (g.size - last_off) // 4 + 1, q),
                                             g.pfx, bytes(g.size - last_off + 4), L, rng),
                                   R.INC_OUTSIDE, g)
                    seq = seq[:1] + extra + seq[1:-1] + [past_end] + seq[-1:]
                streams.append(seq)
            if q == 3:
                streams.append([
                    bad(q, Packet(mwr_header(ga.base, 2, q), ga.pfx, bytes(8), L, rng),
                        R.INC_NOT_MEMBER, ga),
                    bad(q, Packet(mwr_header(ga.base, 2, q), F.inc_prefix(2, "int32", "sum"),
                                  bytes(8), L, rng), R.INC_BAD_GROUP, None),   # not armed
                    bad(q, Packet(mwr_header(ga.base, 2, q), F.inc_prefix(200, "int32", "sum"),
                                  bytes(8), L, rng), R.INC_BAD_GROUP, None),   # >= n_rgroups
                    bad(q, Packet(mwr_header(gb.base, 2, q),
                                  F.sf_prefix(F.SfKind.HC_SET, mask=3), bytes(8), L, rng),
                        R.MALFORMED, None),                                # not INC
                    bad(q, Packet(mwr_header(gb.base, 2, q) & ~(0b010 << 29),   # MRd + INC
                                  gb.pfx, b"", L, rng), R.MALFORMED, None),
                ])
            lanes_items[q] += interleave(rng, streams)
    for q in range(4):
        b.queues[q].append(("delay", rng.randrange(30)))
        b.queues[q].extend(lanes_items[q])
    finish_when_results_done(b)
    b.done = lambda: b.board.pending() == 0 and len(b.board.notices) == len(b.rejected)
    b.run()
    check_complete(b, [ga, gb], 2)
    for q in range(4):
        got = [(r, h, x) for _, qq, r, h, x in b.rejected if qq == q]
        want = [(r, pkt.hdr, pkt.pfx) for r, pkt, _ in expected[q]]
        assert [g[0] for g in got] == [w[0] for w in want], f"port {q}: reasons"
        assert got == want, f"port {q}: rejected headers/prefixes"
        notices = [(a, n) for d, a, n in b.board.notices if d == q]
        assert len(notices) == len(want), f"port {q}: {len(notices)} notices"
        for (a, n), (r, pkt, off) in zip(notices, expected[q]):
            assert a == off and n == {"reason": r, "group": pkt.pfx & 0xFF,
                                      "kind": F.IncNoticeKind.REJECTED, "zero": 0}, (a, n, r)
    assert b.accepted[0] == sum(1 for x in lanes_items[0] if isinstance(x, Packet)) - \
        len(expected[0]) - 2                                        # the two cut-short ones
    print(f"{len(b.rejected)} rejections, {b.cycle} cycles")


# (config overrides, raw field values, expected cause); group slot 2 of a 4-port, 64-bit,
# 128-beat engine (minimum ring 32 beats) with int32 and fp32 built
CONFIG_CASES = [
    (dict(members=0), {}, ConfigError.NO_MEMBERS),
    ({}, {"collective": 3}, ConfigError.COLLECTIVE),
    (dict(collective=Collective.REDUCE, root=2), {}, ConfigError.ROOT),   # not a member
    (dict(elem_type=ElemType.fp32, op=ReduceOp.xor), {}, ConfigError.TYPE_OP),
    (dict(elem_type=ElemType.uint16), {}, ConfigError.TYPE_OP),       # type not built
    ({}, {"op": 7}, ConfigError.TYPE_OP),
    ({}, {"elem_type": 13}, ConfigError.TYPE_OP),
    (dict(size=0), {}, ConfigError.SIZE),
    (dict(size=6), {}, ConfigError.SIZE),
    (dict(base=0x4000_0002), {}, ConfigError.ALIGN),
    (dict(result_offset=0x1000_0001), {}, ConfigError.ALIGN),
    (dict(notify_offset=0x0F00_0202), {}, ConfigError.ALIGN),
    (dict(buf_beats=48), {}, ConfigError.BUFFER),                   # not a power of two
    (dict(buf_beats=16), {}, ConfigError.BUFFER),                   # below 2 max payloads
    (dict(buf_beats=0), {}, ConfigError.BUFFER),
    (dict(buf_base=100, buf_beats=32), {}, ConfigError.BUFFER),     # past the memory
    (dict(buf_base=128 + 64), {}, ConfigError.BUFFER),              # base past the memory
    (dict(buf_beats=256 + 32), {}, ConfigError.BUFFER),             # would truncate to 32
    (dict(collective=Collective.REDUCE, root=4 + 1), {}, ConfigError.ROOT),  # would truncate to 1
    (dict(collective=Collective.REDUCESCATTER, size=100), {}, ConfigError.CHUNK),  # 9 el x 4 B
]


def test_config_errors_rearm_and_disable(seed):
    """Each invalid configuration, armed by a rising ``enable``, gives a config_error event
    with its cause and leaves the group inactive (contributions: INC_BAD_GROUP). Then a valid
    ReduceScatter is armed by the ``arm`` strobe; a member's half-sent operation is thrown
    away by disabling the group (its packets in flight are dropped, later ones rejected),
    and after re-enabling, a full round completes from a clean state."""
    rng = random.Random(seed)
    p = params(dtypes=("int32", "fp32"), beats=128)
    L = p.data_width // 8
    g = Group(2, (0, 1, 3), "int32", "sum", 96, buf_base=64, buf_beats=32)
    b = Bench(p, [], rng, gap=0.2, stall=0.2, max_cycles=6000)
    dut = b.dut
    ctl = b.control
    for override, raw, cause in CONFIG_CASES:
        n_before = []

        def program(ctx, bench, override=override, raw=raw, n_before=n_before):
            ctx.set(dut.config[2], g.config(enable=0, **override))
            for name, value in raw.items():
                ctx.set(getattr(dut.config[2], name).as_value(), value)
            n_before.append(len(bench.config_errors))
        ctl.append(("do", program))
        ctl.append(("delay", 1))
        ctl.append(("do", lambda ctx, bench: ctx.set(dut.config[2].enable, 1)))
        ctl.append(("wait", lambda n_before=n_before: len(b.config_errors) > n_before[0]))
        ctl.append(("do", lambda ctx, bench, cause=cause: (
            bench.config_errors[-1][1:] == (2, cause) or
            pytest.fail(f"config error {bench.config_errors[-1]}, expected {cause}"),
            bench.active & 4 and pytest.fail("group active after a config error"))))
    # a contribution to the failed group is rejected
    done_errors = ("wait", lambda: len(b.config_errors) == len(CONFIG_CASES))
    b.queues[0].extend([done_errors, Packet(mwr_header(g.base, 2, 0), g.pfx, bytes(8), L, rng)])
    ctl.append(("wait", lambda: len(b.rejected) == 1))

    # a valid ReduceScatter (3 members: chunks of 8 elements = 32 B = 4 beats), armed by the
    # strobe while enable stays high
    gs = Group(2, (0, 1, 3), "int32", "sum", 96, buf_base=64, buf_beats=32,
               collective=Collective.REDUCESCATTER)
    b.board = Scoreboard([gs], L)

    def program_rs(ctx, bench):
        ctx.set(dut.config[2], gs.config(enable=1))
        ctx.set(dut.arm, 4)

    ctl.append(("do", program_rs))
    ctl.append(("delay", 1))
    ctl.append(("do", lambda ctx, bench: ctx.set(dut.arm, 0)))
    ctl.append(("wait", lambda: b.active & 4))
    # member 0 sends half an operation, then the group is disabled and re-enabled
    junk = bytes(rng.randbytes(gs.size))
    half = [contribution(gs, 0, junk, off, k, L, rng)
            for off, k in split_writes(rng, gs.size // 2, p.max_payload)]
    b.queues[0].extend([("wait", lambda: b.active & 4)] + half)
    sent_half = ("wait", lambda: b.accepted[0] == len(half))
    ctl.append(sent_half)
    ctl.append(("do", lambda ctx, bench: ctx.set(dut.config[2].enable, 0)))
    ctl.append(("wait", lambda: not b.active & 4))
    late = Packet(mwr_header(gs.base + 48, 2, 0), gs.pfx, bytes(8), L, rng)
    b.queues[0].extend([("wait", lambda: not b.active & 4), late])
    ctl.append(("wait", lambda: len(b.rejected) == 2))
    ctl.append(("do", lambda ctx, bench: ctx.set(dut.config[2].enable, 1)))
    ctl.append(("wait", lambda: b.active & 4))
    data = b.board.add_round(gs, b.nrng)
    for q in gs.members:
        b.queues[q].append(("wait", lambda: len(b.rejected) == 2 and b.active & 4))
        b.queues[q].extend(member_packets(gs, q, data[q], L, rng, p.max_payload))
    finish_when_results_done(b)
    b.run()
    assert [c for _, _, c in b.config_errors] == [c for _, _, c in CONFIG_CASES]
    assert b.rejects() == [(0, R.INC_BAD_GROUP), (0, R.INC_BAD_GROUP)]
    assert b.board.done[2] == 1 and [g_ for _, g_ in b.completed] == [2]
    print(f"{b.cycle} cycles")


def test_timeout_abort_and_clean_next_round(seed):
    """Member 2 stops half way through an operation: after ``timeout`` cycles without
    progress the operation is aborted (one event, an abort notice to every member), the
    group's state is reset; member 2's late rest of the round is rejected (INC_OFFSET), and
    the next round, started at offset 0 by everyone, completes correctly. A group whose
    members are merely slow (gaps shorter than the timeout) is never aborted."""
    rng = random.Random(seed)
    p = params(dtypes=("int32",), beats=128)
    L = p.data_width // 8
    g = Group(0, (0, 2), "int32", "sum", 512, buf_base=0, buf_beats=64)
    slow = Group(1, (1, 3), "int32", "sum", 64, buf_base=64, buf_beats=32)
    timeout = 150
    b = Bench(p, [g, slow], rng, gap=0.2, stall=0.2, timeout=timeout, max_cycles=8000)
    arm_all(b, [g, slow])
    r1 = b.board.add_round(g, b.nrng)
    b.queues[0].extend(member_packets(g, 0, r1[0], L, rng, p.max_payload))
    items = offsets_and_packets(g, 2, r1[2], L, rng, p.max_payload)
    first = [pkt for off, _, pkt in items if off < 256]
    rest = [pkt for off, _, pkt in items if off >= 256]
    b.queues[2].extend(first)
    b.queues[2].append(("wait", lambda: b.aborted))
    b.queues[2].extend(rest)
    # the slow group: packets with pauses of up to 2/3 of the timeout
    sr = b.board.add_round(slow, b.nrng)
    for q in slow.members:
        for pkt in member_packets(slow, q, sr[q], L, rng, 16):
            b.queues[q].extend([("delay", rng.randrange(timeout * 2 // 3)), pkt])
    # round 2 after the abort and the rejections of the late packets
    r2 = b.board.add_round(g, b.nrng)
    for q in g.members:
        b.queues[q].append(("wait", lambda: b.aborted and len(b.rejected) == len(rest)))
        b.queues[q].extend(member_packets(g, q, r2[q], L, rng, p.max_payload))
    b.done = lambda: b.board.pending() == 0 and len(b.board.notices) == 2 + len(rest)
    b.run()
    assert [grp for _, grp in b.aborted] == [0]
    assert b.rejects() == [(2, R.INC_OFFSET)] * len(rest)
    aborts = sorted((d, a, n["kind"], n["group"], n["reason"]) for d, a, n in b.board.notices
                    if n["kind"] == F.IncNoticeKind.ABORTED)
    assert aborts == [(q, g.notify_offset, 2, 0, 0) for q in g.members]
    assert b.board.done == {0: 1, 1: 1}
    assert sorted(grp for _, grp in b.completed) == [0, 1]
    # the abort comes `timeout` cycles (plus the few of the last claims) after the group's
    # last accepted contribution
    last = max(c for c, q, pkt in b.sent if pkt.pfx == g.pfx and c < b.aborted[0][0])
    assert timeout <= b.aborted[0][0] - last <= timeout + 20, (last, b.aborted)
    print(f"last contribution at cycle {last}, abort at {b.aborted[0][0]}, {b.cycle} cycles")


def test_ring_backpressure_member_far_ahead(seed):
    """Member 0 sends two whole operations (2 x 128 beats) into a 32-beat ring before the
    others start: its lane waits (ready low, nothing dropped) and every result is right."""
    rng = random.Random(seed)
    p = params(dtypes=("int32",), beats=64)
    L = p.data_width // 8
    g = Group(0, (0, 1, 2, 3), "int32", "sum", 1024, buf_base=32, buf_beats=32)
    b = Bench(p, [g], rng, gap=[0.0, 0.2, 0.2, 0.2], stall=0.1, max_cycles=8000)
    arm_all(b, [g])
    rounds = [b.board.add_round(g, b.nrng) for _ in range(2)]
    for q in g.members:
        if q:
            b.queues[q].append(("delay", 600))
        for data in rounds:
            b.queues[q].extend(member_packets(g, q, data[q], L, rng, p.max_payload))
    finish_when_results_done(b)
    b.run()
    check_complete(b, [g], 2)
    assert not b.rejected
    assert b.lane_stall[0] > 500, b.lane_stall
    print(f"lane stalls {b.lane_stall}, {b.cycle} cycles")


@pytest.mark.parametrize("n_ports, width", [(4, 64), (3, 128)])
def test_throughput_one_beat_per_cycle(n_ports, width, seed):
    """One group, every member streaming maximum-payload writes back to back, the result
    always ready: result beats per cycle between the first and the last result beat must be
    at least 0.95 (measured in simulated cycles)."""
    rng = random.Random(seed)
    p = params(n_ports, width, dtypes=("int32",), beats=128)
    L = p.data_width // 8
    beats = 1024
    g = Group(0, tuple(range(n_ports)), "int32", "sum", beats * L, buf_base=0, buf_beats=64)
    b = Bench(p, [g], rng, gap=0.0, stall=0.0, max_cycles=4 * beats)
    arm_all(b, [g])
    data = b.board.add_round(g, b.nrng)
    for q in g.members:
        b.queues[q].extend(member_packets(g, q, data[q], L, rng, p.max_payload, style="max",
                                          td_prob=0))
    finish_when_results_done(b)
    b.run()
    check_complete(b, [g], 1)
    span = b.out_cycles[-1] - b.out_cycles[0] + 1
    rate = len(b.out_cycles) / span
    # latency: from the edge the last member's first packet completes to the first result beat
    first_commit = max(min(c for c, q_, _ in b.sent if q_ == q) for q in g.members)
    print(f"latency: first packets complete at cycle {first_commit}, first result beat "
          f"transferred at {b.out_cycles[0]} ({b.out_cycles[0] - first_commit} cycles)")
    print(f"{n_ports} ports x {width} bits: {len(b.out_cycles)} result beats in {span} cycles "
          f"= {rate:.4f} beats/cycle; first result beat at cycle {b.out_cycles[0]}")
    assert len(b.out_cycles) == beats
    assert rate >= 0.95


@pytest.mark.parametrize("len_dw", [31, 32], ids=["mid-packet", "tail-flush"])
def test_abort_releases_a_lane_waiting_for_ring_space(len_dw, seed):
    """Member 0 fills the 32-beat ring and waits for space only member 1 could free; member 1
    never sends. Its writes are not beat aligned, so it waits inside a packet: between two
    beats (31-DW writes) or with the last beat taken and the spilled tail not yet written
    (32-DW writes). The timeout aborts the operation: lane 0 drops the packet it was stuck in
    (nothing half applied: it is neither accepted nor reported), its later packets of that
    round are rejected (INC_OFFSET), and a new round from offset 0 completes."""
    rng = random.Random(f"{seed}-{len_dw}")
    p = params(dtypes=("int32",), beats=64)
    L = p.data_width // 8
    g = Group(0, (0, 1), "int32", "sum", 1024, buf_base=0, buf_beats=32)
    b = Bench(p, [g], rng, gap=0.1, stall=0.1, timeout=100, max_cycles=6000)
    arm_all(b, [g])
    junk = b.board.add_round(g, b.nrng)[0]         # the round the abort throws away
    stuck = [contribution(g, 0, junk, 0, 1, L, rng)] + [
        contribution(g, 0, junk, off, min(len_dw, (g.size - off) // 4), L, rng)
        for off in range(4, g.size, 4 * len_dw)]
    b.queues[0].extend(stuck)
    data = b.board.add_round(g, b.nrng)
    b.queues[0].extend(member_packets(g, 0, data[0], L, rng, p.max_payload))
    b.queues[1].append(("wait", lambda: b.aborted))
    b.queues[1].extend(member_packets(g, 1, data[1], L, rng, p.max_payload))
    b.done = lambda: b.board.pending() == 0 and len(b.board.notices) == len(b.rejected) + 2
    b.run()
    assert [grp for _, grp in b.aborted] == [0]
    abort = b.aborted[0][0]
    before = sum(1 for c, q in b.accepted_at if q == 0 and c < abort)
    late = len(b.rejected)
    assert b.rejects() == [(0, R.INC_OFFSET)] * late and late >= 1
    assert before + 1 + late == len(stuck), (before, late, len(stuck))
    # where the stuck packet was: its last beat sent before the abort only when flushing
    last_sent = [c for c, q, pkt in b.sent if pkt is stuck[before]][0]
    assert (last_sent < abort) == (len_dw == 32), (last_sent, abort)
    assert b.board.done[0] == 1 and [grp for _, grp in b.completed] == [0]
    assert b.lane_stall[0] > 50
    print(f"lane 0 stalled {b.lane_stall[0]} cycles, abort at {abort}, {before} packets "
          f"before it, {late} rejected after it")


def test_reducescatter_reduce_short_and_empty_chunks(seed):
    """ReduceScatter chunk edge cases (5 elements over 4 members: 2, 2, 1, 0; one element over
    4: everything to the first member), a one-member AllReduce, a Reduce to a root among two
    members, and an fp8 E5M2 sum without saturation; 3 rounds each, concurrently."""
    rng = random.Random(seed)
    specs = [
        Group(0, (0, 1, 2, 3), "int32", "sum", 20, buf_base=0, buf_beats=32,
              collective=Collective.REDUCESCATTER),
        Group(1, (0, 1, 2, 3), "int32", "max", 4, buf_base=32, buf_beats=32,
              collective=Collective.REDUCESCATTER),
        Group(2, (2,), "int32", "min", 40, buf_base=64, buf_beats=32),
        Group(3, (1, 3), "int32", "and", 36, buf_base=96, buf_beats=32,
              collective=Collective.REDUCE, root=3),
        Group(4, (0, 2, 3), "fp8_e5m2", "sum", 52, buf_base=128, buf_beats=32, saturate=False),
    ]
    assert [hi - lo for lo, hi in reduce_scatter_chunks(5, 4)] == [2, 2, 1, 0]
    b = Bench(params(dtypes=("int32", "fp8_e5m2"), n_rgroups=5, beats=256), specs, rng,
              gap=0.3, stall=0.3, timeout=5000)
    run_clean_rounds(b, specs, 3, rng)


def random_groups(rng, p, n_groups):
    """Random valid group configurations: distinct slots, rings carved out of the stage
    memory (each holding a whole round, see feed_rounds), random types, ops, member sets,
    collectives, sizes (ReduceScatter chunks beat aligned) and 32- or 64-bit addresses."""
    N, L, D = p.n_ports, p.data_width // 8, p.reduce_buffer_beats
    gids = rng.sample(range(p.n_rgroups), n_groups)
    share = D // n_groups
    specs = []
    for i, gid in enumerate(gids):
        beats = rng.choice([b for b in (16, 32, 64, 128) if p.reduce_min_group_beats <= b <= share])
        dtype = rng.choice(p.reduce_dtypes)
        op = rng.choice(["sum", "min", "max"] if DTYPES[dtype].is_float else list(OPS))
        members = tuple(sorted(rng.sample(range(N), rng.randint(1, N))))
        coll = rng.choice(list(Collective))
        es = DTYPES[dtype].width // 8
        if coll == Collective.REDUCESCATTER:
            m, cap = len(members), beats * L // es      # elements that fit the ring
            ok = lambda n_: n_ * es % 4 == 0            # noqa: E731 (size a multiple of 4)
            if m == 1:
                sizes = [n_ for n_ in range(1, cap + 1) if ok(n_)]
            else:                # chunks of c elements, c * es a multiple of L: ceil(n/m) == c
                sizes = [n_ for c in range(L // es, cap + 1, L // es)
                         for n_ in range((c - 1) * m + 1, min(c * m, cap) + 1) if ok(n_)]
                sizes += [1] if es == 4 else []         # one element: one chunk has it all
            if sizes:
                size = es * rng.choice(sizes)
            else:
                coll = Collective.ALLREDUCE
        if coll != Collective.REDUCESCATTER:
            size = 4 * rng.randint(1, beats * L // 4)
        hi = rng.choice([0, 0, 1 << 32, 0x7_0000_0000])
        specs.append(Group(gid, members, dtype, op, size, buf_base=i * share, buf_beats=beats,
                           saturate=rng.random() < 0.5, collective=coll,
                           root=rng.choice(members), base=hi + 0x4000_0000 + gid * 0x0010_0000,
                           result_offset=rng.choice([0, 1 << 40]) + ((gid + 1) << 28)))
    return specs


@pytest.mark.parametrize("n_ports, width, dtypes", [
    (4, 64, ("int16", "fp16", "fp8_e5m2")),
    (3, 128, ("uint32", "bf16", "int8")),
])
def test_random_configurations(n_ports, width, dtypes, seed):
    """Random groups (random_groups) on random traffic: 2 to 4 groups, 4 rounds each."""
    rng = random.Random(f"{seed}-{n_ports}-{width}")
    p = params(n_ports, width, dtypes=dtypes, n_rgroups=8, beats=256)
    for trial in range(2):
        specs = random_groups(rng, p, rng.randint(2, 4))
        for s_ in specs:
            print(f"  trial {trial}: group {s_.gid} {s_.dtype} {s_.op} sat={int(s_.saturate)} "
                  f"{s_.collective.name} members {s_.members} root {s_.root} size {s_.size} "
                  f"ring {s_.buf_beats}")
        b = Bench(p, specs, rng, gap=rng.choice([0.0, 0.2, 0.5]),
                  stall=rng.choice([0.0, 0.3, 0.6]), timeout=8000, max_cycles=40000)
        run_clean_rounds(b, specs, 4, rng)


# fp8 sums worked out by hand, one case per lane of a 64-bit beat (member values by lane)
E4M3_CASES = [[0x7E, 0x7E, 0x00],       # 896 > 448: saturated (saturate off: NaN)
              [0x7E, 0x58, 0x00],       # 464: a tie, rounds to 448 even: a genuine max
              [0x76, 0x76, 0x00],       # 224 + 224 = 448 exactly
              [0xFE, 0xD9, 0x00],       # -466 rounds to -480: saturated to -448
              [0x7F, 0x7E, 0x7E],       # a NaN: NaN
              [0x38, 0x38, 0x00],       # 1 + 1
              [0x7E, 0x7E, 0xFE],       # 448 exactly
              [0x77, 0x77, 0x00]]       # 480: saturated
E5M2_CASES = [[0x7C, 0x01, 0x00],       # +inf: saturated to 57344 (off: +inf)
              [0x7B, 0x68, 0x00],       # 59392 rounds back to 57344: genuine
              [0x7B, 0x6C, 0x00],       # 61440, a tie: overflow: saturated (off: +inf)
              [0x7C, 0xFC, 0x00],       # +inf + -inf: NaN
              [0xFC, 0x7B, 0x7B],       # -inf: saturated to -57344 (off: -inf)
              [0x7B, 0x7B, 0xFB],       # 57344 exactly
              [0x3C, 0x3C, 0x00],       # 1 + 1
              [0x7D, 0x00, 0x00]]       # a NaN
FP16_CASES = [[0x7BFF, 0x4C00, 0x0000],  # 65504 + 16: a tie, overflow: +inf
              [0x7BFF, 0x4800, 0x0000],  # 65504 + 8: 65504
              [0x7E00, 0x3C00, 0x3C00],  # NaN
              [0xFC00, 0x3C00, 0x7C00]]  # sum: -inf + +inf, NaN; max: +inf


def case_rows(cases, members, tiles, dtype):
    """{port: raw elements}: member i of ``members`` gets column i of every case, the cases
    repeated ``tiles`` times."""
    cols = np.array(cases * tiles, dtype=np.uint64).T
    return {p: cols[i].astype(DTYPES[dtype].container) for i, p in enumerate(members)}


def test_element_statistics_directed(seed):
    """The nan / infinity / saturation pulses per group on hand-worked results: fp8 E4M3
    and E5M2 sums with saturate on and off (saturated results, genuine max-finite sums, NaNs,
    infinity inputs), an fp16 min/max and sum (overflow is an infinity, never a saturation),
    an int8 sum (never counts); AllReduce (counted once, not per receiver), ReduceScatter
    and Reduce; 8 elements per 64-bit beat, so every pulse counts several at once."""
    rng = random.Random(seed)
    m3 = (0, 1, 3)
    specs = [
        Group(0, m3, "fp8_e4m3", "sum", 96, buf_base=0, buf_beats=32),
        Group(1, m3, "fp8_e4m3", "sum", 96, buf_base=32, buf_beats=32, saturate=False,
              collective=Collective.REDUCESCATTER),
        Group(2, m3, "fp8_e5m2", "sum", 96, buf_base=64, buf_beats=32,
              collective=Collective.REDUCE, root=3),
        Group(3, m3, "fp8_e5m2", "sum", 96, buf_base=96, buf_beats=32, saturate=False),
        Group(4, m3, "fp16", "sum", 96, buf_base=128, buf_beats=32),
        Group(5, m3, "fp16", "max", 96, buf_base=160, buf_beats=32,
              collective=Collective.REDUCESCATTER),
        Group(6, m3, "int8", "sum", 96, buf_base=192, buf_beats=32),
    ]
    cases = {"fp8_e4m3": E4M3_CASES, "fp8_e5m2": E5M2_CASES, "fp16": FP16_CASES,
             "int8": E4M3_CASES}
    tiles = {"fp8_e4m3": 12, "fp8_e5m2": 12, "fp16": 12, "int8": 12}
    rounds = 2
    rows = {s_.gid: [case_rows(cases[s_.dtype], m3, tiles[s_.dtype], s_.dtype)] * rounds
            for s_ in specs}
    b = Bench(params(4, 64, dtypes=("fp8_e4m3", "fp8_e5m2", "fp16", "int8"), n_rgroups=8),
              specs, rng, timeout=5000, max_cycles=30000)
    arm_all(b, specs)
    feed_rounds(b, specs, rounds, rng, rows=rows)
    finish_when_results_done(b)
    b.run()
    check_complete(b, specs, rounds)
    # the hand counts: per 8 cases (one beat of fp8), per 4 cases of fp16
    want = {0: (12, 0, 36), 1: (48, 0, 0), 2: (24, 0, 36), 3: (24, 36, 0), 4: (24, 12, 0),
            5: (12, 12, 0), 6: (0, 0, 0)}
    for g, (nan, inf, sat) in want.items():
        got = b.events.get(g, dict.fromkeys(ELEMENT_EVENTS, 0))
        assert got == {"nan": rounds * nan, "infinity": rounds * inf,
                       "saturation": rounds * sat}, (g, got)
    assert b.max_amount == 4 and 6 not in b.events       # E4M3 off: 4 NaNs in every beat
    print(f"{b.cycle} cycles: {b.events}")


def test_element_statistics_only_within_keep(seed):
    """A round that ends part way through a beat: the reducer also reduces the rest of that
    ring beat, left there by an earlier round (NaNs here), but only elements within the
    result's keep count. 2 members, E4M3, 156-byte rounds (19.5 beats) in a 32-beat ring:
    round 1's last beat is ring beat 7, whose upper half round 0 filled with NaNs."""
    rng = random.Random(seed)
    spec = Group(2, (1, 2), "fp8_e4m3", "sum", 156, buf_base=32, buf_beats=32)
    nans = {p: np.full(156, 0x7F, np.uint8) for p in spec.members}
    ones = {p: np.full(156, 0x38, np.uint8) for p in spec.members}
    b = Bench(params(4, 64, dtypes=("fp8_e4m3",)), [spec], rng, timeout=5000)
    arm_all(b, [spec])
    feed_rounds(b, [spec], 2, rng, rows={spec.gid: [nans, ones]}, skew=0)
    finish_when_results_done(b)
    b.run()
    check_complete(b, [spec], 2)
    assert b.events[spec.gid] == {"nan": 156, "infinity": 0, "saturation": 0}
    assert b.max_amount == 8                             # a whole beat of NaNs at once


def _inject(bench, bits):
    """Control item: drive ``parity_inject``."""
    def do(ctx, b):
        ctx.set(b.dut.parity_inject, bits)
    return ("do", do)


def test_lane_snapshot_parity_rejects_until_rearmed(seed):
    """A group armed with ``parity_inject`` bit 0 has every lane snapshot entry stored with a
    wrong parity bit: each contribution to it, from a member or not, is rejected as PARITY
    (event with header and prefix, a REJECTED notice at offset 0: the group's configuration,
    its notify offset included, is not trusted); another group is unaffected. Re-armed
    without the injection, the group completes a round."""
    rng = random.Random(seed)
    p = params(dtypes=("int32",), beats=128)
    L = p.data_width // 8
    g = Group(0, (0, 2), "int32", "sum", 64, buf_base=0, buf_beats=32)
    other = Group(1, (1, 3), "int32", "sum", 64, buf_base=32, buf_beats=32)
    b = Bench(p, [g, other], rng, gap=0.2, stall=0.2)
    b.control.append(_inject(b, 0b01))
    b.control.extend(b.arm(g))
    b.control.append(_inject(b, 0))
    b.control.extend(b.arm(other))
    for q in range(4):
        b.queues[q].append(b.wait_active(g.gid))
        b.queues[q].append(b.wait_active(other.gid))
    bad = b.board.add_round(g, b.nrng)
    b.board.drop_round(g.gid)                   # never reduced: every packet is rejected
    good = b.board.add_round(other, b.nrng)
    sent_bad = []
    for q in g.members:
        pkt = contribution(g, q, bad[q], 0, 16, L, rng)
        sent_bad.append((q, pkt))
        b.queues[q].append(pkt)
    stranger = contribution(g, 1, bytes(64), 0, 16, L, rng)       # port 1 is no member
    sent_bad.append((1, stranger))
    b.queues[1].append(stranger)
    for q in other.members:
        b.queues[q].extend(member_packets(other, q, good[q], L, rng, p.max_payload))
    # then re-arm g cleanly (after the rejections) and run one round
    b.control.append(("wait", lambda: len(b.rejected) == len(sent_bad)))
    b.control.extend(b.arm(g))
    again = b.board.add_round(g, b.nrng)
    for q in g.members:
        b.queues[q].append(("wait", lambda: len(b.rejected) == len(sent_bad) and
                            not b.control))
        b.queues[q].extend(member_packets(g, q, again[q], L, rng, p.max_payload))
    b.done = lambda: b.board.pending() == 0 and len(b.board.notices) == len(sent_bad)
    b.run()
    assert sorted((q, r) for _, q, r, _, _ in b.rejected) == \
        sorted((q, R.PARITY) for q, _ in sent_bad)
    assert sorted((q, h, x) for _, q, _, h, x in b.rejected) == \
        sorted((q, pkt.hdr, pkt.pfx) for q, pkt in sent_bad)
    notices = sorted((d, a, n["kind"], n["group"], n["reason"]) for d, a, n in b.board.notices)
    assert notices == sorted((q, 0, F.IncNoticeKind.REJECTED, g.gid, R.PARITY)
                             for q, _ in sent_bad)
    assert b.board.done == {0: 1, 1: 1}
    assert not b.aborted


def test_scheduler_snapshot_parity_aborts(seed):
    """A group armed with ``parity_inject`` bit 1 has its scheduler snapshot stored with a
    wrong parity bit: the contributions are accepted, but when the scheduler picks the group
    it finds the error, emits no result, pulses ``parity_error`` and aborts the operation
    (``aborted``, an ABORTED notice to every member at the notify offset). Re-armed without
    the injection, the group completes a round."""
    rng = random.Random(seed)
    p = params(dtypes=("int32",), beats=128)
    L = p.data_width // 8
    g = Group(0, (0, 2, 3), "int32", "sum", 64, buf_base=0, buf_beats=32)
    b = Bench(p, [g], rng, gap=0.2, stall=0.2)
    errors = []
    b.control.append(_inject(b, 0b10))
    b.control.extend(b.arm(g))
    b.control.append(_inject(b, 0))
    first = b.board.add_round(g, b.nrng)
    for q in g.members:
        b.queues[q].append(b.wait_active(g.gid))
        b.queues[q].append(contribution(g, q, first[q], 0, 16, L, rng))
    b.control.append(("wait", lambda: b.aborted))
    b.control.extend(b.arm(g))
    again = b.board.add_round(g, b.nrng)
    for q in g.members:
        b.queues[q].append(("wait", lambda: b.aborted and not b.control))
        b.queues[q].extend(member_packets(g, q, again[q], L, rng, p.max_payload))
    b.done = lambda: b.board.pending() == 0 and len(b.board.notices) == len(g.members)

    async def watch(ctx):
        async for _, _, pulse in ctx.tick().sample(b.dut.parity_error):
            if pulse:
                errors.append(b.cycle)

    sim = Simulator(b.dut)
    sim.add_clock(1e-8)
    sim.add_testbench(b.testbench)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert len(errors) == 1 and [grp for _, grp in b.aborted] == [g.gid]
    assert errors[0] <= b.aborted[0][0] <= errors[0] + 4
    before = sorted(q for c, q in b.accepted_at if c < b.aborted[0][0])
    assert before == list(g.members), "the first round's contributions were not accepted"
    notices = sorted((d, a, n["kind"], n["group"], n["reason"]) for d, a, n in b.board.notices)
    assert notices == [(q, g.notify_offset, F.IncNoticeKind.ABORTED, g.gid, 0)
                       for q in g.members]
    assert b.board.done == {0: 1}
    assert not b.rejected
