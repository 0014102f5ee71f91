"""Block-level tests of the whole switch in Amaranth's simulator: the widths (256, 512 bits)
and port counts the Verilator/Icarus matrix does not build, and the ready-path rule."""

import random

import pytest
from amaranth.sim import Simulator

from smartfabric.hdl.params import SwitchParams
from smartfabric.hdl.switch import SmartfabricSwitch
from smartfabric.models.regmodel import RegisterModel
from smartfabric.models.switch_model import SwitchModel, SwitchConfig, Beat, Packet
from smartfabric.models import tlp_build as tb

from test_regblock import write_reg, read_reg   # AXI4-Lite helpers for Amaranth's simulator

FIELDS = ("data", "keep", "first", "last", "hdr", "pfx")


def _config(params):
    n = params.n_ports
    windows = [(0x1000_0000 * (p + 1), 0x1000_0000 * (p + 1) + 0xFFF_FFFF, p, True)
               for p in range(n)]
    windows += [(0, 0, 0, False)] * (params.n_windows - n)
    routes = [(p + 1, p + 1, p, True) for p in range(n)]
    routes += [(0, 0, 0, False)] * (params.n_id_routes - n)
    return SwitchConfig(n_ports=n, data_width=params.data_width, max_payload=params.max_payload,
                        windows=windows, id_routes=routes, root_port=None)


async def _program(ctx, dut, regs, cfg):
    for k, (base, limit, port, enable) in enumerate(cfg.windows):
        await write_reg(ctx, dut, regs, f"window[{k}].base_lo", base & 0xFFFFFFFF)
        await write_reg(ctx, dut, regs, f"window[{k}].base_hi", base >> 32)
        await write_reg(ctx, dut, regs, f"window[{k}].limit_lo", limit & 0xFFFFFFFF)
        await write_reg(ctx, dut, regs, f"window[{k}].limit_hi", limit >> 32)
        await write_reg(ctx, dut, regs, f"window[{k}].ctrl",
                        regs.encode(f"window[{k}].ctrl", enable=int(enable), port=port))
    for k, (lo, hi, port, enable) in enumerate(cfg.id_routes):
        await write_reg(ctx, dut, regs, f"id_route[{k}]",
                        regs.encode(f"id_route[{k}]", bus_lo=lo, bus_hi=hi, port=port,
                                    enable=int(enable)))


async def _send(ctx, dut, model, port, beats, rng=None, gap=0.0):
    """Offer ``beats`` on ingress ``port``, telling the model each one taken: back to back,
    or with ``rng``, before each beat a gap of cycles each with probability ``gap``."""
    for beat in beats:
        while rng is not None and rng.random() < gap:
            await ctx.tick()
        for f in FIELDS:
            ctx.set(getattr(dut, f"s{port}_{f}"), getattr(beat, f))
        ctx.set(getattr(dut, f"s{port}_valid"), 1)
        await ctx.tick().until(getattr(dut, f"s{port}_ready"))
        model.ingress_beat(port, beat)
        ctx.set(getattr(dut, f"s{port}_valid"), 0)


def _traffic(rng, params, cfg, per_port):
    n = params.n_ports
    out = []
    for src in range(n):
        beats = []
        for _ in range(per_port):
            dst = rng.randrange(n)
            base = cfg.windows[dst][0]
            length = rng.randint(1, params.max_payload // 4)
            addr = base + 4 * rng.randrange(1 << 20)
            if rng.random() < 0.7:
                hdr = tb.mwr_hdr(addr, length, requester_id=(src + 1) << 8, tag=rng.randrange(256))
                beats += tb.packet_beats(hdr, 0, rng.randbytes(4 * length), params.data_width)
            else:
                hdr = tb.cpld_hdr((dst + 1) << 8, rng.randrange(256), length)
                beats += tb.packet_beats(hdr, 0, rng.randbytes(4 * length), params.data_width)
        out.append(beats)
    return out


@pytest.mark.parametrize("n_ports,width", [(2, 512), (3, 256)])
def test_switch_block(n_ports, width, seed):
    """Random writes and completions, random gaps and backpressure; every packet and the
    packet counters checked against the golden model."""
    rng = random.Random(seed)
    params = SwitchParams(n_ports=n_ports, data_width=width, max_payload=256,
                          n_windows=n_ports, n_id_routes=n_ports, voq_depth=4)
    dut = SmartfabricSwitch(params)
    regs = RegisterModel(n_ports, params.n_windows, params.n_id_routes)
    cfg = _config(params)
    model = SwitchModel(cfg)
    traffic = _traffic(rng, params, cfg, per_port=12)
    partial = [[] for _ in range(n_ports)]
    done = {"programmed": False, "delivered": 0}
    expected_total = sum(sum(b.last for b in t) for t in traffic)

    async def drive(ctx, p):
        while not done["programmed"]:
            await ctx.tick()
        await _send(ctx, dut, model, p, traffic[p], rng, gap=0.3)

    async def receive(ctx, p):
        while True:
            ready = rng.random() < 0.7
            ctx.set(getattr(dut, f"m{p}_ready"), ready)
            await ctx.delay(1e-9)    # let combinational logic settle before sampling
            valid = ctx.get(getattr(dut, f"m{p}_valid"))
            if valid and ready:
                values = {f: ctx.get(getattr(dut, f"m{p}_{f}")) for f in FIELDS + ("err",)}
                partial[p].append(Beat(**values))
                if values["last"]:
                    model.match_egress(p, Packet(tuple(partial[p])))
                    partial[p].clear()
                    done["delivered"] += 1
            await ctx.tick()

    async def main(ctx):
        await ctx.tick()
        await _program(ctx, dut, regs, cfg)
        done["programmed"] = True
        for _ in range(20000):
            await ctx.tick()
            if done["delivered"] == expected_total:
                break
        assert done["delivered"] == expected_total, \
            f"{done['delivered']} of {expected_total} delivered; missing:\n" \
            + model.describe_pending()
        await ctx.tick().repeat(4)
        for p in range(n_ports):
            for name in ("rx_packets", "tx_packets", "rx_beats", "tx_beats", "rx_bytes",
                         "tx_bytes"):
                got = await read_reg(ctx, dut, regs, f"port[{p}].{name}")
                assert got == model.counters[p][name], (p, name, got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    def bind(fn, p):
        async def bound(ctx):
            await fn(ctx, p)
        return bound
    for p in range(n_ports):
        sim.add_testbench(bind(drive, p), background=True)
        sim.add_testbench(bind(receive, p), background=True)
    sim.run()
    assert model.pending() == 0


def test_ingress_ready_independent_of_egress_ready():
    """No combinational path from any egress ready to any ingress ready: flipping every
    m<p>_ready within a cycle never changes any s<p>_ready."""
    params = SwitchParams(n_ports=3, data_width=64, n_windows=3, n_id_routes=3, voq_depth=2)
    dut = SmartfabricSwitch(params)
    rng = random.Random(1)

    async def tb_(ctx):
        hdr = tb.mwr_hdr(0x10, 1)
        for cycle in range(200):
            for p in range(3):
                ctx.set(getattr(dut, f"s{p}_valid"), rng.random() < 0.8)
                ctx.set(getattr(dut, f"s{p}_hdr"), hdr)
                ctx.set(getattr(dut, f"s{p}_first"), 1)
                ctx.set(getattr(dut, f"s{p}_last"), 1)
                ctx.set(getattr(dut, f"s{p}_keep"), 0xF)
            seen = []
            for value in (0, 1):
                for p in range(3):
                    ctx.set(getattr(dut, f"m{p}_ready"), value)
                await ctx.delay(1e-9)
                seen.append([ctx.get(getattr(dut, f"s{p}_ready")) for p in range(3)])
            assert seen[0] == seen[1], f"cycle {cycle}: ingress ready follows egress ready"
            for p in range(3):
                ctx.set(getattr(dut, f"m{p}_ready"), rng.random() < 0.5)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb_)
    sim.run()


def test_window_parity_injection_and_rule(seed):
    """Parity bookkeeping of the address windows through dbg_parity_inject: arming shows
    ``pending``, a cancelled injection corrupts nothing, an armed one is consumed by the next
    window register write and makes that window fail its check; the golden model, told which
    window, predicts every packet: addresses of lower-numbered windows still route,
    addresses of the corrupted and later windows are dropped as PARITY (a read answered with
    UR); drop_parity and parity_errors count them; a rewrite clears the fault."""
    from smartfabric.models.formats import ParityTarget
    rng = random.Random(seed)
    n = 3
    params = SwitchParams(n_ports=n, data_width=64, max_payload=128, n_windows=n,
                          n_id_routes=n, n_groups=4, n_rgroups=1, reduce_buffer_beats=64,
                          reduce_dtypes=("int32",))
    dut = SmartfabricSwitch(params)
    regs = RegisterModel(n, params.n_windows, params.n_id_routes, params.n_groups,
                         params.n_rgroups)
    cfg = _config(params)
    model = SwitchModel(cfg)
    delivered = []

    async def receive(ctx):
        for p in range(n):
            ctx.set(getattr(dut, f"m{p}_ready"), 1)
        partial = [[] for _ in range(n)]
        while True:
            await ctx.delay(1e-9)
            for p in range(n):
                if ctx.get(getattr(dut, f"m{p}_valid")):
                    values = {f: ctx.get(getattr(dut, f"m{p}_{f}")) for f in FIELDS + ("err",)}
                    partial[p].append(Beat(**values))
                    if values["last"]:
                        model.match_egress(p, Packet(tuple(partial[p])))
                        delivered.append(p)
                        partial[p] = []
            await ctx.tick()

    def write_to(dst, read=False):
        base = cfg.windows[dst][0]
        addr = base + 4 * rng.randrange(1 << 20)
        if read:
            return tb.packet_beats(tb.mrd_hdr(addr, 4, requester_id=1 << 8,
                                              tag=rng.randrange(256)), 0, b"", 64)
        return tb.packet_beats(tb.mwr_hdr(addr, 2, requester_id=1 << 8,
                                          tag=rng.randrange(256)), 0, rng.randbytes(8), 64)

    async def traffic(ctx):
        for dst in range(n):
            await _send(ctx, dut, model, 0, write_to(dst))
            await _send(ctx, dut, model, 1, write_to(dst, read=True))
        await ctx.tick().repeat(30)

    async def check_counts(ctx):
        assert model.pending() == 0, model.describe_pending()
        for p in range(n):
            for name in ("drop_parity", "ur_sent", "tx_packets"):
                got = await read_reg(ctx, dut, regs, f"port[{p}].{name}")
                assert got == model.counters[p][name], (p, name, got)
        assert await read_reg(ctx, dut, regs, "parity_errors") == model.parity_errors

    async def main(ctx):
        await ctx.tick()
        await _program(ctx, dut, regs, cfg)
        t = 1
        base, limit, port, enable = cfg.windows[t]
        inject = regs.encode("dbg_parity_inject", target=ParityTarget.WINDOW, arm=1)
        # armed, then cancelled: the next window write stores good parity
        await write_reg(ctx, dut, regs, "dbg_parity_inject", inject)
        assert regs.decode("dbg_parity_inject",
                           await read_reg(ctx, dut, regs, "dbg_parity_inject"))["pending"] == 1
        await write_reg(ctx, dut, regs, "dbg_parity_inject",
                        regs.encode("dbg_parity_inject", target=ParityTarget.WINDOW, arm=0))
        await write_reg(ctx, dut, regs, f"window[{t}].base_lo", base & 0xFFFFFFFF)
        await traffic(ctx)
        await check_counts(ctx)
        assert model.parity_errors == 0
        # armed: consumed by the next window write
        await write_reg(ctx, dut, regs, "dbg_parity_inject", inject)
        await write_reg(ctx, dut, regs, f"window[{t}].limit_hi", limit >> 32)
        cfg.window_parity_errors.add(t)
        assert regs.decode("dbg_parity_inject",
                           await read_reg(ctx, dut, regs, "dbg_parity_inject"))["pending"] == 0
        await traffic(ctx)
        await check_counts(ctx)
        assert model.parity_errors == 2 * (n - t)
        # a write to another window leaves t's fault; rewriting t clears it
        await write_reg(ctx, dut, regs, "window[0].limit_lo", cfg.windows[0][1] & 0xFFFFFFFF)
        await traffic(ctx)
        await write_reg(ctx, dut, regs, f"window[{t}].ctrl",
                        regs.encode(f"window[{t}].ctrl", enable=int(enable), port=port))
        cfg.window_parity_errors.discard(t)
        await traffic(ctx)
        await check_counts(ctx)
        assert model.parity_errors == 4 * (n - t)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(receive, background=True)
    sim.run()


def test_window_write_takes_effect_with_its_response():
    """A window write's response comes ``n_windows + 2`` cycles later than another write's
    (the window table's scan, docs/protocol.md section 8.6), and a packet sent as soon as it
    comes is routed by the new window: moved to another port, then disabled (UR for a read)."""
    params = SwitchParams(n_ports=4, data_width=64, max_payload=128, voq_depth=4, n_windows=6,
                          n_id_routes=4, n_groups=2, n_rgroups=1, reduce_buffer_beats=32,
                          reduce_dtypes=("int8",), capture_depth=2)
    n = params.n_ports
    dut = SmartfabricSwitch(params)
    regs = RegisterModel(n, params.n_windows, params.n_id_routes)
    cfg = _config(params)
    model = SwitchModel(cfg)
    state = {"cycle": 0, "delivered": 0}

    async def clock(ctx):
        while True:
            await ctx.tick()
            state["cycle"] += 1

    async def receive(ctx, p):
        beats = []
        ctx.set(getattr(dut, f"m{p}_ready"), 1)
        while True:
            await ctx.delay(1e-9)
            if ctx.get(getattr(dut, f"m{p}_valid")):
                values = {f: ctx.get(getattr(dut, f"m{p}_{f}")) for f in FIELDS + ("err",)}
                beats.append(Beat(**values))
                if values["last"]:
                    model.match_egress(p, Packet(tuple(beats)))
                    beats.clear()
                    state["delivered"] += 1
            await ctx.tick()

    async def send(ctx, src, hdr, payload=b""):
        await _send(ctx, dut, model, src, tb.packet_beats(hdr, 0, payload, params.data_width))

    async def timed_write(ctx, path, value):
        start = state["cycle"]
        await write_reg(ctx, dut, regs, path, value)
        return state["cycle"] - start

    async def main(ctx):
        await ctx.tick()
        await _program(ctx, dut, regs, cfg)
        other = await timed_write(ctx, "switch_id", 0x0100)
        cfg.completer_id = 0x0100
        base = cfg.windows[0][0]
        ctrl = regs.encode("window[0].ctrl", enable=1, port=2)
        window = await timed_write(ctx, "window[0].ctrl", ctrl)
        assert window - other == params.n_windows + 2, (window, other)
        cfg.windows[0] = cfg.windows[0][:2] + (2, True)
        await send(ctx, 1, tb.mwr_hdr(base + 0x40, 2, requester_id=2 << 8), bytes(range(8)))
        await write_reg(ctx, dut, regs, "window[0].ctrl", regs.encode("window[0].ctrl",
                                                                        enable=0, port=2))
        cfg.windows[0] = cfg.windows[0][:2] + (2, False)
        await send(ctx, 1, tb.mrd_hdr(base + 0x40, 1, requester_id=2 << 8, tag=5))   # UR
        for _ in range(200):
            await ctx.tick()
            if model.pending() == 0:
                break
        assert model.pending() == 0, model.describe_pending()
        assert state["delivered"] == 2 and model.counters[2]["tx_packets"] == 1
        assert model.counters[1]["ur_sent"] == 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(clock, background=True)
    for p in range(n):
        async def bound(ctx, p=p):
            await receive(ctx, p)
        sim.add_testbench(bound, background=True)
    sim.run()
