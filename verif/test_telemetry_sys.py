"""System tests of the switch's telemetry (docs/telemetry.md) over AXI4-Lite, against what the
bench itself drove and saw at the ports (not against RTL internals):

* ``telemetry_counters``: latency histograms (zero load in the documented bucket; per egress,
  the total equals the packets the bench received there), link status (a disabled port, a
  stuck egress, errors, the write-1-to-clear bits) and the reduction group statistics (all
  five words of every group: completed and aborted operations, NaN, infinity and saturated
  result elements, against the golden model's prediction for the rounds driven with
  ``verif/reduction.py``).
* ``telemetry_capture``: a filtered capture (the drops at one port) holds exactly the drops the
  bench sent there, dumped over AXI4-Lite and printed with ``verif/capture.py``; in TRIGGER
  mode a malformed packet freezes the ring with its header in it.

Run through tests/test_sim.py; ``SMARTFABRIC_PACKETS`` is the random packets per port.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ..models.capture_format import (
    ENTRY_WORDS, GROUP_STATS, KEY_WORDS, CaptureKind, capture_filter, latency_bucket,
)
from ..models.formats import Collective, DropReason
from ..models.reduction import dtype_info
from .capture import decode_capture, format_capture_table, ring_order
from .env import SwitchEnv, bad_packets, params_from_env, packets_from_env, seed_from_env
from .reduction import Reduction, ring_beats, special_operands

PACKETS = packets_from_env(8)
N_BUCKETS = 16
# Handshake to handshake: the core's 3 cycles to the first valid egress cycle, plus that cycle.
ZERO_LOAD_LATENCY = 4
STUCK_THRESHOLD = 100


async def _start(dut):
    env = SwitchEnv(dut, params_from_env(), seed_from_env())
    await env.start()
    env.keep_log = True
    return env


async def _histograms(env):
    paths = [[f"latency_hist[{q}][{k}]" for k in range(N_BUCKETS)]
             for q in range(env.params.n_ports)]
    got = await env.regs.read_many(path for row in paths for path in row)
    return [[got[path] for path in row] for row in paths]


def _delivered(env, port):
    """Packets the bench received at egress ``port`` so far (every one is VOQ traffic here:
    the engine's packets are counted apart by the callers that cause them)."""
    return sum(1 for _, q, _, _ in env.egress_log if q == port)


async def _check_latency(env):
    dut, n, rng = env.dut, env.params.n_ports, env.rng
    # Zero load: one single-beat write to each egress at a time, every egress ready.
    for q in range(n):
        src = rng.randrange(n)
        env.send_tlp(src, env.mem_write(src, q, 4, wide=False))
        await env.drain()
    # one packet in flight at a time: the k-th first beat accepted is the k-th delivered
    assert len(env.ingress_log) == len(env.egress_log) == n
    measured = {q: out_cycle - in_cycle
                for (in_cycle, _, _), (out_cycle, q, _, _) in zip(env.ingress_log, env.egress_log)}
    dut._log.info(f"zero-load latency at the ports, per egress: {measured}")
    assert measured == {q: ZERO_LOAD_LATENCY for q in range(n)}, measured
    bucket = latency_bucket(ZERO_LOAD_LATENCY, N_BUCKETS)
    for q, hist in enumerate(await _histograms(env)):
        assert hist == [int(k == bucket) for k in range(N_BUCKETS)], (q, hist)
    # Load: random traffic with gaps and backpressure.
    env.ports.set_gap(0.1)
    env.ports.set_ready([rng.choice([0.3, 0.7, 1.0]) for _ in range(n)])
    for src in range(n):
        for _ in range(PACKETS):
            env.send_beats(src, env.random_packet(src, rng.randrange(n)))
    await env.drain()
    env.ports.set_ready(1.0)
    env.ports.set_gap(0.0)
    hists = await _histograms(env)
    for q, hist in enumerate(hists):
        dut._log.info(f"latency_hist[{q}]: {hist}")
        assert sum(hist) == _delivered(env, q), \
            f"egress {q}: histogram total {sum(hist)}, bench received {_delivered(env, q)}"
    assert any(hist[bucket + 1:] != [0] * (N_BUCKETS - bucket - 1) for hist in hists), \
        "backpressure should have slowed some packets past the zero-load bucket"


async def _link_status(env, port):
    return await env.regs.read_fields(f"link_status[{port}]")


async def _check_link_status(env):
    dut, n, rng = env.dut, env.params.n_ports, env.rng
    regs = env.regs
    await regs.write("telemetry_ctrl", stuck_threshold=STUCK_THRESHOLD)
    disabled, stuck, bad = rng.sample(range(n), 3)
    await env.set_port_enabled(disabled, False)
    await ClockCycles(dut.clk, 2)
    for p in range(n):
        st = await _link_status(env, p)
        assert st["enabled"] == int(p != disabled), (p, st)
    # A packet from the disabled port is dropped: an error at that port.
    other = next(p for p in range(n) if p not in (disabled, stuck))
    env.send_tlp(disabled, env.mem_write(disabled, other, 4, wide=False))
    await env.drain()
    # An egress that stops taking beats.
    env.ports.blocked.add(stuck)
    env.send_tlp(other, env.mem_write(other, stuck, 4, wide=False))
    await ClockCycles(dut.clk, STUCK_THRESHOLD + 50)
    st = await _link_status(env, stuck)
    dut._log.info(f"link_status[{stuck}] while stuck: {st}")
    assert st["tx_stuck"] == 1 and st["tx_stuck_seen"] == 1, st
    assert st["stall_cycles"] > STUCK_THRESHOLD, st
    for p in range(n):
        if p != stuck:
            assert (await _link_status(env, p))["tx_stuck"] == 0, p
    env.ports.blocked.clear()
    await env.drain()
    await ClockCycles(dut.clk, 2)
    st = await _link_status(env, stuck)
    assert st["tx_stuck"] == 0 and st["tx_stuck_seen"] == 1 and st["stall_cycles"] == 0, st
    assert st["tx_active"] == 1, st
    # A write to an unmapped address: an error at its ingress.
    env.send_beats(bad, dict(bad_packets(env, bad, other))["write to unmapped address"])
    await env.drain()
    expect_error = {disabled: DropReason.PORT_DISABLED, bad: DropReason.NO_ROUTE}
    for p in range(n):
        st = await _link_status(env, p)
        want = expect_error.get(p)
        assert st["error_seen"] == int(want is not None), (p, st)
        if want is not None:
            assert st["last_error"] == want, (p, st)
            assert st["rx_active"] == 1, (p, st)
    # Writing 1 to a sticky bit clears both sticky bits and last_error.
    await regs.write(f"link_status[{stuck}]", tx_stuck_seen=1)
    await regs.write(f"link_status[{bad}]", error_seen=1)
    for p in (stuck, bad):
        st = await _link_status(env, p)
        assert st["tx_stuck_seen"] == 0 and st["error_seen"] == 0 and st["last_error"] == 0, \
            (p, st)
    await env.set_port_enabled(disabled, True)


def _statistics_plan(params, rng):
    """One group per kind of result the statistics count, from the types the build has:
    an E4M3 sum with saturate on (saturations, genuine 448s, NaNs), an E5M2 sum with the flag
    at random (infinities in: saturations, or infinities), the widest other float type's sum
    (overflow to infinities, NaNs), and a float maximum or an integer reduction."""
    built = params.reduce_dtypes
    floats = [d for d in ("fp32", "bf16", "fp16") if d in built]
    plan = []
    if "fp8_e4m3" in built:
        plan.append(("fp8_e4m3", "sum", True))
    if "fp8_e5m2" in built:
        plan.append(("fp8_e5m2", "sum", rng.random() < 0.5))
    if floats:
        plan.append((floats[0], "sum", True))
    plan.append((rng.choice(floats), "max", True) if floats and rng.random() < 0.5
                else (rng.choice([d for d in built if not dtype_info(d).is_float] or built),
                      "sum", True))
    return plan[:params.n_rgroups]


async def _check_group_statistics(env):
    """The five words of every group's ``rgroup_stats`` against the model's prediction
    (``IncModel.group_stats``: completed and aborted operations, NaN, infinity and saturated
    result elements), after rounds whose results contain NaNs, infinities, saturated fp8
    values and max-finite sums that are not saturations, over random collectives and member
    sets, and an operation aborted by the timeout; then ``gstat_clear`` and one more round."""
    dut, params, n = env.dut, env.params, env.params.n_ports
    red, nrng, rng = Reduction(env), np.random.default_rng(env.seed), env.rng
    timeout = 1000
    await env.regs.write("inc_timeout", timeout)
    plan = _statistics_plan(params, rng)
    ring = ring_beats(params, len(plan))
    lanes = params.data_width // 8
    groups, data = {}, {}
    for g, (dtype, op, saturate) in enumerate(plan):
        esize = dtype_info(dtype).width // 8
        k = rng.randint(2, n) if n > 2 else n
        mask = sum(1 << p for p in rng.sample(range(n), k))
        elements = ring * lanes // esize // rng.choice([1, 2])      # a round fits the ring
        elements -= rng.randrange(4 // esize, lanes // esize + 1, max(1, 4 // esize))
        cfg = red.random_group(g, dtype, op, mask, elements * esize, g * ring, ring)
        cfg.saturate = saturate
        await red.arm(g, cfg)
        groups[g] = cfg
        data[g] = [special_operands(nrng, dtype, k, elements) for _ in range(2)]
        dut._log.info(f"group {g}: {dtype} {op} saturate={int(saturate)} "
                      f"{Collective(cfg.collective).name} members {mask:#x}, {elements} "
                      f"elements")
    await red.run_rounds(groups, data)
    await env.drain()
    # an operation of group 0 with a member that never sends: the timeout aborts it (no
    # result of it can have been produced)
    cfg = groups[0]
    members = cfg.member_ports()
    rows = special_operands(nrng, cfg.dtype, len(members), cfg.size // (
        dtype_info(cfg.dtype).width // 8))
    for i, p in enumerate(members[:-1]):
        for pkt in red.round_packets(p, 0, cfg, rows[i].tobytes()):
            env.send_beats(p, pkt)
    await env.drain()
    env.model.abort_rgroup(0)
    await ClockCycles(dut.clk, timeout + 200)
    await env.drain()
    inc = env.model.inc
    assert [inc.completed[g] for g in groups] == [2] * len(groups) and inc.aborted[0] == 1
    predicted = {g: inc.group_stats(g) for g in range(params.n_rgroups)}
    dut._log.info(f"rgroup_stats predicted ({', '.join(GROUP_STATS)}): {predicted}")
    for name in ("nan", "infinity", "saturation"):
        k = GROUP_STATS.index(name)
        assert any(stats[k] for stats in predicted.values()), f"no {name} event was driven"
    mismatches = await red.group_stats_mismatches()
    assert not mismatches, "\n".join(mismatches)
    # clear: every word 0; counting goes on from there
    await env.regs.write("telemetry_ctrl", gstat_clear=1)
    inc.clear_stats()
    mismatches = await red.group_stats_mismatches()
    assert not mismatches, "after gstat_clear:\n" + "\n".join(mismatches)
    g = len(groups) - 1
    await red.run_rounds({g: groups[g]}, {g: [special_operands(
        nrng, groups[g].dtype, len(groups[g].member_ports()), data[g][0].shape[1])]})
    await env.drain()
    mismatches = await red.group_stats_mismatches()
    assert not mismatches, "after gstat_clear and a round:\n" + "\n".join(mismatches)
    for g in groups:
        await red.disarm(g)


@cocotb.test()
async def telemetry_counters(dut):
    """Latency histograms, link status and reduction group statistics against the bench."""
    env = await _start(dut)
    await _check_latency(env)
    await _check_link_status(env)
    await _check_group_statistics(env)
    await env.check_counters()


# ---- capture ---------------------------------------------------------------------------------

async def _program_capture(env, *, match, mask, mode, post_trigger=0):
    regs = env.regs
    await regs.write("cap_ctrl", enable=0)
    for k in range(KEY_WORDS):
        await regs.write(f"cap_match[{k}]", (match >> (32 * k)) & 0xFFFF_FFFF)
        await regs.write(f"cap_mask[{k}]", (mask >> (32 * k)) & 0xFFFF_FFFF)
    await regs.write("cap_post_trigger", post_trigger)
    await regs.write("cap_ctrl", mode=mode)
    await regs.write("cap_cmd", arm=1)
    await regs.write("cap_ctrl", enable=1)


async def _dump_capture(env):
    """(status, decoded records oldest first) of the ring, read over AXI4-Lite."""
    regs = env.regs
    params = await regs.read_fields("cap_depth")
    status = await regs.read_fields("cap_status")
    ptr = await regs.read_fields("cap_ptr")
    assert params["depth"] == env.params.capture_depth
    assert params["n_sources"] == 3 * env.params.n_ports
    raw = []
    for i in ring_order(ptr["oldest"], status["count"], params["depth"]):
        raw.append([await regs.read(f"cap_entry[{i}][{k}]") for k in range(ENTRY_WORDS)])
    records = decode_capture(raw, ts_width=params["ts_width"])
    status["missed"] = await regs.read("cap_missed")
    status["trigger_time"] = await regs.read("cap_trigger_time")
    return status, records


def _whole_drops(bad):
    """The packets of ``bad_packets`` an ingress drops whole (DROP, not CUT or CONSUMED)."""
    cut = ("keep hole on later beat", "truncated later", "overlong", "first flag inside packet")
    return [(what, beats) for what, beats in bad
            if what not in cut and what != "local message (consumed)"]


@cocotb.test()
async def telemetry_capture(dut):
    """A filter for the drops at one port records exactly the drops sent there, with their
    headers and reasons, and nothing else (good traffic and drops at other ports around them);
    TRIGGER mode with no filter freezes the ring post_trigger entries after a malformed packet,
    whose header is in the ring, marked as the trigger."""
    env = await _start(dut)
    n, rng = env.params.n_ports, env.rng
    port, elsewhere = rng.sample(range(n), 2)
    # ---- filter: DROP at one port ----
    match, mask = capture_filter(kind=CaptureKind.DROP, port=port)
    await _program_capture(env, match=match, mask=mask, mode=0)
    drops = _whole_drops(bad_packets(env, port, elsewhere))
    decoys = bad_packets(env, elsewhere, port)
    errors_before = len(env.model.errors)
    for k, (_, beats) in enumerate(drops):
        for src in range(n):
            env.send_beats(src, env.random_packet(src, rng.randrange(n)))
        env.send_beats(port, beats)
        env.send_beats(elsewhere, decoys[k % len(decoys)][1])
    await env.drain()
    await ClockCycles(env.dut.clk, 4)
    status, records = await _dump_capture(env)
    dut._log.info(f"capture of the drops at port {port}:\n" + format_capture_table(records))
    expected = [e for e in env.model.errors[errors_before:] if e.port == port]
    assert len(expected) == len(drops)
    assert status["missed"] == 0 and status["count"] == len(drops), status
    got = [(r.port, r.kind, r.reason, r.hdr, r.pfx) for r in records]
    want = [(port, CaptureKind.DROP, e.reason, e.hdr, e.pfx) for e in expected]
    assert got == want, f"capture\n{got}\nexpected\n{want}"
    assert [beats[0].hdr for _, beats in drops] == [r.hdr for r in records]
    assert all(b > a for a, b in zip([r.timestamp for r in records],
                                     [r.timestamp for r in records][1:]))

    # ---- trigger: everything, frozen by a malformed packet ----
    post = 4
    await _program_capture(env, match=0, mask=0, mode=1, post_trigger=post)
    malformed = dict(bad_packets(env, port, elsewhere))["unknown type"]
    # one packet at a time: simultaneous headers would fill the capture's batch register and
    # the events behind them would be lost (counted in cap_missed, docs/telemetry.md 3.3)
    for src in range(n):
        env.send_beats(src, env.random_packet(src, rng.randrange(n), mix=(1.0, 0.0, 0.0)))
        await env.drain()
    env.send_beats(port, malformed)
    await env.drain()
    for src in range(n):
        for _ in range(2):
            env.send_beats(src, env.random_packet(src, rng.randrange(n), mix=(1.0, 0.0, 0.0)))
    await env.drain()
    await ClockCycles(env.dut.clk, 4)
    status, records = await _dump_capture(env)
    dut._log.info(f"capture frozen by the malformed packet at port {port}:\n"
                  + format_capture_table(records))
    assert status["triggered"] == 1 and status["frozen"] == 1, status
    trig = [r for r in records if r.trig]
    assert len(trig) == 1, trig
    t = trig[0]
    assert (t.port, t.kind, t.reason, t.hdr) == (
        port, CaptureKind.DROP, DropReason.MALFORMED, malformed[0].hdr), t
    assert t.timestamp == status["trigger_time"]
    after = [r for r in records if r.timestamp > t.timestamp]
    assert len(after) == post, f"{len(after)} entries after the trigger, expected {post}"
    before = [r for r in records if r.timestamp < t.timestamp]
    assert {r.kind for r in before} >= {CaptureKind.INGRESS, CaptureKind.EGRESS}
    # Frozen: more traffic changes nothing.
    for src in range(n):
        env.send_beats(src, env.random_packet(src, rng.randrange(n)))
    await env.drain()
    assert (await env.regs.read_fields("cap_status"))["count"] == status["count"]
    await env.check_counters()
