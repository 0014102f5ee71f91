# amaranth: UnusedElaboratable=no
"""Block-level tests of the telemetry blocks (hdl/telemetry.py) in Amaranth's simulator:
latency buckets and histogram, counter tables, header capture, link monitor."""

import os
import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from smartfabric.hdl.telemetry import (
    CaptureMode, CounterTable, GroupStatistics, HeaderCapture, LatencyHistogram, LatencyTimer,
    LinkMonitor, elapsed_cycles, latency_bucket,
)
from smartfabric.models import capture_format as CF
from smartfabric.models import tlp_build as tb
from smartfabric.models.capture_format import CaptureKind, HeaderCaptureModel, capture_filter
from smartfabric.models.formats import DropReason, SfKind, sf_prefix
from smartfabric.verif.capture import decode_capture, format_capture_table, ring_order


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if os.environ.get("WAVES"):
        with sim.write_vcd(f"{type(dut).__name__}.vcd"):
            sim.run()
    else:
        sim.run()


# ----------------------------------------------------------------------------------------------
# latency bucket and elapsed-cycle helpers
# ----------------------------------------------------------------------------------------------

BOUNDARY_LATENCIES = sorted({0, 1, 2, 3, 4, 5, 7, 8, 9, 65535, 40000}
                            | {(1 << k) - 1 for k in range(1, 17)} | {1 << k for k in range(16)})


@pytest.mark.parametrize("n_buckets", [2, 4, 16, 17, 18, 24])
def test_latency_bucket_boundaries(n_buckets):
    """The priority encoder against the reference at every power-of-two boundary (bucket k
    holds [2^(k-1), 2^k), the last bucket saturates), with and without saturation reachable
    from a 16-bit latency."""
    m = Module()
    latency = Signal(16)
    bucket = Signal(range(n_buckets))
    m.d.comb += bucket.eq(latency_bucket(latency, n_buckets))

    async def bench(ctx):
        for v in BOUNDARY_LATENCIES:
            ctx.set(latency, v)
            assert ctx.get(bucket) == CF.latency_bucket(v, n_buckets), (v, n_buckets)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_latency_bucket_reference():
    assert [CF.latency_bucket(v, 16) for v in (0, 1, 2, 3, 4, 7, 8, 16383, 16384, 65535)] == \
        [0, 1, 2, 2, 3, 3, 4, 14, 15, 15]
    assert CF.bucket_bounds(0, 16) == (0, 0)
    assert CF.bucket_bounds(3, 16) == (4, 7)
    assert CF.bucket_bounds(15, 16) == (1 << 14, None)
    with pytest.raises(ValueError):
        latency_bucket(Signal(4), 1)


def test_elapsed_cycles_wraps(seed):
    """(now - stamp) mod 2^16, including stamps taken before the counter wrapped."""
    rng = random.Random(seed)
    m = Module()
    now, stamp, out = Signal(16), Signal(16), Signal(16)
    m.d.comb += out.eq(elapsed_cycles(now, stamp))
    cases = [(5, 65530), (0, 65535), (100, 100), (65535, 0), (3, 0)]
    cases += [(rng.randrange(1 << 16), rng.randrange(1 << 16)) for _ in range(50)]

    async def bench(ctx):
        for n, s in cases:
            ctx.set(now, n)
            ctx.set(stamp, s)
            assert ctx.get(out) == CF.elapsed_cycles(n, s), (n, s)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


# ----------------------------------------------------------------------------------------------
# counter table and histogram
# ----------------------------------------------------------------------------------------------

async def read_counter(ctx, dut, index):
    """Read through the 1-cycle read port."""
    ctx.set(dut.read_index, index)
    await ctx.tick()
    return ctx.get(dut.read_data)


async def read_all(ctx, dut, n):
    await ctx.tick()
    await ctx.tick()        # let the last increment land (visible two edges later)
    return [await read_counter(ctx, dut, k) for k in range(n)]


async def feed(ctx, dut, latencies, gaps=None):
    for i, v in enumerate(latencies):
        ctx.set(dut.sample_valid, 1)
        ctx.set(dut.latency, v)
        await ctx.tick()
        if gaps and gaps[i]:
            ctx.set(dut.sample_valid, 0)
            for _ in range(gaps[i]):
                await ctx.tick()
    ctx.set(dut.sample_valid, 0)


def expected_histogram(latencies, n_buckets, count_width=32):
    hist = [0] * n_buckets
    for v in latencies:
        k = CF.latency_bucket(v, n_buckets)
        hist[k] = min(hist[k] + 1, (1 << count_width) - 1)
    return hist


def test_histogram_boundaries():
    """Every boundary latency lands in its bucket, back to back (same bucket repeatedly:
    exercises the read-modify-write forwarding)."""
    dut = LatencyHistogram(n_buckets=16)
    samples = BOUNDARY_LATENCIES + [3, 3, 3, 0, 0, 65535, 65535]
    got = {}

    async def bench(ctx):
        await feed(ctx, dut, samples)
        got["hist"] = await read_all(ctx, dut, 16)

    run(dut, bench)
    assert got["hist"] == expected_histogram(samples, 16)


def test_histogram_saturation_and_clear():
    """Counters stop at 2^count_width - 1; clear drops the samples presented in its own cycle
    and the one before, and counts from the next cycle on."""
    dut = LatencyHistogram(n_buckets=4, count_width=3, latency_width=8)
    got = {}

    async def bench(ctx):
        await feed(ctx, dut, [5] * 12 + [0, 1])           # bucket 3 saturates at 7
        got["before"] = await read_all(ctx, dut, 4)
        # samples at cycles t-2, t-1, t, t+1 with clear in cycle t
        for k, v in enumerate([0, 1, 2, 200]):
            ctx.set(dut.sample_valid, 1)
            ctx.set(dut.latency, v)
            ctx.set(dut.clear, k == 2)
            await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.sample_valid, 0)
        got["after"] = await read_all(ctx, dut, 4)

    run(dut, bench)
    assert got["before"] == [1, 1, 0, 7]
    # 0 (t-2) was counted then cleared, 1 (t-1) and 2 (t) discarded, 200 (t+1) counted
    assert got["after"] == [0, 0, 0, 1]


def test_histogram_random(seed):
    """Random latencies with random gaps, small counters (saturation), against the model."""
    rng = random.Random(seed)
    dut = LatencyHistogram(n_buckets=8, count_width=5, latency_width=10)
    samples = [rng.choice([0, 1, rng.randrange(1 << 10), rng.randrange(64)])
               for _ in range(150)]
    gaps = [rng.choice([0, 0, 0, 1, 3]) for _ in samples]
    got = {}

    async def bench(ctx):
        await feed(ctx, dut, samples, gaps)
        got["hist"] = await read_all(ctx, dut, 8)

    run(dut, bench)
    assert got["hist"] == expected_histogram(samples, 8, 5)


def test_counter_table_read_latency():
    """read_data shows read_index's counter exactly one edge after the index is sampled; an
    increment is visible to a read sampled two edges after it was presented."""
    dut = CounterTable(depth=4, count_width=8)
    seen = []

    async def bench(ctx):
        ctx.set(dut.read_index, 2)
        ctx.set(dut.inc_valid, 1)
        ctx.set(dut.inc_index, 2)
        await ctx.tick()                        # edge 1: increment presented (cycle 0)
        ctx.set(dut.inc_valid, 0)
        seen.append(ctx.get(dut.read_data))     # index sampled at edge 1: not yet written
        await ctx.tick()                        # edge 2: written
        seen.append(ctx.get(dut.read_data))     # sampled at edge 2, write at edge 2 not seen
        await ctx.tick()
        seen.append(ctx.get(dut.read_data))     # sampled at edge 3: 1
        ctx.set(dut.read_index, 0)
        seen.append(ctx.get(dut.read_data))     # unchanged until the next edge
        await ctx.tick()
        seen.append(ctx.get(dut.read_data))     # counter 0

    run(dut, bench)
    assert seen == [0, 0, 1, 1, 0]


def test_latency_timer_stamps_across_wrap():
    """End to end with an 8-bit timer: stamps taken near the wrap still give the true latency,
    and the histogram counts them in the right buckets."""

    timer = LatencyTimer(width=8)
    hist = LatencyHistogram(n_buckets=10, latency_width=8)
    m = Module()
    m.submodules.timer = timer
    m.submodules.hist = hist
    stamp = Signal(8)
    deliver = Signal()
    m.d.comb += [hist.sample_valid.eq(deliver),
                 hist.latency.eq(elapsed_cycles(timer.now, stamp))]
    latencies = [3, 0, 17, 200, 255, 1]
    got = {"lat": []}

    async def bench(ctx):
        for _ in range(250):                   # get close to the wrap
            await ctx.tick()
        for lat in latencies:
            ctx.set(stamp, ctx.get(timer.now))     # header accepted in this cycle
            for _ in range(lat):
                await ctx.tick()
            ctx.set(deliver, 1)                     # header delivered lat cycles later
            got["lat"].append(ctx.get(hist.latency))
            await ctx.tick()
            ctx.set(deliver, 0)
        got["hist"] = await read_all(ctx, hist, 10)

    run(m, bench)
    assert got["lat"] == latencies
    assert got["hist"] == expected_histogram(latencies, 10)


def test_group_statistics():
    dut = GroupStatistics(n_groups=8)
    events = [("completed", 3), ("completed", 3), ("aborted", 3), ("nan", 7),
              ("completed", 0), ("saturation", 3)]
    got = {}

    async def bench(ctx):
        for name, g in events:
            k = dut.index(name)
            ctx.set(dut.events[k].valid, 1)
            ctx.set(dut.events[k].group, g)
            await ctx.tick()
            ctx.set(dut.events[k].valid, 0)
        # two statistics in one cycle (the events above left amount at its reset value, 1)
        ctx.set(dut.events[dut.index("completed")], {"valid": 1, "group": 7, "amount": 1})
        ctx.set(dut.events[dut.index("infinity")], {"valid": 1, "group": 7, "amount": 1})
        await ctx.tick()
        ctx.set(dut.events[dut.index("completed")], {"valid": 0, "group": 0, "amount": 1})
        ctx.set(dut.events[dut.index("infinity")], {"valid": 0, "group": 0, "amount": 1})
        await ctx.tick()
        await ctx.tick()
        for g in (0, 3, 7):
            ctx.set(dut.read_index, g)
            await ctx.tick()
            got[g] = [ctx.get(dut.read_data[k]) for k in range(len(dut.stats))]

    run(dut, bench)
    assert dut.stats == CF.GROUP_STATS
    assert got[0] == [1, 0, 0, 0, 0]
    assert got[3] == [2, 1, 0, 0, 1]
    assert got[7] == [1, 0, 1, 1, 0]


def test_counter_table_increments_above_one(seed):
    """Amounts of 0..max_increment per cycle: back to back on one counter (the read-modify-write
    forwarding adds the amounts), on alternating counters, with idle cycles; a counter that
    would pass 2^count_width - 1 stops there (from below, and by one large step from far
    below); amount 0 adds nothing; clear as for unit increments."""
    rng = random.Random(seed)
    width, depth, top = 8, 4, 64
    dut = CounterTable(depth, count_width=width, max_increment=top)
    steps = [(1, 63), (1, 64), (1, 64), (1, 0), (2, 5), (1, 64), (2, 64), (1, 10)]  # 255
    steps += [(2, 64)] * 3 + [(3, 64)] * 4      # counter 2 saturates at 255 from 192 + 64
    steps += [(0, rng.randint(0, top)) if rng.random() < 0.7 else (None, 0) for _ in range(60)]
    want = [0] * depth
    got = {}

    async def bench(ctx):
        for index, amount in steps:
            if index is None:
                ctx.set(dut.inc_valid, 0)
            else:
                ctx.set(dut.inc_valid, 1)
                ctx.set(dut.inc_index, index)
                ctx.set(dut.inc_amount, amount)
                want[index] = min(want[index] + amount, (1 << width) - 1)
            await ctx.tick()
        ctx.set(dut.inc_valid, 0)
        got["counts"] = await read_all(ctx, dut, depth)
        # clear, then one large step from zero and one that lands exactly on the top
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for index, amount in ((1, top), (1, top), (1, top), (1, top - 1), (3, 0)):
            ctx.set(dut.inc_valid, 1)
            ctx.set(dut.inc_index, index)
            ctx.set(dut.inc_amount, amount)
            await ctx.tick()
        ctx.set(dut.inc_valid, 0)
        got["after_clear"] = await read_all(ctx, dut, depth)

    run(dut, bench)
    assert got["counts"] == want, (got["counts"], want)
    assert want[1] == 255 and want[2] == 255 and want[3] == 255
    assert got["after_clear"] == [0, 255, 0, 0]
    with pytest.raises(ValueError, match="max_increment"):
        CounterTable(4, max_increment=0)


def test_group_statistics_amounts():
    """GroupStatistics(max_amount=16): the element statistics add their amounts, several
    statistics and groups in one cycle, a statistic at its top saturates; the unit statistics
    (completed) still count 1 with amount left undriven; read every group back."""
    dut = GroupStatistics(n_groups=4, count_width=10, max_amount=16)
    cycles = [
        {"nan": (1, 16), "saturation": (2, 3)},
        {"nan": (1, 16), "infinity": (1, 1), "saturation": (2, 16)},
        {"nan": (3, 0)},                                 # amount 0: nothing
        {"saturation": (2, 16)},
    ] + [{"saturation": (0, 16)}] * 70                   # 1120 > 1023: saturates
    want = {g: dict.fromkeys(dut.stats, 0) for g in range(4)}
    got = {}

    async def bench(ctx):
        k_done = dut.index("completed")
        for cyc in cycles:
            for k, name in enumerate(dut.stats):
                if name in cyc:
                    g, amount = cyc[name]
                    ctx.set(dut.events[k], {"valid": 1, "group": g, "amount": amount})
                    want[g][name] = min(want[g][name] + amount, 1023)
                else:
                    ctx.set(dut.events[k].valid, 0)
            await ctx.tick()
        for k in range(len(dut.stats)):
            ctx.set(dut.events[k].valid, 0)
        for g in (3, 3):                                 # unit events, amount never driven
            ctx.set(dut.events[k_done].valid, 1)
            ctx.set(dut.events[k_done].group, g)
            want[g]["completed"] += 1
            await ctx.tick()
        ctx.set(dut.events[k_done].valid, 0)
        await ctx.tick().repeat(2)
        for g in range(4):
            ctx.set(dut.read_index, g)
            await ctx.tick()
            got[g] = [ctx.get(dut.read_data[k]) for k in range(len(dut.stats))]

    run(dut, bench)
    for g in range(4):
        assert got[g] == [want[g][name] for name in dut.stats], (g, got[g], want[g])
    assert got[0][dut.index("saturation")] == 1023 and got[1][dut.index("nan")] == 32


# ----------------------------------------------------------------------------------------------
# header capture
# ----------------------------------------------------------------------------------------------

def event(port=0, kind=CaptureKind.INGRESS, reason=0, hdr=None, pfx=0, seq=0):
    """A capture event; by default an MWr whose address carries ``seq`` (to tell them apart)."""
    if hdr is None:
        hdr = tb.mwr_hdr(0x1000_0000 + 4 * seq, 1, requester_id=0x0100, tag=seq & 0xFF)
    return {"port": port, "kind": int(kind), "reason": int(reason), "hdr": hdr, "pfx": pfx}


def source_value(ev):
    if ev is None:
        return {"valid": 0, "port": 0, "kind": 0, "reason": 0, "hdr": 0, "pfx": 0}
    return {"valid": 1, **ev}


class CaptureBench:
    """Drives a HeaderCapture cycle by cycle (and the reference model alongside), reads the
    ring back through the read port."""

    def __init__(self, dut, **config):
        self.dut = dut
        self.model = HeaderCaptureModel(dut.n_sources, dut.depth, record_all=dut.record_all,
                                        ts_width=dut.ts_width)
        self.config = {"enable": 1, "mode": 0, "match": 0, "mask": 0,
                       "trigger_kinds": CF.DEFAULT_TRIGGER_KINDS, "trigger_on_match": 0,
                       "post_trigger": 0}
        self.config.update(config)

    def configure(self, ctx, **config):
        self.config.update(config)
        for name, v in self.config.items():
            if name == "mode":
                ctx.set(self.dut.mode, CaptureMode(v))
            elif name in ("match", "mask"):
                ctx.set(getattr(self.dut, name).as_value(), v)
            else:
                ctx.set(getattr(self.dut, name), v)
            setattr(self.model, name, v)

    async def cycle(self, ctx, events=(), *, trigger=False, arm=False):
        events = list(events) + [None] * (self.dut.n_sources - len(events))
        for k, ev in enumerate(events):
            ctx.set(self.dut.sources[k], source_value(ev))
        ctx.set(self.dut.trigger, trigger)
        ctx.set(self.dut.arm, arm)
        self.model.step(events, trigger=trigger, arm=arm)
        await ctx.tick()
        for k in range(self.dut.n_sources):
            ctx.set(self.dut.sources[k], source_value(None))
        ctx.set(self.dut.trigger, 0)
        ctx.set(self.dut.arm, 0)

    async def idle(self, ctx, n):
        for _ in range(n):
            await self.cycle(ctx)

    async def dump(self, ctx):
        """Status and entries (dicts), oldest first, read through the 1-cycle read port."""
        await self.idle(ctx, self.dut.n_sources + 2)      # drain the batch, settle missed
        status = {name: ctx.get(getattr(self.dut, name)) for name in
                  ("count", "write_ptr", "oldest", "frozen", "triggered", "trigger_time",
                   "missed")}
        entries = []
        for index in ring_order(status["oldest"], status["count"], self.dut.depth):
            ctx.set(self.dut.read_index, index)
            await ctx.tick()
            self.model.now = (self.model.now + 1) & self.model.ts_mask    # keep time aligned
            entries.append(CF.unpack(CF.CAPTURE_ENTRY, ctx.get(self.dut.read_data.as_value())))
        return status, entries

    def check_against_model(self, status, entries):
        model = self.model
        assert entries == model.entries()
        assert status["count"] == model.count
        assert status["write_ptr"] == model.write_ptr
        assert status["oldest"] == model.oldest
        assert status["frozen"] == model.frozen
        assert status["triggered"] == model.triggered
        assert status["missed"] == model.missed
        if model.triggered:
            assert status["trigger_time"] == model.trigger_time


def seqs(entries):
    """The seq number (address DW / 4) of each entry's MWr header."""
    return [((e["hdr"] >> 64) & 0xFFFF_FFFF) - 0x1000_0000 >> 2 for e in entries]


def capture_run(dut, body, **config):
    bench = CaptureBench(dut, **config)
    out = {}

    async def tb_(ctx):
        bench.configure(ctx)
        out["result"] = await body(ctx, bench)

    run(dut, tb_)
    return bench, out["result"]


def test_capture_match_mask_fields():
    """Filters on DW0 fields, requester ID, tag, address (3- and 4-DW), prefix, port, kind and
    reason select exactly the events the key rule selects."""
    evs = [
        event(0, seq=1),
        event(1, hdr=tb.mwr_hdr(0x2_0000_0040, 4, requester_id=0x0200, tag=7)),      # 4-DW
        event(2, hdr=tb.cpld_hdr(0x0300, 9, 2, tc=3)),
        event(3, CaptureKind.DROP, DropReason.NO_ROUTE,
              hdr=tb.mrd_hdr(0xDEAD_BEE0, 2, requester_id=0x0100, tag=9)),
        event(1, pfx=sf_prefix(SfKind.HC_GROUP, group=5), seq=0x40),
        event(0, CaptureKind.EGRESS, hdr=tb.msg_local_hdr()),
    ]
    filters = [
        capture_filter(),                                          # everything
        capture_filter(type=0b01010),                              # completions
        capture_filter(fmt=0b011),                                 # 4-DW with data
        capture_filter(tc=3),
        capture_filter(requester_id=0x0100),
        capture_filter(requester_id=0x0100, tag=9),
        capture_filter(addr_lo=0x0000_0040),                       # low DW of the 4-DW address
        capture_filter(addr_lo=0xDEAD_BEE0),
        capture_filter(pfx=sf_prefix(SfKind.HC_GROUP, group=5)),
        capture_filter(port=1),
        capture_filter(kind=CaptureKind.DROP, reason=DropReason.NO_ROUTE),
        capture_filter(kind=CaptureKind.EGRESS),
    ]
    expected_ports = [[0, 1, 2, 3, 1, 0], [2], [1], [2], [0, 3, 1], [3], [1], [3], [1],
                      [1, 1], [3], [0]]
    # padding bits in the mask are ignored
    match, mask = capture_filter(port=1)
    filters.append((match, mask | (0xFF << 184) | (0x7 << 165)))
    expected_ports.append([1, 1])
    dut = HeaderCapture(n_sources=1, depth=16)

    async def body(ctx, bench):
        results = []
        for match, mask in filters:
            bench.configure(ctx, match=match, mask=mask)
            await bench.cycle(ctx, arm=True)
            for ev in evs:
                await bench.cycle(ctx, [ev])
            status, entries = await bench.dump(ctx)
            bench.check_against_model(status, entries)
            results.append([e["port"] for e in entries])
        return results

    _, results = capture_run(dut, body, trigger_kinds=0)
    assert results == expected_ports


def test_capture_ring_overwrite_order():
    """After more matches than entries the ring keeps the newest ``depth``, oldest first,
    with their cycle timestamps."""
    dut = HeaderCapture(n_sources=1, depth=4)

    async def body(ctx, bench):
        await bench.idle(ctx, 3)
        for s in range(10):
            await bench.cycle(ctx, [event(seq=s)])
            await bench.idle(ctx, 1)
        return await bench.dump(ctx)

    bench, (status, entries) = capture_run(dut, body)
    bench.check_against_model(status, entries)
    assert status["count"] == 4 and status["write_ptr"] == 10 % 4 and status["oldest"] == 2
    assert seqs(entries) == [6, 7, 8, 9]
    assert [e["timestamp"] for e in entries] == [3 + 2 * s for s in (6, 7, 8, 9)]
    assert not any(e["gap"] or e["trig"] for e in entries)


@pytest.mark.parametrize("post_trigger", [0, 3])
def test_capture_trigger_freeze(post_trigger):
    """Trigger mode: an error event (a DROP) fires the trigger; its cycle's entries are marked,
    exactly ``post_trigger`` more are recorded, then the ring freezes."""
    dut = HeaderCapture(n_sources=2, depth=16)
    trigger_seq = 5

    async def body(ctx, bench):
        for s in range(12):
            evs = [event(0, seq=s)]
            if s == trigger_seq:
                evs.append(event(1, CaptureKind.DROP, DropReason.MALFORMED, seq=100))
            await bench.cycle(ctx, evs)
        return await bench.dump(ctx)

    bench, (status, entries) = capture_run(dut, body, mode=1, post_trigger=post_trigger)
    bench.check_against_model(status, entries)
    assert status["triggered"] and status["frozen"]
    assert status["trigger_time"] == trigger_seq
    # The trigger cycle's batch of two drains in cycles 6 and 7, so seq 6 is missed (counted,
    # and the next entry, seq 7, has gap); then post_trigger entries, then frozen.
    post = list(range(trigger_seq + 2, trigger_seq + 2 + post_trigger))
    assert seqs(entries) == list(range(trigger_seq + 1)) + [100] + post
    assert status["missed"] == 1
    assert [e["trig"] for e in entries] == [int(e["timestamp"] == trigger_seq) for e in entries]
    assert [e["gap"] for e in entries] == [0] * (trigger_seq + 2) + [1, 0, 0][:post_trigger]


def test_capture_explicit_trigger_and_filters():
    """The ``trigger`` input fires with ``trigger_kinds`` = 0; with ``trigger_on_match`` a DROP
    that fails the filter does not fire; continuous mode marks but does not freeze; arm
    restarts."""
    dut = HeaderCapture(n_sources=1, depth=8)

    async def body(ctx, bench):
        out = {}
        # explicit trigger, trigger kinds disabled: a drop does not fire
        bench.configure(ctx, mode=1, post_trigger=1, trigger_kinds=0)
        await bench.cycle(ctx, arm=True)
        await bench.cycle(ctx, [event(seq=0, kind=CaptureKind.DROP, reason=1)])
        await bench.cycle(ctx, [event(seq=1)], trigger=True)
        for s in range(2, 6):
            await bench.cycle(ctx, [event(seq=s)])
        out["explicit"] = await bench.dump(ctx)
        bench.check_against_model(*out["explicit"])
        # trigger only on matching drops: filter port 2
        match, mask = capture_filter(port=2)
        bench.configure(ctx, match=match, mask=mask, trigger_kinds=CF.DEFAULT_TRIGGER_KINDS,
                        trigger_on_match=1, post_trigger=0)
        await bench.cycle(ctx, arm=True)
        await bench.cycle(ctx, [event(1, CaptureKind.DROP, 3, seq=0)])    # no match: no fire
        await bench.cycle(ctx, [event(2, seq=1)])
        await bench.cycle(ctx, [event(2, CaptureKind.CUT, 6, seq=2)])     # fires
        await bench.cycle(ctx, [event(2, seq=3)])
        out["on_match"] = await bench.dump(ctx)
        bench.check_against_model(*out["on_match"])
        # continuous mode: marks, keeps recording
        bench.configure(ctx, mode=0, mask=0, match=0, trigger_on_match=0)
        await bench.cycle(ctx, arm=True)
        for s in range(4):
            await bench.cycle(ctx, [event(kind=CaptureKind.DROP if s == 1 else 0, seq=s)])
        out["continuous"] = await bench.dump(ctx)
        bench.check_against_model(*out["continuous"])
        return out

    _, out = capture_run(dut, body)
    status, entries = out["explicit"]
    assert status["frozen"] and seqs(entries) == [0, 1, 2]
    assert [e["trig"] for e in entries] == [0, 1, 0]
    status, entries = out["on_match"]
    assert status["frozen"] and seqs(entries) == [1, 2]
    assert [e["trig"] for e in entries] == [0, 1]
    status, entries = out["continuous"]
    assert status["triggered"] and not status["frozen"] and seqs(entries) == [0, 1, 2, 3]
    assert [e["trig"] for e in entries] == [0, 1, 0, 0]


def test_capture_simultaneous_sources():
    """record_all: four matches in one cycle are all recorded, same timestamp, source order;
    matches while the batch drains are counted in ``missed`` and the next entry has ``gap``."""
    dut = HeaderCapture(n_sources=4, depth=16)

    async def body(ctx, bench):
        await bench.cycle(ctx, [event(p, seq=10 + p) for p in range(4)])      # cycle 0
        await bench.cycle(ctx, [event(0, seq=20), None, event(2, seq=22)])    # 2 missed
        await bench.cycle(ctx, [None, event(1, seq=31)])                       # 1 missed
        await bench.cycle(ctx, [None, None, None, event(3, seq=43)])           # 1 missed
        await bench.cycle(ctx, [event(0, seq=50)])        # last of the batch written: taken
        await bench.cycle(ctx, [event(1, seq=61)])        # one at a time: full rate
        return await bench.dump(ctx)

    bench, (status, entries) = capture_run(dut, body)
    bench.check_against_model(status, entries)
    assert seqs(entries) == [10, 11, 12, 13, 50, 61]
    assert [e["port"] for e in entries] == [0, 1, 2, 3, 0, 1]
    assert [e["timestamp"] for e in entries] == [0, 0, 0, 0, 4, 5]
    assert [e["gap"] for e in entries] == [0, 0, 0, 0, 1, 0]
    assert status["missed"] == 4


def test_capture_lowest_source_only():
    """record_all=False: the lowest-numbered match of a cycle is recorded, the others are
    missed (counted), and the next entry carries ``gap``."""
    dut = HeaderCapture(n_sources=3, depth=8, record_all=False)

    async def body(ctx, bench):
        await bench.cycle(ctx, [None, event(1, seq=1), event(2, seq=2)])
        await bench.cycle(ctx, [event(0, seq=3), None, event(2, seq=4)])
        await bench.cycle(ctx, [None, None, event(2, seq=5)])
        return await bench.dump(ctx)

    bench, (status, entries) = capture_run(dut, body)
    bench.check_against_model(status, entries)
    assert seqs(entries) == [1, 3, 5]
    assert [e["gap"] for e in entries] == [0, 1, 1]
    assert status["missed"] == 2


def test_capture_read_port_latency():
    """read_data shows the entry at read_index one edge after the index is sampled."""
    dut = HeaderCapture(n_sources=1, depth=4)

    async def body(ctx, bench):
        for s in range(3):
            await bench.cycle(ctx, [event(seq=s)])
        await bench.idle(ctx, 2)
        seen = []
        ctx.set(dut.read_index, 1)
        seen.append(ctx.get(dut.read_data.hdr))      # still index 0 (sampled at last edge)
        await ctx.tick()
        seen.append(ctx.get(dut.read_data.hdr))      # index 1
        ctx.set(dut.read_index, 2)
        seen.append(ctx.get(dut.read_data.hdr))      # unchanged until the edge
        await ctx.tick()
        seen.append(ctx.get(dut.read_data.hdr))
        return seen

    _, seen = capture_run(dut, body)
    hdrs = [event(seq=s)["hdr"] for s in range(3)]
    assert seen == [hdrs[0], hdrs[1], hdrs[1], hdrs[2]]


def test_capture_word_window():
    """The 32-bit word view: word k of entry i after one edge, as a register window reads."""
    dut = HeaderCapture(n_sources=1, depth=4)
    ev = event(port=3, kind=CaptureKind.DROP, reason=5, seq=9, pfx=0x8E40_0003)

    async def body(ctx, bench):
        await bench.idle(ctx, 2)
        await bench.cycle(ctx, [ev])
        await bench.idle(ctx, 2)
        words = []
        for k in range(8):
            ctx.set(dut.read_index, 0)
            ctx.set(dut.read_word, k)
            await ctx.tick()
            words.append(ctx.get(dut.read_word_data))
        return words

    _, words = capture_run(dut, body, trigger_kinds=0)
    packed = CF.pack(CF.CAPTURE_ENTRY, {"timestamp": 2, "port": 3, "kind": CaptureKind.DROP,
                                        "reason": 5, "hdr": ev["hdr"], "pfx": ev["pfx"]})
    assert words == [(packed >> (32 * k)) & 0xFFFF_FFFF for k in range(7)] + [0]
    assert words[1] == (3 << 16) | (CaptureKind.DROP << 8) | 5


@pytest.mark.parametrize("n_sources,record_all", [(3, True), (2, False)])
def test_capture_random_against_model(n_sources, record_all, seed):
    """Random events, filters, modes, triggers and arms against the reference model."""
    rng = random.Random(seed)
    dut = HeaderCapture(n_sources=n_sources, depth=8, ts_width=10, record_all=record_all)

    def random_event():
        if rng.random() < 0.5:
            return None
        return event(rng.randrange(4), rng.choice(list(CaptureKind)),
                     rng.choice([0, 1, 3, 6]), seq=rng.randrange(64),
                     pfx=rng.choice([0, sf_prefix(SfKind.HC_SET, mask=5)]))

    async def body(ctx, bench):
        for _ in range(4):
            filt = rng.choice([capture_filter(), capture_filter(port=rng.randrange(4)),
                               capture_filter(kind=CaptureKind.INGRESS),
                               capture_filter(pfx=0), capture_filter(reason=0)])
            bench.configure(ctx, match=filt[0], mask=filt[1], mode=rng.randrange(2),
                            post_trigger=rng.randrange(6), enable=1,
                            trigger_kinds=rng.choice([0, CF.DEFAULT_TRIGGER_KINDS]),
                            trigger_on_match=rng.randrange(2))
            await bench.cycle(ctx, arm=True)
            for _ in range(40):
                if rng.random() < 0.05:
                    bench.configure(ctx, enable=rng.random() < 0.7)
                await bench.cycle(ctx, [random_event() for _ in range(n_sources)],
                                  trigger=rng.random() < 0.03)
            bench.configure(ctx, enable=0)
            bench.check_against_model(*await bench.dump(ctx))
            bench.configure(ctx, enable=1)

    capture_run(dut, body)


def test_capture_dump_decodes():
    """A dump read from the RTL decodes into the expected table rows."""
    dut = HeaderCapture(n_sources=2, depth=8)

    async def body(ctx, bench):
        await bench.cycle(ctx, [event(0, seq=1, pfx=sf_prefix(SfKind.HC_SET, mask=0b1010)),
                                event(1, CaptureKind.DROP, DropReason.NO_ROUTE,
                                      hdr=tb.mrd_hdr(0x8000_0000, 4, requester_id=0x0200,
                                                     tag=0x21))])
        await bench.idle(ctx, 1)
        await bench.cycle(ctx, [None, event(1, CaptureKind.EGRESS,
                                            hdr=tb.cpld_hdr(0x0200, 0x21, 4))])
        return await bench.dump(ctx)

    _, (status, entries) = capture_run(dut, body)
    records = decode_capture(entries)
    assert [r.tlp for r in records] == ["MWr", "MRd", "CplD"]
    assert [r.delta for r in records] == [None, 0, 2]
    assert records[1].reason_name == "NO_ROUTE" and records[1].address == 0x8000_0000
    assert records[0].prefix == "HC set 0x0000a"
    table = format_capture_table(records)
    print(table)
    assert "NO_ROUTE" in table and "HC set" in table and "02:00.0" in table


# ----------------------------------------------------------------------------------------------
# link monitor
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0, 1, 5])
def test_link_monitor_stuck_threshold(threshold):
    """tx_stuck rises in the cycle after the (threshold+1)-th consecutive stall cycle, not
    before; falls the cycle after the stall ends; tx_stuck_seen stays until clear."""
    dut = LinkMonitor(stuck_threshold_width=8, activity_log2=4)
    trace = []

    async def bench(ctx):
        ctx.set(dut.stuck_threshold, threshold)
        ctx.set(dut.enable, 1)
        # a stall of exactly threshold cycles, then a transfer: never stuck
        ctx.set(dut.tx_valid, 1)
        for _ in range(threshold):
            await ctx.tick()
            assert not ctx.get(dut.status.tx_stuck)
        ctx.set(dut.tx_ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.status.tx_stuck) and not ctx.get(dut.status.tx_stuck_seen)
        assert ctx.get(dut.status.stall_cycles) == 0
        # now a long stall: record tx_stuck after each stall cycle
        ctx.set(dut.tx_ready, 0)
        for _ in range(threshold + 3):
            await ctx.tick()
            trace.append((ctx.get(dut.status.stall_cycles), ctx.get(dut.status.tx_stuck)))
        ctx.set(dut.tx_valid, 0)
        await ctx.tick()
        trace.append((ctx.get(dut.status.stall_cycles), ctx.get(dut.status.tx_stuck)))
        assert ctx.get(dut.status.tx_stuck_seen)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.status.tx_stuck_seen)

    run(dut, bench)
    n = threshold + 3
    # after k stall cycles: stall_cycles == k, stuck iff k > threshold
    assert trace == [(k, int(k > threshold)) for k in range(1, n + 1)] + [(0, 0)]


def test_link_monitor_saturation_activity_errors():
    dut = LinkMonitor(stuck_threshold_width=3, activity_log2=3)
    got = {}

    async def bench(ctx):
        ctx.set(dut.stuck_threshold, 7)            # the largest: stuck after 8 stall cycles
        ctx.set(dut.tx_valid, 1)
        stuck = []
        for _ in range(10):
            await ctx.tick()
            stuck.append((ctx.get(dut.status.stall_cycles), ctx.get(dut.status.tx_stuck)))
        got["stuck"] = stuck
        ctx.set(dut.tx_valid, 0)
        # one rx beat: rx_active for exactly 2^3 cycles after it
        ctx.set(dut.rx_valid, 1)
        ctx.set(dut.rx_ready, 1)
        await ctx.tick()
        ctx.set(dut.rx_valid, 0)
        active = []
        for _ in range(10):
            active.append(ctx.get(dut.status.rx_active))
            await ctx.tick()
        got["active"] = active
        assert not ctx.get(dut.status.tx_active)
        # errors: last reason kept, clear resets
        for reason in (DropReason.KEEP, DropReason.NO_ROUTE):
            ctx.set(dut.error, 1)
            ctx.set(dut.error_reason, reason)
            await ctx.tick()
        ctx.set(dut.error, 0)
        got["error"] = (ctx.get(dut.status.error_seen), ctx.get(dut.status.last_error))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        got["cleared"] = (ctx.get(dut.status.error_seen), ctx.get(dut.status.last_error))
        got["word"] = ctx.get(dut.status.as_value())

    run(dut, bench)
    assert got["stuck"] == [(min(k, 7), int(k > 7)) for k in range(1, 11)]
    assert got["active"] == [1] * 8 + [0, 0]
    assert got["error"] == (1, DropReason.NO_ROUTE)
    assert got["cleared"] == (0, 0)
    assert CF.unpack(CF.LINK_STATUS, got["word"])["enabled"] == 0


def test_parameter_validation():
    with pytest.raises(ValueError, match="power of two"):
        HeaderCapture(depth=48)
    with pytest.raises(ValueError, match="ts_width"):
        HeaderCapture(ts_width=33)
    with pytest.raises(ValueError, match="n_buckets"):
        LatencyHistogram(n_buckets=1)
    with pytest.raises(ValueError, match="count_width"):
        CounterTable(4, count_width=0)
    with pytest.raises(ValueError, match="stuck_threshold_width"):
        LinkMonitor(stuck_threshold_width=17)
