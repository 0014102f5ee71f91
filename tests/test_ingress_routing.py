"""Block-level test of the routing arithmetic in Amaranth's simulator: the switch core
(ingress ports, VOQs, crossbar, copy addressing) and the window table that derives its
receiver windows, with their configuration driven directly, so every round can draw new
windows and a new multicast window in a few cycles.

The system benches give every port one window of the same size, aligned far from any
boundary. Here windows have random sizes (a receiver window may be smaller than the source
window, or empty), sit at the top of the 64-bit space or straddle 2**32, and writes start a
few DWs either side of a window's or a multicast group's last byte. Each packet's verdict (the
ingress's drop reason, or none) and every delivered copy (egress, header, payload) are
compared with the golden model."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from smartfabric.hdl.core import SwitchCore
from smartfabric.hdl.params import SwitchParams
from smartfabric.hdl.window_table import WindowTable
from smartfabric.models import tlp_build as tb
from smartfabric.models.formats import SfKind, sf_prefix, DropReason
from smartfabric.models.switch_model import SwitchModel, SwitchConfig, Packet, Beat

FIELDS = ("data", "keep", "first", "last", "hdr", "pfx")
TOP = 1 << 64


def _random_window(rng, n, port):
    """(base, limit, port, enable): DW-aligned, of a random size, somewhere interesting;
    usually for ``port``."""
    size = rng.choice([4 * rng.randint(1, 64), 4 * rng.randint(1, 4096), 1 << rng.randint(12, 40)])
    where = rng.random()
    if where < 0.25:
        base = TOP - size - 4 * rng.randint(0, 8)            # at the top of the address space
    elif where < 0.45:
        base = (1 << 32) - 4 * rng.randint(1, 2 * size // 4 + 1)   # across 2**32
    else:
        base = 4 * rng.randrange(TOP // 4)
    base = max(0, min(base, TOP - 4))
    limit = min(base + size - 1, TOP - 1)
    if rng.random() < 0.05:
        limit = base - 4 * rng.randint(1, 4) if base >= 16 else limit   # empty window
    if rng.random() < 0.2:
        port = rng.randrange(n) if rng.random() < 0.5 else rng.randint(n, 31)   # >= N: ignored
    return base, limit, port, rng.random() < 0.9


def _random_config(rng, params):
    n = params.n_ports
    cfg = SwitchConfig(n_ports=n, data_width=params.data_width, max_payload=params.max_payload,
                       windows=[_random_window(rng, n, k % n) for k in range(params.n_windows)],
                       id_routes=[(0, 0, 0, False)] * params.n_id_routes,
                       n_groups=params.n_groups, voq_depth=params.voq_depth,
                       n_rgroups=params.n_rgroups, reduce_dtypes=params.reduce_dtypes,
                       reduce_buffer_beats=params.reduce_buffer_beats)
    cfg.mc_enable = rng.random() < 0.8
    cfg.mc_index_pos = rng.randint(0, 20)
    shift = cfg.mc_window_shift
    cfg.mc_num_group = rng.randrange(32)
    span = (cfg.mc_num_group + 1) << shift
    cfg.mc_base = rng.choice([(rng.randrange(TOP - span) >> 12) << 12,
                              TOP - span - (rng.randint(0, 4) << 12)])
    cfg.mc_exclude_source = rng.random() < 0.5
    cfg.mc_receive = [rng.getrandbits(32) for _ in range(n)]
    cfg.mc_overlay = [(rng.getrandbits(64), rng.choice([0, 6, 12, 20, 40, 63]))
                      for _ in range(n)]
    return cfg


def _random_write(rng, cfg, src):
    """(hdr, pfx, payload) of a well-formed MWr from ``src``: a Hypercast write by destination
    set, a write into the multicast window or a unicast write, starting near an edge."""
    n = cfg.n_ports
    nbytes = 4 * rng.randint(1, cfg.max_payload // 4)
    kind = rng.random()
    pfx = 0
    if kind < 0.5 or not cfg.mc_enable:
        base, limit, _, _ = rng.choice(cfg.windows)
        mask = rng.getrandbits(n) or 1
        edges = [limit + 1 - nbytes, base, base + 4 * rng.randrange(64)]
        if kind < 0.5:
            if rng.random() < 0.05:
                mask |= 1 << rng.randint(n, 7)                   # a port the switch lacks
            pfx = sf_prefix(SfKind.HC_SET, mask=mask, xs=rng.random() < 0.3)
            # the end of a destination's receiver window, carried over to the source window
            receivers = [cfg.receiver_window(p) for p in range(n) if mask >> p & 1]
            receivers = [w for w in receivers if w is not None]
            if receivers:
                r = rng.choice(receivers)
                edges += [base + r.limit - r.base + 1 - nbytes] * 3
        address = rng.choice(edges) + 4 * rng.randint(-3, 3)
    else:
        shift = cfg.mc_window_shift
        group = rng.randint(0, cfg.mc_num_group + 1)
        if rng.random() < 0.2:
            group += 32 << rng.randrange(4)        # its low 5 bits name a group, not the rest
        start = cfg.mc_base + (group << shift)
        address = rng.choice([start + (1 << shift) - nbytes, start, start + 4 * rng.randrange(64)])
        address += 4 * rng.randint(-3, 3)
    address = max(0, min(address, TOP - 4)) & ~3
    hdr = tb.mwr_hdr(address, nbytes // 4, requester_id=(src + 1) << 8, tag=rng.randrange(256))
    return hdr, pfx, rng.randbytes(nbytes)


def _core_with_window_table(params):
    """A SwitchCore routing by a WindowTable's copy of the windows, wired as in the switch."""
    m = Module()
    core = m.submodules.core = SwitchCore(params)
    table = m.submodules.window_table = WindowTable(params)
    table.serve(m, core)
    return m, core, table


async def _apply(ctx, dut, table, cfg):
    """Drive the configuration inputs from ``cfg`` (what the register block does) and wait
    until the core routes by it."""
    for k, (base, limit, port, enable) in enumerate(cfg.windows):
        w = table.windows[k]
        ctx.set(w.base, base)
        ctx.set(w.limit, limit)
        ctx.set(w.port, port)
        ctx.set(w.enable, enable)
    ctx.set(dut.mc.enable, cfg.mc_enable)
    ctx.set(dut.mc.base, cfg.mc_base)
    ctx.set(dut.mc.index_pos, cfg.mc_index_pos)
    ctx.set(dut.mc.num_group, cfg.mc_num_group)
    ctx.set(dut.mc.exclude_source, cfg.mc_exclude_source)
    for p in range(cfg.n_ports):
        ctx.set(dut.mc_receive[p], cfg.mc_receive[p])
        base, size = cfg.mc_overlay[p]
        ctx.set(dut.overlays[p].base, base)
        ctx.set(dut.overlays[p].size, size)
    ctx.set(table.changed, 1)
    await ctx.tick()
    ctx.set(table.changed, 0)
    await ctx.tick().until(table.applied)
    await ctx.tick().repeat(2)         # receiver windows (one cycle behind), overlays


@pytest.mark.parametrize("n_ports,n_windows", [(4, 4)])
def test_routing_edges(n_ports, n_windows, seed):
    """Random configurations, 24 writes each from random ports; every verdict and copy
    checked against the model."""
    rng = random.Random(seed)
    params = SwitchParams(n_ports=n_ports, data_width=64, max_payload=128, voq_depth=16,
                          n_windows=n_windows, n_id_routes=1, n_groups=2, n_rgroups=1,
                          reduce_buffer_beats=32, reduce_dtypes=("int8",), capture_depth=2)
    top, dut, table = _core_with_window_table(params)
    rounds, per_round = 24, 24
    state = {"cfg": None, "model": None, "got": [[] for _ in range(n_ports)],
             "sent": 0, "delivered": 0, "verdicts": 0, "reasons": {}}

    async def receive(ctx, p):
        beats = []
        while True:
            ready = rng.random() < 0.8
            ctx.set(dut.egress[p].ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.egress[p].valid):
                v = {f: ctx.get(getattr(dut.egress[p].payload, f)) for f in FIELDS + ("err",)}
                beats.append(Beat(**v))
                if v["last"]:
                    state["model"].match_egress(p, Packet(tuple(beats)))
                    beats.clear()
                    state["delivered"] += 1
            await ctx.tick()

    async def events(ctx):
        while True:
            await ctx.tick()
            for p in range(n_ports):
                ev = dut.ingress_events[p]
                if ctx.get(ev.rx_packet):
                    state["got"][p].append(DropReason(ctx.get(ev.reason)))

    async def main(ctx):
        for p in range(n_ports):
            ctx.set(dut.contrib[p].ready, 1)
        ctx.set(dut.port_enable, (1 << n_ports) - 1)
        expected = [[] for _ in range(n_ports)]
        for r in range(rounds):
            cfg = _random_config(rng, params)
            model = SwitchModel(cfg)
            state["cfg"], state["model"] = cfg, model
            await _apply(ctx, dut, table, cfg)
            for _ in range(per_round):
                src = rng.randrange(n_ports)
                hdr, pfx, payload = _random_write(rng, cfg, src)
                beats = tb.packet_beats(hdr, pfx, payload, params.data_width)
                errors = len(model.errors)
                model.ingress_packet(src, beats)
                expected[src].append(model.errors[-1].reason if len(model.errors) > errors
                                     else DropReason.NONE)
                for beat in beats:
                    for f in FIELDS:
                        ctx.set(getattr(dut.ingress[src].payload, f), getattr(beat, f))
                    ctx.set(dut.ingress[src].valid, 1)
                    await ctx.tick().until(dut.ingress[src].ready)
                ctx.set(dut.ingress[src].valid, 0)
            for _ in range(400):                  # drain before the configuration changes
                await ctx.tick()
                if model.pending() == 0:
                    break
            assert model.pending() == 0, f"round {r}: not delivered:\n" + model.describe_pending()
        await ctx.tick().repeat(4)
        for p in range(n_ports):
            assert state["got"][p] == expected[p], \
                f"ingress {p} verdicts differ at packet " + str(next(
                    (k for k, (a, b) in enumerate(zip(state["got"][p], expected[p])) if a != b),
                    min(len(state["got"][p]), len(expected[p]))))
        flat = [r for e in expected for r in e]
        print("verdicts:", {r.name: flat.count(r) for r in sorted(set(flat))},
              f"copies delivered: {state['delivered']}")
        # the stimulus must reach the cases it is for
        for reason in (DropReason.NONE, DropReason.MC_SPILL, DropReason.NO_ROUTE,
                       DropReason.HC_EMPTY):
            assert reason in flat, f"no packet ended as {reason.name}"
        assert state["delivered"] > 0

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(main)

    def bind(fn, *args):
        async def bound(ctx):
            await fn(ctx, *args)
        return bound
    sim.add_testbench(bind(events), background=True)
    for p in range(n_ports):
        sim.add_testbench(bind(receive, p), background=True)
    sim.run()
