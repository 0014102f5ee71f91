"""The telemetry wired into the whole switch, in Amaranth's simulator: every packet's latency
as the bench measures it at the ports (edge of the first beat accepted to edge of the first beat
delivered) lands in its egress's histogram bucket; zero load is 4 cycles (the core's 3 cycles to
the first valid egress cycle, plus that cycle), bucket 3; the histograms clear. The reduction
group statistics window counts an fp8 AllReduce's completed operation and its NaN and saturated
result elements. (The system tests on Verilator and Icarus: verif/test_telemetry_sys.py.)"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from amaranth.hdl import Fragment

from smartfabric.hdl.params import SwitchParams
from smartfabric.hdl.switch import SmartfabricSwitch
from smartfabric.models.capture_format import GROUP_STATS, latency_bucket
from smartfabric.models.formats import inc_prefix
from smartfabric.models.inc_model import RGroup
from smartfabric.models.reduction import reduce_with_events
from smartfabric.models.regmodel import RegisterModel
from smartfabric.models import tlp_build as tb

from test_regblock import write_reg, read_reg
from test_switch_block import _config, _program

N_BUCKETS = 16
# Handshake to handshake: SwitchCore's zero-load latency (valid after edge t+3) plus the
# delivering cycle (docs/telemetry.md section 1).
ZERO_LOAD_LATENCY = 4


async def _drive_packet(ctx, dut, p, beats):
    """Offer ``beats`` on ingress ``p`` back to back, each until the switch takes it."""
    for beat in beats:
        for name in ("data", "keep", "first", "last", "hdr", "pfx"):
            ctx.set(getattr(dut, f"s{p}_{name}"), getattr(beat, name))
        ctx.set(getattr(dut, f"s{p}_valid"), 1)
        while not (await ctx.tick().sample(getattr(dut, f"s{p}_ready")))[2]:
            pass
    ctx.set(getattr(dut, f"s{p}_valid"), 0)


def test_latency_histograms_match_port_timing(seed):
    params = SwitchParams(n_ports=3, data_width=64, n_windows=3, n_id_routes=3, voq_depth=4,
                          max_payload=128, n_rgroups=2, reduce_buffer_beats=64,
                          reduce_dtypes=("int32",))
    n = params.n_ports
    dut = SmartfabricSwitch(params)
    regs = RegisterModel(n, params.n_windows, params.n_id_routes, params.n_groups,
                         params.n_rgroups, capture_depth=params.capture_depth)
    cfg = _config(params)
    rng = random.Random(seed)
    queues = {p: [] for p in range(n)}     # packets (lists of beats) waiting per ingress
    state = {"ready": [1.0] * n, "edge": 0}
    accepted = {}                          # header -> edge its first beat was accepted
    latencies = {q: [] for q in range(n)}  # per egress, as measured at the ports
    address = iter(range(0x100, 1 << 24, 0x40))

    def packet(src, dst):
        nbytes = 4 * rng.randint(1, 24)
        hdr = tb.mwr_hdr(cfg.windows[dst][0] + next(address), nbytes // 4,
                         requester_id=(src + 1) << 8)
        return tb.packet_beats(hdr, 0, rng.randbytes(nbytes), params.data_width)

    async def drive(ctx, p):
        while True:
            if not queues[p]:
                await ctx.tick()
                continue
            await _drive_packet(ctx, dut, p, queues[p].pop(0))

    async def receive(ctx, q):
        while True:
            ctx.set(getattr(dut, f"m{q}_ready"), rng.random() < state["ready"][q])
            await ctx.tick()

    async def monitor(ctx):
        signals = []
        for p in range(n):
            signals += [getattr(dut, f"s{p}_{x}") for x in ("valid", "ready", "first", "hdr")]
            signals += [getattr(dut, f"m{p}_{x}") for x in ("valid", "ready", "first", "hdr")]
        async for _, _, *values in ctx.tick().sample(*signals):
            state["edge"] += 1
            for p in range(n):
                sv, sr, sf, sh, mv, mr, mf, mh = values[8 * p:8 * p + 8]
                if sv and sr and sf:
                    accepted[sh] = state["edge"]
                if mv and mr and mf:
                    latencies[p].append(state["edge"] - accepted.pop(mh))

    async def wait_delivered(ctx, count):
        for _ in range(20000):
            if sum(map(len, latencies.values())) == count:
                return
            await ctx.tick()
        raise AssertionError(f"{sum(map(len, latencies.values()))} of {count} delivered")

    async def histogram(ctx, q):
        return [await read_reg(ctx, dut, regs, f"latency_hist[{q}][{k}]")
                for k in range(N_BUCKETS)]

    def expected(q):
        counts = [0] * N_BUCKETS
        for latency in latencies[q]:
            counts[latency_bucket(latency, N_BUCKETS)] += 1
        return counts

    async def main(ctx):
        await ctx.tick()
        await _program(ctx, dut, regs, cfg)
        # Zero load: one packet at a time (the next one starts once every beat of the last
        # one is out), every egress ready.
        sent = 0
        for _ in range(3 * n):
            beats = packet(rng.randrange(n), rng.randrange(n))
            queues[rng.randrange(n)].append(beats)
            sent += 1
            await wait_delivered(ctx, sent)
            await ctx.tick().repeat(len(beats) + 4)
        assert {lat for q in range(n) for lat in latencies[q]} == {ZERO_LOAD_LATENCY}
        for q in range(n):
            assert await histogram(ctx, q) == expected(q), q
        # Load: every ingress busy, random backpressure, a slow egress.
        state["ready"] = [0.8, 0.5, 0.1]
        for src in range(n):
            for _ in range(30):
                queues[src].append(packet(src, rng.randrange(n)))
        sent += 30 * n
        await wait_delivered(ctx, sent)
        await ctx.tick().repeat(4)
        spread = {latency_bucket(lat, N_BUCKETS) for q in range(n) for lat in latencies[q]}
        assert len(spread) >= 3, f"load should spread latencies over buckets: {spread}"
        for q in range(n):
            got = await histogram(ctx, q)
            print(f"egress {q}: {got}")
            assert got == expected(q), q
            assert sum(got) == len(latencies[q])
        # hist_clear zeroes every histogram
        await write_reg(ctx, dut, regs, "telemetry_ctrl",
                        regs.encode("telemetry_ctrl", hist_clear=1, stuck_threshold=4096))
        await ctx.tick().repeat(2)
        for q in range(n):
            assert await histogram(ctx, q) == [0] * N_BUCKETS, q

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(monitor, background=True)

    def bind(fn, p):
        async def bound(ctx):
            await fn(ctx, p)
        return bound
    for p in range(n):
        sim.add_testbench(bind(drive, p), background=True)
        sim.add_testbench(bind(receive, p), background=True)
    sim.run()


def test_capture_depth_parameter():
    """capture_depth is validated like the other parameters and sizes the ring and its
    register window; 0 builds no capture and keeps a one-entry window (which reads 0:
    verif/test_switch.py ``control_port``, on the 4-port system configuration)."""
    for bad in (1, 3, 48, 512, -2, "64"):
        with pytest.raises(ValueError, match="capture_depth"):
            SwitchParams(capture_depth=bad)
    for depth, window_words in ((8, 8 * 8), (0, 8)):
        params = SwitchParams(n_ports=2, data_width=64, n_windows=2, n_id_routes=2,
                              capture_depth=depth)
        dut = SmartfabricSwitch(params)
        assert dut.regs.read_windows["cap_entry"].depth == window_words
        fragment = Fragment.get(dut, None)
        assert ("capture" in [name for _, name, _ in fragment.subfragments]) == (depth != 0)


def test_group_statistics_window(seed):
    """rgroup_stats through the switch: 2 ports x 64 bits, an fp8 E4M3 AllReduce group with
    saturate on, two rounds whose results hold saturated elements, genuine 448s and NaNs (8
    per beat); every word of both groups read over AXI4-Lite against the model
    (reduce_with_events, counted once per element although both members receive it), then
    gstat_clear."""
    params = SwitchParams(n_ports=2, data_width=64, n_windows=2, n_id_routes=2, voq_depth=4,
                          max_payload=128, n_rgroups=2, reduce_buffer_beats=64,
                          reduce_dtypes=("fp8_e4m3",))
    n, g = params.n_ports, 1
    dut = SmartfabricSwitch(params)
    regs = RegisterModel(n, params.n_windows, params.n_id_routes, params.n_groups,
                         params.n_rgroups, capture_depth=params.capture_depth)
    cfg = _config(params)
    rng = np.random.default_rng(seed)
    group = RGroup(members=0b11, elem_type="fp8_e4m3", op="sum", saturate=True,
                   base=0x9000_0000, size=96, buf_base=0, buf_beats=32, result_offset=0x100,
                   notify_offset=0x200)
    # per element: 448 + 448 (saturated), 448 + 16 (a tie: a genuine 448), NaN + 1, or
    # random bits (NaN payloads, overflow, anything)
    cases = np.array([[0x7E, 0x7E], [0x7E, 0x58], [0x7F, 0x38]], dtype=np.uint8)
    rounds = []
    for _ in range(2):
        rows = rng.integers(0, 256, size=(2, group.size), dtype=np.uint8)
        pick = rng.integers(0, 4, size=group.size)
        for k in range(3):
            rows[:, pick == k] = cases[k][:, None]
        rounds.append(rows)
    want = [0] * len(GROUP_STATS)
    for rows in rounds:
        _, ev = reduce_with_events("fp8_e4m3", "sum", rows, saturate=True)
        want[GROUP_STATS.index("completed")] += 1
        for name, flags in ev.items():
            want[GROUP_STATS.index(name)] += int(flags.sum())
    received = [0] * n                                   # result beats per egress

    async def receive(ctx):
        for q in range(n):
            ctx.set(getattr(dut, f"m{q}_ready"), 1)
        async for _, _, *valid in ctx.tick().sample(*[getattr(dut, f"m{q}_valid")
                                                       for q in range(n)]):
            for q in range(n):
                received[q] += valid[q]

    async def stats(ctx, group_id):
        return [await read_reg(ctx, dut, regs, f"rgroup_stats[{group_id}][{k}]")
                for k in range(8)]

    async def main(ctx):
        await ctx.tick()
        await _program(ctx, dut, regs, cfg)
        for name, value in group.registers():
            path = f"rgroup[{g}].{name}"
            await write_reg(ctx, dut, regs, path,
                            regs.encode(path, **value) if isinstance(value, dict) else value)
        await ctx.tick().repeat(48)                      # arming
        pfx = inc_prefix(g, "fp8_e4m3", "sum")
        for r, rows in enumerate(rounds):
            for p in range(n):
                for off in range(0, group.size, 32):    # 32-byte writes
                    hdr = tb.mwr_hdr(group.base + off, 8, requester_id=(p + 1) << 8)
                    await _drive_packet(ctx, dut, p, tb.packet_beats(hdr, pfx, rows[p, off:off + 32].tobytes(),
                                                       params.data_width))
            beats = (r + 1) * group.size // (params.data_width // 8)
            for _ in range(2000):                        # both members get the result
                if min(received) == beats:
                    break
                await ctx.tick()
            assert received == [beats] * n, received
            await ctx.tick().repeat(8)
        got = await stats(ctx, g)
        print(f"rgroup_stats[{g}]: {got}, model {want}")
        assert got == want + [0, 0, 0]
        assert await stats(ctx, 0) == [0] * 8
        assert want[GROUP_STATS.index("saturation")] and want[GROUP_STATS.index("nan")]
        await write_reg(ctx, dut, regs, "telemetry_ctrl",
                        regs.encode("telemetry_ctrl", gstat_clear=1, stuck_threshold=4096))
        await ctx.tick().repeat(2)
        assert await stats(ctx, g) == [0] * 8

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(receive, background=True)
    sim.run()
