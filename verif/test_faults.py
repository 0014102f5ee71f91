"""Fault campaign (issue 6): an egress stuck not-ready, an ingress stalled mid-packet for
10,000 cycles, a port disabled while a packet is crossing it. Each test ends by draining the
switch (every packet delivered exactly once and unmodified, per the golden model) and
comparing every counter. (A reduction member that never sends: ``reduce_timeout`` in
verif/test_reduce.py.)

Run through tests/test_sim.py.
"""

import cocotb
from cocotb.triggers import RisingEdge

from ..models.formats import DropReason
from .env import SwitchEnv, params_from_env, packets_from_env, seed_from_env

WARMUP = 200
#: Cycles of ``fault_stuck_egress``'s measurement window per unit of ``SMARTFABRIC_PACKETS``.
WINDOW_UNIT = 1000
STALL_CYCLES = 10_000


def _jain(values):
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    total = sum(values)
    return total * total / (len(values) * sum(v * v for v in values)) if total else 1.0


async def _start(dut):
    env = SwitchEnv(dut, params_from_env(), seed_from_env())
    await env.start()
    env.keep_log = True
    return env


@cocotb.test()
async def fault_stuck_egress(dut):
    """Egress k never raises ready. Every source has one write queued for k (held in its VOQ
    without blocking the source) and saturates the other egresses with 4-beat writes. Over a
    window of 1,000 x ``SMARTFABRIC_PACKETS`` cycles (default 2,000) every live egress stays
    busy (>= 0.8 beats per cycle) and shares itself fairly among the sources (Jain index
    >= 0.9); once k comes back, everything is delivered."""
    window_cycles = WINDOW_UNIT * packets_from_env(2)
    env = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    lanes = params.data_width // 8
    stuck = rng.randrange(n)
    live = [p for p in range(n) if p != stuck]
    env.ports.blocked.add(stuck)
    env.ports.set_gap(0.0)
    env.ports.set_ready([0.0 if p == stuck else 1.0 for p in range(n)])
    nbytes = min(params.max_payload, 4 * lanes)
    beats = -(-nbytes // lanes)
    per_source = (WARMUP + window_cycles) * len(live) // (n * beats) + 64
    for src in range(n):
        env.send_tlp(src, env.mem_write(src, stuck, min(nbytes, params.voq_depth * lanes),
                                        wide=False))
        for _ in range(per_source):
            env.send_tlp(src, env.mem_write(src, rng.choice(live), nbytes, wide=False))
    start = env.ports.cycle + WARMUP
    while env.ports.cycle < start + window_cycles:
        await RisingEdge(dut.clk)
    window = [(port, src, len(pkt)) for cycle, port, src, pkt in env.egress_log
              if start < cycle <= start + window_cycles]
    assert not [w for w in window if w[0] == stuck], "the stuck egress delivered"
    for port in live:
        got = [b for p, _, b in window if p == port]
        rate = sum(got) / window_cycles
        shares = [sum(b for p, s, b in window if p == port and s == src) for src in range(n)]
        fairness = _jain(shares)
        dut._log.info(f"egress {port}: {rate:.3f} beats/cycle, per source {shares}, "
                      f"Jain {fairness:.3f}")
        assert rate >= 0.8, f"egress {port} slowed to {rate:.3f} beats/cycle by stuck {stuck}"
        assert fairness >= 0.9, f"egress {port} unfair while {stuck} is stuck: {shares}"
    env.ports.blocked.clear()
    env.ports.set_ready(1.0)
    await env.drain()
    await env.check_counters()


@cocotb.test()
async def fault_ingress_stall(dut):
    """Ingress p stops for 10,000 cycles in the middle of a maximum-payload write to egress
    e (valid low; the stream rules allow it). Traffic between the other ports keeps flowing
    meanwhile; the write then completes and everything is delivered."""
    env = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    p, e = rng.sample(range(n), 2)
    others = [q for q in range(n) if q not in (p, e)]
    env.send_tlp(p, env.mem_write(p, e, params.max_payload, wide=False))
    while not env.ports.in_packet(p) or env.ports.queues[p] and \
            len(env.ports.queues[p]) > (params.max_payload * 8 // params.data_width) // 2:
        await RisingEdge(dut.clk)
    env.ports.stalled.add(p)
    stall_start = env.ports.cycle
    for src in others:
        for _ in range(16):
            env.send_beats(src, env.random_packet(src, rng.choice(others) if len(others) > 1
                                                  else src, mix=(0.8, 0.2, 0.0)))
    while env.ports.cycle < stall_start + STALL_CYCLES:
        await RisingEdge(dut.clk)
    during = [x for x in env.egress_log if stall_start < x[0] and x[2] in others]
    assert len(during) >= 16 * len(others) * 0.9, \
        f"only {len(during)} packets of other ports crossed during the stall"
    assert not [x for x in env.egress_log if x[2] == p], "the stalled write was delivered"
    env.ports.stalled.clear()
    await env.drain()
    assert [x for x in env.egress_log if x[2] == p], "the stalled write was lost"
    await env.check_counters()


@cocotb.test()
async def fault_port_disabled_mid_packet(dut):
    """Port p is disabled while its maximum-payload write to e is half way in: that write
    completes (port_enable is checked on first beats), later packets from p and to p are
    dropped and counted as PORT_DISABLED (a read to p answered with UR), everything else
    flows; re-enabled, p works again."""
    env = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    p, e = rng.sample(range(n), 2)
    env.ports.set_gap([0.5 if q == p else 0.1 for q in range(n)])
    for q in range(n):
        for _ in range(8):
            env.send_beats(q, env.random_packet(q, rng.randrange(n)))
    await env.drain()
    # p's long write starts; every other ingress stops at its next packet start
    env.send_tlp(p, env.mem_write(p, e, params.max_payload, wide=False))
    env.ports.held.update(q for q in range(n) if q != p)
    while not env.ports.in_packet(p):
        await RisingEdge(dut.clk)
    env.ports.stalled.add(p)             # keep it half way in until the write is done
    while env.model.pending():           # nothing else in flight: the write is the only one
        await RisingEdge(dut.clk)
    assert env.ports.in_packet(p)
    await env.set_port_enabled(p, False)
    env.ports.held.clear()
    env.ports.stalled.clear()
    for q in range(n):
        for _ in range(6):
            env.send_beats(q, env.random_packet(q, rng.randrange(n)))
    await env.drain()
    counts = env.model.counters
    dropped = sum(counts[q]["drop_port_disabled"] for q in range(n))
    dut._log.info(f"port {p} disabled mid-packet: {dropped} packets dropped as PORT_DISABLED")
    assert counts[p]["drop_port_disabled"] >= 6, "packets from the disabled port were not dropped"
    assert env.model.errors and any(r.reason == DropReason.PORT_DISABLED
                                    for r in env.model.errors)
    await env.set_port_enabled(p, True)
    for q in range(n):
        env.send_beats(q, env.random_packet(q, p))
    await env.drain()
    await env.check_counters()
