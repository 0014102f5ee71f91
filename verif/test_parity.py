"""Fault campaign, parity (issue 6 item 3): a parity error injected through
``dbg_parity_inject`` into the Hypercast group table, an address window and a reduction
group's snapshots, amid random unicast traffic. The golden model is told which entry was
written with the injection (never reading RTL state) and predicts every PARITY drop, UR,
rejection notice and counter; the scoreboard checks that nothing is misrouted and everything
else is delivered. ``err_status`` must hold the first offending header; rewriting (re-arming)
the entry clears the fault. docs/protocol.md section 9.

Run through tests/test_sim.py. ``SMARTFABRIC_PACKETS`` scales the background traffic.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from ..models.formats import Collective, DropReason, ParityTarget, SfKind, sf_prefix
from ..models.reduction import dtype_info
from .env import SwitchEnv, drain_bound, params_from_env, packets_from_env, seed_from_env
from .multicast import Multicast
from .reduction import ARM_CYCLES, Reduction, operands

SCALE = packets_from_env(1)


def _background(env, per_port):
    """Random unicast writes, reads and messages between all ports."""
    n = env.params.n_ports
    for src in range(n):
        for _ in range(per_port):
            env.send_beats(src, env.random_packet(src, env.rng.randrange(n)))


async def _inject(env, target):
    await env.regs.write("dbg_parity_inject", target=int(target), arm=1)
    fields = await env.regs.read_fields("dbg_parity_inject")
    assert fields["pending"] == 1 and fields["target"] == target, fields


async def _assert_consumed(env):
    fields = await env.regs.read_fields("dbg_parity_inject")
    assert fields["pending"] == 0, f"injection still pending: {fields}"


async def _isolated_error(env, port, beats, reason=DropReason.PARITY):
    """Send ``beats`` alone from ``port`` (the switch otherwise idle), then check that
    err_status latched it with its header and prefix, as the model says; clear it."""
    await env.drain()
    await env.regs.write("err_status", valid=1)
    env.model.clear_err_status()
    env.send_beats(port, beats)
    await env.drain()
    want = env.model.err_status()
    assert want is not None and want.reason == reason and want.port == port, want
    assert want.hdr == beats[0].hdr and want.pfx == beats[0].pfx
    status = await env.regs.read_fields("err_status")
    assert (status["valid"], status["port"], status["reason"]) == (1, port, reason), status
    words = [await env.regs.read(f"err_hdr[{k}]") for k in range(5)]
    assert words[:4] == [want.hdr >> 32 * k & 0xFFFFFFFF for k in range(4)], \
        f"err_hdr {[hex(w) for w in words]}, expected header {want.hdr:#x}"
    assert words[4] == want.pfx, f"err_hdr[4] {words[4]:#x}, expected prefix {want.pfx:#x}"
    await env.regs.write("err_status", valid=1)
    env.model.clear_err_status()


async def _check_parity_counter(env):
    got = await env.regs.read("parity_errors")
    assert got == env.model.parity_errors, \
        f"parity_errors {got}, expected {env.model.parity_errors}"


async def _group_table(env, mc, per_port):
    """Group g is written with the injection: every HC_GROUP write to g is dropped as
    PARITY (whatever its mask says), other groups are delivered; rewritten, g works."""
    cfg, rng, n = env.config, env.rng, env.params.n_ports
    g, other = sorted(cfg.hc_groups)[:2]
    _background(env, per_port)
    await _inject(env, ParityTarget.HC_GROUP)
    mask = cfg.hc_groups[g]

    def corrupt():
        cfg.hc_group_parity_errors.add(g)
    await env.write_in_lockstep(f"hc_group[{g}]", mask, corrupt)
    await _assert_consumed(env)
    before = sum(c["drop_parity"] for c in env.model.counters.values())
    for src in range(n):
        for group in (g, other, g):
            env.send_beats(src, mc.to_group(src, group, 4 * rng.randint(1, mc.max_bytes // 4)))
    _background(env, per_port)
    await env.drain()
    dropped = sum(c["drop_parity"] for c in env.model.counters.values()) - before
    assert dropped == 2 * n, f"{dropped} PARITY drops, expected {2 * n}"
    src = rng.randrange(n)
    await _isolated_error(env, src, mc.to_group(src, g, 8))
    # rewriting the entry clears the fault
    await env.write_in_lockstep(f"hc_group[{g}]", mask,
                                lambda: cfg.hc_group_parity_errors.discard(g))
    for src in range(n):
        env.send_beats(src, mc.to_group(src, g, 8))
    await env.drain()
    assert sum(c["drop_parity"] for c in env.model.counters.values()) == before + 2 * n + 1


async def _window(env, mc, red, nrng, per_port):
    """Window t (port t's 32-bit window, t >= 1) is written with the injection: addresses
    of the windows numbered below t route as before; those of t and every later window (the
    64-bit ones), and addresses no window matches, are dropped as PARITY (reads answered
    with UR); a Hypercast copy to port t (whose receiver window is t) is dropped too, and so
    are the reduction engine's packets to ports t and above (:func:`_hidden_results`). ID
    routing is unaffected. Rewritten, window t works again."""
    cfg, rng, n = env.config, env.rng, env.params.n_ports
    t = rng.randrange(1, n)
    base, limit, port, enable = cfg.windows[t]
    _background(env, per_port)        # unicast only: receiver windows lag one cycle

    def corrupt():
        cfg.window_parity_errors.add(t)
    await _inject(env, ParityTarget.WINDOW)
    await env.write_in_lockstep(f"window[{t}].ctrl", dict(enable=int(enable), port=port),
                                corrupt)
    await _assert_consumed(env)
    before = sum(c["drop_parity"] for c in env.model.counters.values())
    urs = sum(c["ur_sent"] for c in env.model.counters.values())
    below, above = rng.randrange(t), rng.randrange(t, n)
    for src in range(n):
        env.send_tlp(src, env.mem_write(src, below, 16, wide=False))     # delivered
        env.send_tlp(src, env.mem_write(src, above, 16, wide=False))     # PARITY
        env.send_tlp(src, env.mem_read(src, above, 16, wide=False))      # PARITY, UR
        env.send_beats(src, mc.write(src, mc.window_address(0, 16), 16,
                                     sf_prefix(SfKind.HC_SET, mask=1 << t)))   # PARITY
        env.send_beats(src, mc.write(src, mc.window_address(0, 16), 16,
                                     sf_prefix(SfKind.HC_SET, mask=1 << below)))  # delivered
    _background(env, per_port)
    await env.drain()
    dropped = sum(c["drop_parity"] for c in env.model.counters.values()) - before
    assert dropped >= 3 * n, f"only {dropped} PARITY drops"
    assert sum(c["ur_sent"] for c in env.model.counters.values()) - urs >= n
    src = rng.randrange(n)
    await _isolated_error(env, src, env.beats_of_tlp(env.mem_read(src, above, 8, wide=False)))
    await _hidden_results(env, red, nrng, t)
    # rewriting any register of the window clears the fault
    await env.write_in_lockstep(f"window[{t}].base_lo", base & 0xFFFFFFFF,
                                lambda: cfg.window_parity_errors.discard(t))
    total = sum(c["drop_parity"] for c in env.model.counters.values())
    for src in range(n):
        env.send_tlp(src, env.mem_write(src, above, 16, wide=False))
        env.send_beats(src, mc.write(src, mc.window_address(0, 16), 16,
                                     sf_prefix(SfKind.HC_SET, mask=1 << t)))
    _background(env, per_port)
    await env.drain()
    assert sum(c["drop_parity"] for c in env.model.counters.values()) == total


async def _hidden_results(env, red, nrng, t):
    """With window t failing parity, the receiver windows of ports t and above are hidden:
    reduction results (one beat per round, so one packet per receiver) and notices to them are
    dropped and counted in ``parity_errors``, never sent with a wrong address; the members
    below t get theirs."""
    params, rng, n = env.params, env.rng, env.params.n_ports
    g = 0
    dtype = "int32" if "int32" in params.reduce_dtypes else params.reduce_dtypes[0]
    members = sorted({rng.randrange(t), rng.randrange(t, n), rng.randrange(n)})
    if len(members) < 2:
        members.append(next(p for p in range(n) if p not in members))
    mask = sum(1 << p for p in members)
    size = params.lanes
    cfg = red.random_group(g, dtype, "sum", mask, size, 0, params.reduce_min_group_beats,
                           collective=Collective.ALLREDUCE)
    await red.arm(g, cfg)
    before = env.model.parity_errors
    rounds = 3
    esize = dtype_info(dtype).width // 8
    for _ in range(rounds):
        rows = operands(nrng, dtype, len(members), size // esize).astype(f"<u{esize}")
        for k, p in enumerate(members):
            env.send_beats(p, red.contribution(p, g, cfg, 0, rows[k].tobytes()))
    # a contribution to a group that is not armed: its rejection notice to the sender
    hidden_sender = rng.randrange(t, n)
    stray = red.random_group(1, dtype, "sum", 1 << hidden_sender, size, 0,
                             params.reduce_min_group_beats)
    env.send_beats(hidden_sender, red.contribution(hidden_sender, 1, stray, 0, bytes(size)))
    # every result the engine sends goes out within the drain bound of an idle switch
    quiet, clk = 0, env.dut.clk
    while quiet < drain_bound(params):
        await RisingEdge(clk)
        quiet = quiet + 1 if env.ports.idle() else 0
    dropped = env.model.drop_hidden_results()
    hidden = [p for p in members if p >= t]
    assert dropped == rounds * len(hidden), (dropped, rounds, hidden)
    await env.drain()
    assert env.model.parity_errors - before == dropped + 1
    await red.disarm(g)


async def _rgroup(env, red, nrng, per_port):
    """Group g is armed with the injection: every contribution to it is rejected as PARITY
    (a notice to the sender at offset 0); re-armed, it completes a round."""
    params, rng, n = env.params, env.rng, env.params.n_ports
    g = params.n_rgroups - 1
    ring = 1 << ((params.reduce_buffer_beats // 2).bit_length() - 1)
    dtype = "int32" if "int32" in params.reduce_dtypes else params.reduce_dtypes[0]
    members = sorted(rng.sample(range(n), 3))
    mask = sum(1 << p for p in members)
    elements = 64
    cfg = red.random_group(g, dtype, "sum", mask, elements * 4, 0, ring,
                           collective=Collective.ALLREDUCE)
    await _inject(env, ParityTarget.RGROUP)
    await red.write_group(g, cfg)
    assert env.model.arm_rgroup(g, cfg, parity_error=True) == 0
    await ClockCycles(env.dut.clk, ARM_CYCLES)
    status = await env.regs.read_fields(f"rgroup[{g}].status")
    assert status == {"active": 1, "cause": 0}, status
    await _assert_consumed(env)
    rows = operands(nrng, dtype, len(members), elements)
    before = sum(c["drop_parity"] for c in env.model.counters.values())
    _background(env, per_port)
    for k, p in enumerate(members):
        env.send_beats(p, red.contribution(p, g, cfg, 0, rows[k].tobytes()[:64]))
    await env.drain()
    assert sum(c["drop_parity"] for c in env.model.counters.values()) - before == len(members)
    await _isolated_error(env, members[0],
                          red.contribution(members[0], g, cfg, 0, rows[0].tobytes()[:16]))
    # re-armed without the injection, the group reduces
    await red.arm(g, cfg)
    for k, p in enumerate(members):
        for pkt in red.round_packets(p, g, cfg, rows[k].tobytes()):
            env.send_beats(p, pkt)
    _background(env, per_port)
    await env.drain()
    assert env.model.inc.completed[g] == 1
    await red.disarm(g)


@cocotb.test()
async def fault_parity(dut):
    """Parity errors injected into each table in turn, each amid random traffic: exactly
    the packets whose routing reads the bad entry are dropped and counted (PARITY, UR for
    reads, notices for contributions), nothing is misrouted, the rest is delivered;
    err_status holds the offending header; rewriting the entry clears the fault. Ends with
    every port counter, err_count and parity_errors compared with the model."""
    params = params_from_env()
    env = SwitchEnv(dut, params, seed_from_env())
    rng = env.rng
    n = params.n_ports
    env.config.hc_groups = {g: rng.getrandbits(n) | 1 << rng.randrange(n)
                            for g in rng.sample(range(1, params.n_groups), 2)}
    await env.start()
    mc, red = Multicast(env), Reduction(env)
    nrng = np.random.default_rng(env.seed)
    per_port = 4 * SCALE
    await _group_table(env, mc, per_port)
    await _window(env, mc, red, nrng, per_port)
    await _rgroup(env, red, nrng, per_port)
    await env.drain()
    await env.check_counters()
    await _check_parity_counter(env)
    dut._log.info(f"parity: {env.model.parity_errors} packets dropped or rejected as PARITY, "
                  f"{env.delivered} delivered")
