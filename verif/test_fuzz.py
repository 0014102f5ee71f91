"""Fuzz campaign (issue 6): random header bits, mutated legal packets (bit flips, truncated,
overlong, ``keep`` holes, bad framing flags), random legal AXI4-Lite reconfiguration during
traffic, and reset asserted mid-traffic followed by fresh traffic.

Every packet, well-formed or not, goes through the golden model, which predicts from
docs/protocol.md what each egress delivers and how every drop is counted; the scoreboard
matches every delivered packet (exactly once, unmodified) and ``check_counters`` compares every
per-reason counter. Each test ends by proving the switch drained and idle within a bound
(:func:`.env.drain_bound`) once the last beat has been offered.

Run through tests/test_sim.py.
"""

from collections import Counter

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from ..models import tlp_build as tb
from ..models.formats import HC_SET_PORTS, Collective, SfKind, Type, inc_prefix, sf_prefix
from ..models.reduction import DTYPE_NAMES, OPS, dtype_info
from ..models.switch_model import REASON_COUNTER
from .env import SwitchEnv, drain_bound, params_from_env, packets_from_env, seed_from_env
from .multicast import Multicast, random_multicast_config
from .reduction import Reduction, operands

_M32 = 0xFFFF_FFFF
#: Type codes the switch knows (every message routing), drawn most of the time.
KNOWN_TYPES = [t for t in Type if t != Type.MSG] + [Type.MSG | r for r in range(8)]


async def settle(env, what):
    """Offer everything queued (bounded by the traffic itself), open every egress and prove
    the switch drains within :func:`drain_bound`."""
    clk = env.dut.clk
    for _ in range(1_000_000):
        if all(not q for q in env.ports.queues) and all(c is None for c in env.ports._current):
            break
        await RisingEdge(clk)
    env.ports.set_gap(0.0)
    env.ports.set_ready(1.0)
    bound = drain_bound(env.params)
    start = env.ports.cycle
    await env.drain(max_cycles=bound)
    env.dut._log.info(f"{what}: drained and idle {env.ports.cycle - start} cycles after the "
                      f"last beat was offered (bound {bound})")


class Fuzzer:
    """Malformed and random packets for one bench; :attr:`tally` counts the variants sent."""

    def __init__(self, env, groups=()):
        self.env = env
        self.rng = env.rng
        self.n = env.params.n_ports
        self.groups = list(groups) or [0]
        self.mc = Multicast(env)
        self.tally = Counter()

    # ---- whole random headers ----
    def random_prefix(self):
        rng, n = self.rng, self.n
        r = rng.random()
        if r < 0.55:
            return 0
        if r < 0.7:
            limit = min(HC_SET_PORTS, n + 2)        # now and then a port that does not exist
            return sf_prefix(SfKind.HC_SET, mask=rng.getrandbits(limit), xs=rng.random() < 0.3)
        if r < 0.8:
            group = rng.choice(self.groups) if rng.random() < 0.7 else rng.getrandbits(16)
            return sf_prefix(SfKind.HC_GROUP, group=group, xs=rng.random() < 0.3)
        if r < 0.9:
            return inc_prefix(rng.randrange(256), rng.randrange(len(DTYPE_NAMES)),
                              rng.randrange(len(OPS)))
        return rng.getrandbits(32)

    def random_header(self, src):
        """A header of random bits, biased towards legal formats and types (or nothing but
        reserved codes would be tried), with an address in a window or anywhere, a requester
        ID that is the source's or anything, and a payload that agrees with the length field
        or not."""
        env, rng, n = self.env, self.rng, self.n
        fmt = rng.randrange(4) if rng.random() < 0.85 else rng.randrange(8)
        typ = rng.choice(KNOWN_TYPES) if rng.random() < 0.75 else rng.getrandbits(5)
        max_dw = env.params.max_payload // 4
        r = rng.random()
        length = (rng.randint(1, max_dw + 2) if r < 0.75 else 0 if r < 0.8
                  else rng.getrandbits(10))
        fields = dict(tc=rng.getrandbits(3), attr=rng.getrandbits(3),
                      tag=rng.getrandbits(10), td=rng.random() < 0.1, ep=rng.random() < 0.1,
                      th=rng.random() < 0.1, ln=rng.random() < 0.05,
                      at=rng.getrandbits(2) if rng.random() < 0.1 else 0)
        rid = env.plan.requester_id(src) if rng.random() < 0.7 else rng.getrandbits(16)
        dw1 = (rid << 16) | rng.getrandbits(16)
        dst = rng.randrange(n)
        if typ in (Type.CPL, Type.CPL_LOCKED):
            target = env.plan.requester_id(dst) if rng.random() < 0.7 else rng.getrandbits(16)
            dw2, dw3 = (target << 16) | rng.getrandbits(16), rng.getrandbits(32)
        else:
            if rng.random() < 0.6:
                span = 4 * min(length or 1024, 64)
                addr = env.plan.address(rng, dst, span, wide=bool(fmt & 1))
            else:
                addr = rng.getrandbits(64 if fmt & 1 else 32) & ~3
            if rng.random() < 0.1:
                addr |= rng.getrandbits(2)          # reserved address bits
            dw2, dw3 = ((addr >> 32, addr & _M32) if fmt & 1
                        else (addr & _M32, rng.getrandbits(32)))
        hdr = tb.raw_hdr(fmt, typ, length=length, dw1=dw1, dw2=dw2, dw3=dw3, **fields)
        payload = b""
        if fmt & 0b010:
            nbytes = 4 * (length or 1024)
            if rng.random() < 0.2 or nbytes > 2 * env.params.max_payload:
                nbytes = rng.randint(1, env.params.max_payload + 8)   # disagrees, maybe not DWs
            payload = rng.randbytes(nbytes)
        elif rng.random() < 0.1:
            payload = rng.randbytes(rng.randint(1, 16))       # data on a no-data format
        td = fields["td"] if rng.random() < 0.8 else not fields["td"]
        return tb.packet_beats(hdr, self.random_prefix(), payload, env.params.data_width, td=td)

    # ---- mutations of legal packets ----
    def legal(self, src):
        env, rng = self.env, self.rng
        if rng.random() < 0.2:
            nbytes = 4 * rng.randint(1, self.mc.max_bytes // 4)
            if rng.random() < 0.5:
                return self.mc.to_group(src, rng.choice(self.groups), nbytes)
            return self.mc.to_set(src, self.mc.random_set(src), nbytes)
        return env.random_packet(src, rng.randrange(self.n))

    def stray_contribution(self, src):
        """A well-formed MWr with an INC descriptor of a random group (none is armed here),
        element type and operation: rejected by the engine and reported to the sender."""
        rng = self.rng
        address = self.env.plan.address(rng, rng.randrange(self.n), 64)
        pfx = inc_prefix(rng.randrange(256), rng.randrange(len(DTYPE_NAMES)),
                         rng.randrange(len(OPS)))
        return self.mc.write(src, address, 4 * rng.randint(1, 16), pfx=pfx)

    def mutate(self, beats):
        """(variant, beats): one random corruption of a legal packet."""
        rng = self.rng
        beats = list(beats)
        kinds = ["header bit flips", "keep hole", "overlong", "no first flag",
                 "first flag inside"]
        if beats[0].pfx:
            kinds.append("prefix bit flips")
        if len(beats) > 1:
            kinds += ["truncated", "truncated"]

        def edit(k, **changes):
            beats[k] = type(beats[k])(**{**beats[k].__dict__, **changes})

        kind = rng.choice(kinds)
        if kind == "header bit flips":
            hdr = beats[0].hdr
            for _ in range(rng.randint(1, 3)):
                hdr ^= 1 << rng.randrange(128)
            edit(0, hdr=hdr)
        elif kind == "prefix bit flips":
            pfx = beats[0].pfx
            for _ in range(rng.randint(1, 2)):
                pfx ^= 1 << rng.randrange(32)
            edit(0, pfx=pfx)
        elif kind == "keep hole":
            k = rng.randrange(len(beats))
            keep = beats[k].keep
            if keep:
                bit = rng.choice([b for b in range(keep.bit_length()) if keep >> b & 1])
                edit(k, keep=keep & ~(1 << bit))
            else:
                edit(k, keep=1 << rng.randrange(self.env.params.data_width // 8))
        elif kind == "overlong":
            lanes = self.env.params.data_width // 8
            edit(len(beats) - 1, last=False, keep=(1 << lanes) - 1)
            extra = rng.randint(1, 3)
            for j in range(extra):
                beats.append(type(beats[0])(data=rng.getrandbits(8 * lanes),
                                            keep=(1 << lanes) - 1, first=False,
                                            last=j == extra - 1))
        elif kind == "no first flag":
            edit(0, first=False)
        elif kind == "first flag inside":
            if len(beats) > 1:
                edit(rng.randrange(1, len(beats)), first=True)
            else:
                kind = "no first flag"
                edit(0, first=False)
        elif kind == "truncated":
            cut = rng.randrange(1, len(beats))
            beats = beats[:cut]
            edit(cut - 1, last=True)
        return kind, beats

    def packet(self, src):
        """(variant, beats): a legal packet (40%), a reduction contribution no armed group
        expects (5%), a random header (25%) or a mutation of a legal packet (30%)."""
        r = self.rng.random()
        if r < 0.4:
            variant, beats = "legal", self.legal(src)
        elif r < 0.45:
            variant, beats = "contribution, no such group", self.stray_contribution(src)
        elif r < 0.7:
            variant, beats = "random header", self.random_header(src)
        else:
            variant, beats = self.mutate(self.legal(src))
        self.tally[variant] += 1
        return variant, beats


def _reason_totals(env):
    totals = Counter()
    for counters in env.model.counters.values():
        for reason, name in REASON_COUNTER.items():
            if counters.get(name):
                totals[reason.name] += counters[name]
    return totals


async def _start(dut, multicast=True):
    env = SwitchEnv(dut, params_from_env(), seed_from_env())
    groups = random_multicast_config(env, env.rng) if multicast else []
    env.answer_reads = False        # random reads are delivered, not answered
    await env.start()
    return env, groups


@cocotb.test()
async def fuzz_packets(dut):
    """Random header bits and mutated legal packets (bit flips, truncated, overlong, keep
    holes, missing or extra first flags) mixed with legal traffic on every port, with random
    gaps and backpressure. Every legal packet is delivered exactly once and unmodified, every
    malformed one is counted under the reason the model gives; the switch drains within the
    bound."""
    env, groups = await _start(dut)
    per_port = packets_from_env(50)
    fuzz = Fuzzer(env, groups)
    env.ports.set_gap(0.2)
    env.ports.set_ready(0.7)
    for _ in range(per_port):
        for src in range(env.params.n_ports):
            env.send_beats(src, fuzz.packet(src)[1])
    await settle(env, "fuzz_packets")
    await env.check_counters()
    reasons = _reason_totals(env)
    dut._log.info(f"{sum(fuzz.tally.values())} packets: " + ", ".join(
        f"{k} {v}" for k, v in sorted(fuzz.tally.items())))
    dut._log.info(f"{env.delivered} packets delivered; drops and cuts by reason: " + ", ".join(
        f"{k} {v}" for k, v in sorted(reasons.items())))
    assert fuzz.tally["legal"] and len(reasons) >= 5, "the fuzz mix did not reach the checks"


@cocotb.test()
async def fuzz_reset(dut):
    """Reset asserted mid-traffic (mid-packet at some ingress, packets in the VOQs and a
    reduction round half contributed), three times: nothing sent before a reset is delivered
    after it, every counter restarts from 0, and fresh traffic (unicast, multicast and a whole
    reduction round) is delivered exactly once."""
    env, groups = await _start(dut)
    env.answer_reads = True
    params, rng, n = env.params, env.rng, env.params.n_ports
    per_port = packets_from_env(20)
    nrng = np.random.default_rng(env.seed)
    fuzz = Fuzzer(env, groups)
    dtype = params.reduce_dtypes[0]
    esize = dtype_info(dtype).width // 8
    elements = params.data_width // 8 // esize * 4
    members = (1 << min(n, 3)) - 1

    async def reduction_round(complete):
        """Arm a random group of ports 0-2 (an AllReduce of a 4-beat vector) and send all of
        the round's contributions, or about half of each member's."""
        red = Reduction(env)
        g = rng.randrange(params.n_rgroups)
        cfg = red.random_group(g, dtype, "sum", members, elements * esize, 0,
                               params.reduce_buffer_beats, collective=Collective.ALLREDUCE)
        await red.arm(g, cfg)
        rows = operands(nrng, dtype, bin(members).count("1"), elements)
        for i, p in enumerate(q for q in range(n) if members >> q & 1):
            pkts = red.round_packets(p, g, cfg, rows[i].tobytes())
            for pkt in (pkts if complete else pkts[:max(1, len(pkts) // 2)]):
                env.send_beats(p, pkt)

    for round_ in range(3):
        env.ports.set_gap(0.1)
        env.ports.set_ready(0.5)
        await reduction_round(complete=False)
        for _ in range(per_port):
            for src in range(n):
                env.send_beats(src, fuzz.legal(src))
        await ClockCycles(dut.clk, rng.randint(50, 400))
        while not any(env.ports.in_packet(p) for p in range(n)) and \
                any(env.ports.queues):
            await RisingEdge(dut.clk)
        in_packet = [p for p in range(n) if env.ports.in_packet(p)]
        lost = env.model.pending()
        cycles = rng.randint(1, 8)
        await env.reset(cycles)
        dut._log.info(f"reset {round_ + 1} for {cycles} cycles: ingresses {in_packet} "
                      f"mid-packet, {lost} packets in flight forgotten")
        env.ports.set_ready(1.0)
        await env.regs.write("inc_timeout", 0)
        # Nothing from before the reset comes out; every counter starts from 0.
        delivered = env.delivered
        await ClockCycles(dut.clk, 200)
        assert env.delivered == delivered, "a packet from before the reset was delivered"
        await env.check_counters()
        # Fresh traffic, a whole reduction round among it.
        await reduction_round(complete=True)
        for _ in range(per_port):
            for src in range(n):
                env.send_beats(src, fuzz.legal(src))
        await settle(env, f"after reset {round_ + 1}")
        await env.check_counters()
        assert sum(env.model.inc.completed) == 1, "the reduction after the reset did not complete"


class Reconfigurer:
    """Random legal reconfiguration over AXI4-Lite (docs/protocol.md section 8.6), one access
    at a time, each checked or mirrored in the model:

    * ``group``: rewrite a group-table entry in use, in lockstep with the model;
    * ``spare window``: reprogram a window no traffic uses (the switch's windows ``N`` and
      up, when traffic keeps to the 32-bit windows): disable, new base and limit inside the
      64-bit region of a random port, new port, enable; then probe it with one write and wait
      for its delivery (so no packet uses the window when it changes next);
    * ``rewrite``: write a register in use with the value it holds (must change nothing);
    * ``readback``: read a configuration register and compare with the model's value;
    * ``counters``: read a port's 64-bit counters atomically; they never decrease.

    Each kind comes once before any comes again (in random order), then at random.
    """

    OPS = ("group", "spare window", "rewrite", "readback", "counters")

    def __init__(self, env, fuzz, groups):
        self.env, self.fuzz, self.groups = env, fuzz, groups
        self.rng = env.rng
        self.tally = Counter()
        self.last_counters = {}
        n = env.params.n_ports
        self.spare = list(range(n, min(env.params.n_windows, 2 * n)))

    def _window_update(self, k, **changes):
        cfg = self.env.config

        def update():
            cfg.windows[k] = cfg.windows[k]._replace(**changes)
        return update

    async def op(self):
        env, rng, cfg = self.env, self.rng, self.env.config
        n = env.params.n_ports
        kinds = [o for o in self.OPS if self.spare or o != "spare window"]
        # every kind once first (in random order), so that a short run still has each
        kind = rng.choice([o for o in kinds if not self.tally[o]] or kinds)
        self.tally[kind] += 1
        if kind == "group":
            g, mask = rng.choice(self.groups), rng.getrandbits(n)

            def update():
                cfg.hc_groups[g] = mask
            await env.write_in_lockstep(f"hc_group[{g}]", mask, update)
        elif kind == "spare window":
            k = rng.choice(self.spare)
            port = rng.randrange(n)
            size = 1 << rng.randint(12, 28)
            base = env.plan.win64(port)[0] + ((k - n) << 28)
            limit = base + size - 1
            w = f"window[{k}]"
            await env.write_in_lockstep(f"{w}.ctrl", {"enable": 0, "port": cfg.windows[k].port},
                                        self._window_update(k, enable=False))
            for reg, value in (("base_lo", base & _M32), ("base_hi", base >> 32),
                               ("limit_lo", limit & _M32), ("limit_hi", limit >> 32)):
                await env.regs.write(f"{w}.{reg}", value)
            cfg.windows[k] = cfg.windows[k]._replace(base=base, limit=limit)   # disabled: unused
            enable = rng.random() < 0.8
            await env.write_in_lockstep(f"{w}.ctrl", {"enable": int(enable), "port": port},
                                        self._window_update(k, enable=enable, port=port))
            src = rng.randrange(n)
            nbytes = 4 * rng.randint(1, min(size, env.params.max_payload) // 4)
            address = base + 4 * rng.randrange((size - nbytes) // 4 + 1)
            beats = self.fuzz.mc.write(src, address, nbytes)
            env.send_beats(src, beats)
            if enable:
                await self._delivered(beats[0].hdr, port)
        elif kind == "rewrite":
            await self._rewrite(rng.choice(["window", "id_route", "group", "mc_receive",
                                            "port_enable", "root_port"]))
        elif kind == "readback":
            k = rng.randrange(n)
            base, limit, port, enable = cfg.windows[k]
            got = (await env.regs.read(f"window[{k}].base_lo"),
                   await env.regs.read(f"window[{k}].limit_hi"),
                   await env.regs.read_fields(f"window[{k}].ctrl"))
            assert got == (base & _M32, limit >> 32, {"enable": int(enable), "port": port}), \
                f"window[{k}] reads {got}"
            g = rng.choice(self.groups)
            assert await env.regs.read(f"hc_group[{g}]") == cfg.hc_groups.get(g, 0)
        else:
            p = rng.randrange(n)
            for name in ("rx_packets", "tx_beats"):
                value = await env.regs.read(f"port[{p}].{name}")
                last = self.last_counters.get((p, name), 0)
                assert value >= last, f"port[{p}].{name} went from {last} to {value}"
                self.last_counters[(p, name)] = value

    async def _rewrite(self, what):
        env, rng, cfg, regs = self.env, self.rng, self.env.config, self.env.regs
        n = env.params.n_ports
        if what == "window":
            k = rng.randrange(n)
            base, limit, port, enable = cfg.windows[k]
            await regs.write(f"window[{k}].base_lo", base & _M32)
            await regs.write(f"window[{k}].limit_hi", limit >> 32)
            await regs.write(f"window[{k}].ctrl", enable=int(enable), port=port)
        elif what == "id_route":
            k = rng.randrange(n)
            lo, hi, port, enable = cfg.id_routes[k]
            await regs.write(f"id_route[{k}]", bus_lo=lo, bus_hi=hi, port=port,
                             enable=int(enable))
        elif what == "group":
            g = rng.choice(self.groups)
            await regs.write(f"hc_group[{g}]", cfg.hc_groups.get(g, 0))
        elif what == "mc_receive":
            p = rng.randrange(n)
            await regs.write(f"mc_receive[{p}]", cfg.mc_receive[p])
        elif what == "port_enable":
            await regs.write("port_enable", cfg.port_enable)
        else:
            rp = cfg.root_port
            await regs.write("root_port", port=rp or 0, valid=int(rp is not None))

    async def _delivered(self, hdr, port, max_cycles=50_000):
        log = self.env.egress_log
        start = len(log)
        for _ in range(max_cycles):
            if any(p == port and pkt.hdr == hdr for _, p, _, pkt in log[start:]):
                return
            await RisingEdge(self.env.dut.clk)
        raise AssertionError(f"the probe of a reprogrammed window never reached port {port}")


@cocotb.test()
async def fuzz_reconfig(dut):
    """Random legal AXI4-Lite reconfiguration while every port sends (unicast reads, writes
    and messages, multicast by group and by destination set) with gaps and backpressure:
    the traffic never stops, each packet is routed by the configuration in force at its
    header (the model follows the writes in lockstep), registers read back as written, and
    the switch drains within the bound."""
    env, groups = await _start(dut)
    env.answer_reads = True
    env.keep_log = True
    env.plan.use64 = False          # traffic keeps to the 32-bit windows: the rest are spare
    params, rng, n = env.params, env.rng, env.params.n_ports
    per_port = packets_from_env(40)
    fuzz = Fuzzer(env, groups)
    reconf = Reconfigurer(env, fuzz, groups)
    env.ports.set_gap(0.3)
    env.ports.set_ready(0.7)

    async def feed():
        """Keep every ingress busy: top its queue up to a few beats, ``per_port`` packets."""
        left = [per_port] * n
        while any(left):
            for src in range(n):
                if left[src] and len(env.ports.queues[src]) < 8:
                    env.send_beats(src, fuzz.legal(src))
                    left[src] -= 1
            await RisingEdge(dut.clk)
    feeder = cocotb.start_soon(feed())
    while not feeder.done():
        await reconf.op()
        await ClockCycles(dut.clk, rng.randint(0, 20))
    await settle(env, "fuzz_reconfig")
    await env.check_counters()
    dut._log.info(f"{sum(reconf.tally.values())} reconfiguration steps during "
                  f"{env.delivered} deliveries: " + ", ".join(
                      f"{k} {v}" for k, v in sorted(reconf.tally.items())))
    assert reconf.tally["group"] and reconf.tally["rewrite"], "too little reconfiguration"
