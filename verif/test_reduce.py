"""cocotb tests of in-network reduction in the switch (docs/reduction-engine.md) against the
golden model: every result byte is compared bit for bit with ``models.reduction.reduce`` of
the members' contributions, every rejection with its notice and counter.

Run through tests/test_sim.py. ``SMARTFABRIC_PACKETS`` scales each test (see its docstring);
``SMARTFABRIC_SEED`` reruns a seed.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ..models.formats import Collective, DropReason, RGroupConfigError, inc_prefix
from ..models.inc_model import RGroup, result_receivers
from ..models.reduction import DTYPE_NAMES, dtype_info
from ..models import tlp_build as tb
from .env import SwitchEnv, params_from_env, packets_from_env, seed_from_env
from .reduction import ARM_CYCLES, Reduction, operands, ops_of, ring_beats

SCALE = packets_from_env(1)


async def _start(dut, timeout=0):
    params = params_from_env()
    env = SwitchEnv(dut, params, seed_from_env())
    await env.start()
    await env.regs.write("inc_timeout", timeout)
    return env, Reduction(env), np.random.default_rng(env.seed)


async def _check_reduction_counters(env):
    """Per-group and total engine counters and every group's statistics window
    (``rgroup_stats``: completed, aborted, NaN, infinity, saturation) over AXI4-Lite against
    the model, then every port counter."""
    inc = env.model.inc
    mismatches = await Reduction(env).group_stats_mismatches()
    expect = {}
    for g in range(env.params.n_rgroups):
        expect.update({f"rgroup[{g}].completed": inc.completed[g],
                       f"rgroup[{g}].aborted": inc.aborted[g]})
    expect.update({"inc_completed": sum(inc.completed), "inc_aborted": sum(inc.aborted),
                   "inc_config_errors": inc.config_errors})
    mismatches += await env.regs.mismatches(expect)
    assert not mismatches, "reduction counter mismatches:\n" + "\n".join(mismatches)
    await env.check_counters()


def _combos(params):
    """Every (element type, operation) the build supports."""
    return [(d, op) for d in params.reduce_dtypes for op in ops_of(d)]


def _member_sets(rng, n, count):
    """``count`` random member masks: sizes 2..n (odd ones included), now and then 1."""
    masks = []
    for _ in range(count):
        k = int(rng.integers(2, n + 1)) if rng.random() < 0.9 else 1
        masks.append(sum(1 << int(p) for p in rng.choice(n, size=k, replace=False)))
    return masks


@cocotb.test()
async def reduce_random(dut):
    """Every element type x operation the build has (``SMARTFABRIC_PACKETS`` = 0 runs them
    all, k > 0 a random k of them), four groups at a time with random member sets (1..N
    members, odd counts), collectives, window addresses (32/64-bit), round sizes and write
    cuts; round 2 of each group sends round 1's rows permuted over the members (the result must
    not change); unicast traffic, gaps and backpressure around it. Every result byte and
    every counter is checked."""
    env, red, nrng = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    combos = _combos(params)
    rng.shuffle(combos)
    if SCALE > 0:
        combos = combos[:SCALE]
    per_batch = min(4, params.n_rgroups)
    ring = ring_beats(params, per_batch)
    lanes = params.data_width // 8
    env.ports.set_gap([rng.choice([0.0, 0.1, 0.3]) for _ in range(n)])
    env.ports.set_ready([rng.choice([1.0, 0.9, 0.6]) for _ in range(n)])
    elements_done = 0
    for start in range(0, len(combos), per_batch):
        batch = combos[start:start + per_batch]
        groups, data = {}, {}
        masks = _member_sets(nrng, n, len(batch))
        gids = rng.sample(range(params.n_rgroups), len(batch))
        for k, ((dtype, op), mask, g) in enumerate(zip(batch, masks, gids)):
            esize = dtype_info(dtype).width // 8
            max_el = ring * lanes // esize             # a round fits the ring
            elements = int(nrng.integers(1, max_el + 1)) if rng.random() < 0.5 else max_el
            elements -= elements % max(1, 4 // esize)
            elements = max(elements, 4 // esize)
            cfg = red.random_group(g, dtype, op, mask, elements * esize,
                                   buf_base=k * ring, buf_beats=ring)
            await red.arm(g, cfg)
            groups[g] = cfg
            m = bin(mask).count("1")
            first = operands(nrng, dtype, m, elements)
            data[g] = [first, first[nrng.permutation(m)]]
            elements_done += 2 * elements
            dut._log.info(f"group {g}: {dtype} {op} {Collective(cfg.collective).name} "
                          f"members {mask:#x} ({m}), {elements} elements, ring {ring} beats")
        for _ in range(2 * n):
            src = rng.randrange(n)
            env.send_beats(src, env.random_packet(src, rng.randrange(n)))
        await red.run_rounds(groups, data)
        await env.drain()
        for g in groups:
            await red.disarm(g)
    dut._log.info(f"{len(combos)} type x operation combinations, {elements_done} elements "
                  f"per member reduced and checked")
    await _check_reduction_counters(env)


@cocotb.test()
async def reduce_volume(dut):
    """``SMARTFABRIC_PACKETS`` elements of every element type the build has (sum, every port
    a member, AllReduce), in rounds of up to 16 KiB through one ring, random write cuts,
    light backpressure: the bulk bit-exactness check."""
    env, red, nrng = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    total = max(SCALE, 1)
    ring = ring_beats(params, 1)
    env.ports.set_ready([0.95] * n)
    everyone = (1 << n) - 1
    for k, dtype in enumerate(params.reduce_dtypes):
        esize = dtype_info(dtype).width // 8
        per_round = max(1, min(total, 16384 // esize))
        g = k % params.n_rgroups
        rounds = -(-total // per_round)
        cfg = red.random_group(g, dtype, "sum", everyone, per_round * esize, 0, ring,
                               collective=Collective.ALLREDUCE)
        await red.arm(g, cfg)
        for first in range(0, rounds, 16):      # 16 rounds at a time: bounded memory
            batch = [operands(nrng, dtype, n, per_round)
                     for _ in range(min(16, rounds - first))]
            await red.run_rounds({g: cfg}, {g: batch})
            await env.drain()
        await red.disarm(g)
        dut._log.info(f"{dtype}: {rounds * per_round} elements x {n} members reduced and "
                      f"checked")
    await _check_reduction_counters(env)


@cocotb.test()
async def reduce_bad_input(dut):
    """Every rejection reason (unknown and idle group, non-member, type and operation
    mismatch, outside the buffer, bad byte enables, duplicate, gap) amid a group's good
    contributions, each counted with its notice and ``err_status``; every arming error cause
    in ``status.cause``. The group completes its rounds unharmed."""
    env, red, nrng = await _start(dut)
    params, rng, n = env.params, env.rng, env.params.n_ports
    ring = ring_beats(params, 2)
    dtype = "int32" if "int32" in params.reduce_dtypes else params.reduce_dtypes[0]
    esize = dtype_info(dtype).width // 8
    elements = ring * params.data_width // 8 // esize // 2
    members = [0, 1] if n < 3 else [0, 2]
    mask = sum(1 << p for p in members)
    outsider = next(p for p in range(n) if p not in members)
    g = params.n_rgroups - 1
    cfg = red.random_group(g, dtype, "sum", mask, elements * esize, 0, ring,
                           collective=Collective.ALLREDUCE)
    await red.arm(g, cfg)
    idle = 0 if g else None

    def bad(port, reason, pfx=None, offset=0, nbytes=16, hdr_fn=None):
        """Send one bad contribution, alone, and check its error record."""
        data = rng.randbytes(nbytes)
        if hdr_fn:
            beats = tb.packet_beats(hdr_fn(), pfx, data, params.data_width)
        else:
            beats = red.contribution(port, g, cfg, offset, data, pfx=pfx)
        env.send_beats(port, beats)
        return reason

    rows = operands(nrng, dtype, len(members), elements)
    half = min(elements * esize // 2 // 4 * 4, params.max_payload)
    cases = [
        (outsider, DropReason.INC_NOT_MEMBER, None, 0, 16, None),
        (members[0], DropReason.INC_BAD_GROUP, inc_prefix(min(255, params.n_rgroups), dtype, 0),
         0, 16, None),
        (members[0], DropReason.INC_MISMATCH, inc_prefix(g, "uint32" if dtype != "uint32"
                                                          else "int32", 0), 0, 16, None),
        (members[0], DropReason.INC_MISMATCH, inc_prefix(g, dtype, 1), 0, 16, None),
        (members[0], DropReason.INC_OUTSIDE, None, cfg.size - 8, 16, None),
        (members[0], DropReason.INC_OFFSET, None, 4, 16, None),           # gap
        (members[0], DropReason.INC_OUTSIDE, None, 0, 16,
         lambda: tb.mwr_hdr(cfg.base - 16, 4, requester_id=env.plan.requester_id(members[0]))),
        (members[0], DropReason.INC_OUTSIDE, None, 0, 16,
         lambda: tb.mwr_hdr(cfg.base, 4, first_be=0x3,
                            requester_id=env.plan.requester_id(members[0]))),
    ]
    if idle is not None:
        cases.append((members[0], DropReason.INC_BAD_GROUP, inc_prefix(idle, dtype, 0), 0, 16,
                      None))
    for port, reason, pfx, offset, nbytes, hdr_fn in cases:
        if pfx is None and hdr_fn is not None:
            pfx = inc_prefix(g, dtype, 0)
        bad(port, reason, pfx, offset, nbytes, hdr_fn)
        await env.drain()
        want = env.model.err_status()
        assert want is not None and want.reason == reason, (reason, want)
        status = await env.regs.read_fields("err_status")
        assert status["valid"] == 1 and status["reason"] == reason and status["port"] == port, \
            f"{reason.name}: err_status {status}"
        await env.regs.write("err_status", valid=1)
        env.model.clear_err_status()
    # first half from member 0, a duplicate of it, then everything else: the result is whole
    first = rows[0].tobytes()
    env.send_beats(members[0], red.contribution(members[0], g, cfg, 0, first[:half]))
    env.send_beats(members[0], red.contribution(members[0], g, cfg, 0, first[:half]))
    for pkt in red.round_packets(members[0], g, cfg, first[half:], start=half):
        env.send_beats(members[0], pkt)
    for pkt in red.round_packets(members[1], g, cfg, rows[1].tobytes()):
        env.send_beats(members[1], pkt)
    await env.drain()
    grp = env.model.inc.groups[g]
    assert env.model.inc.completed[g] == 1, (
        f"group {g} not completed: offsets {grp.next_offset}, rounds "
        f"{ {r: x.received for r, x in grp.rounds.items()} }, cursors {grp.cursor}")
    # arming errors, one per cause, on another group
    h = 0 if g else None
    if h is not None:
        lanes = params.data_width // 8
        good = RGroup(members=mask, elem_type=dtype, op="sum", base=red.window(h), size=64,
                      buf_base=ring, buf_beats=ring, result_offset=0x1000, notify_offset=0x2000)
        rs_bad = 3 * lanes // esize * esize + esize       # a ReduceScatter chunk not in beats
        for change, cause in (
                (dict(members=0), RGroupConfigError.NO_MEMBERS),
                (dict(collective=3), RGroupConfigError.COLLECTIVE),
                (dict(collective=Collective.REDUCE, root=outsider), RGroupConfigError.ROOT),
                (dict(op="xor" if not dtype_info(dtype).is_float else "and"),
                 RGroupConfigError.NONE if not dtype_info(dtype).is_float
                 else RGroupConfigError.TYPE_OP),
                (dict(elem_type=len(DTYPE_NAMES)), RGroupConfigError.TYPE_OP),
                (dict(size=6), RGroupConfigError.SIZE),
                (dict(size=0), RGroupConfigError.SIZE),
                (dict(result_offset=0x1002), RGroupConfigError.ALIGN),
                (dict(buf_beats=ring - 1), RGroupConfigError.BUFFER),
                (dict(buf_beats=params.reduce_min_group_beats // 2), RGroupConfigError.BUFFER),
                (dict(buf_base=params.reduce_buffer_beats - ring // 2),
                 RGroupConfigError.BUFFER),
                (dict(buf_base=params.reduce_buffer_beats + ring), RGroupConfigError.BUFFER),
                (dict(collective=Collective.REDUCE, root=n + 1 if n < 31 else n - 1),
                 RGroupConfigError.ROOT),
                (dict(collective=Collective.REDUCESCATTER, members=0b11,
                      size=2 * rs_bad), RGroupConfigError.CHUNK),
                ({}, RGroupConfigError.NONE)):
            fields = {**good.__dict__, **change}
            await red.arm(h, RGroup(**fields), expect=cause)
        await red.disarm(h)
    await _check_reduction_counters(env)
    count = await env.regs.read("err_count")
    assert count == env.model.err_count, f"err_count {count}, expected {env.model.err_count}"


@cocotb.test()
async def reduce_timeout(dut):
    """A member that never sends: the timeout aborts the operation, every member gets an
    abort notice, the group's ``aborted`` counts it; a late write of the aborted round is
    rejected (INC_OFFSET); the next round completes; a slow but live member is not aborted."""
    timeout = 3000
    env, red, nrng = await _start(dut, timeout=timeout)
    params, n = env.params, env.params.n_ports
    ring = ring_beats(params, 1)
    members = list(range(min(n, 3)))
    mask = sum(1 << p for p in members)
    dtype = params.reduce_dtypes[-1]
    esize = dtype_info(dtype).width // 8
    elements = ring * params.data_width // 8 // esize // 2
    g = 1 % params.n_rgroups
    cfg = red.random_group(g, dtype, "max", mask, elements * esize, 0, ring,
                           collective=Collective.ALLREDUCE)
    await red.arm(g, cfg)
    rows = operands(nrng, dtype, len(members), elements)
    for i, p in enumerate(members[:-1]):       # the last member stays silent
        for pkt in red.round_packets(p, g, cfg, rows[i].tobytes()):
            env.send_beats(p, pkt)
    await env.drain()
    env.model.abort_rgroup(g)          # expect the abort notices from now on
    await ClockCycles(env.dut.clk, timeout + 200)
    await env.drain()
    assert await env.regs.read(f"rgroup[{g}].aborted") == 1, "the operation was not aborted"
    # a late write of the aborted round (offset not 0) is rejected
    env.send_beats(members[0], red.contribution(members[0], g, cfg, 8, rows[0].tobytes()[8:16]))
    await env.drain()
    # a fresh round, with a member slower than the timeout in total but never idle that long
    for i, p in enumerate(members):
        for pkt in red.round_packets(p, g, cfg, rows[i].tobytes()):
            env.send_beats(p, pkt)
            if p == members[-1]:
                await ClockCycles(env.dut.clk, timeout // 4)
    await env.drain()
    assert env.model.inc.completed[g] == 1 and env.model.inc.aborted[g] == 1
    await _check_reduction_counters(env)


@cocotb.test()
async def reduce_file(dut):
    """The engine on the data of ``smartfabric reduce``: reads ``SMARTFABRIC_REDUCE_IN`` (an
    ``.npz`` with ``rows`` (members, elements) raw bits and ``perm``, a permutation of the
    members) and the group in ``SMARTFABRIC_REDUCE_GROUP`` (JSON: dtype, op, saturate,
    collective), runs two rounds through the switch (ports 0..members-1 contribute; in round 2
    port p sends row ``perm[p]``) and writes what every port received, per round, to
    ``SMARTFABRIC_REDUCE_OUT`` (``.npz``: ``r<round>_p<port>`` = the bytes, in offset order).
    It checks nothing about the numbers: the caller compares with the golden model."""
    import json
    params = params_from_env()
    env = SwitchEnv(dut, params, seed_from_env(1))
    await env.start()
    red = Reduction(env)
    spec = json.loads(os.environ["SMARTFABRIC_REDUCE_GROUP"])
    blob = np.load(os.environ["SMARTFABRIC_REDUCE_IN"])
    rows, perm = blob["rows"], blob["perm"]
    m = rows.shape[0]
    # The model is not used here: the caller checks the numbers. Collect the engine's packets
    # per receiver instead of matching them.
    env.ports.on_ingress.clear()
    env.ports.on_egress.clear()
    got = {}

    def collect(port, packet):
        payload = tb.split_beats_payload(packet.beats, params.data_width)
        d = env.to_tlp(packet)
        got.setdefault(port, []).append((d.address, payload))

    env.ports.on_egress.append(collect)
    cfg = RGroup(members=(1 << m) - 1, elem_type=spec["dtype"], op=spec["op"],
                 saturate=spec["saturate"], collective=spec["collective"], root=0,
                 base=red.window(0), size=rows.shape[1] * rows.itemsize,
                 buf_base=0, buf_beats=ring_beats(params, 1), result_offset=0x10_0000,
                 notify_offset=0x8_0000)
    await env.regs.write("inc_timeout", 0)
    await red.write_group(0, cfg)
    await ClockCycles(dut.clk, ARM_CYCLES)
    status = await env.regs.read_fields("rgroup[0].status")
    if not status["active"]:
        raise AssertionError(f"the group did not arm: status.cause {status['cause']} "
                             f"({RGroupConfigError(status['cause']).name})")
    shares = result_receivers(cfg, rows.shape[1])
    receivers = {p for p, _, _ in shares}
    expected_bytes = sum(b - a for _, a, b in shares)
    out = {}
    for r, order in enumerate((list(range(m)), [int(k) for k in perm])):
        got.clear()
        for p in range(m):
            for pkt in red.round_packets(p, 0, cfg, rows[order[p]].tobytes()):
                env.send_beats(p, pkt)
        for _ in range(4_000_000):
            await ClockCycles(dut.clk, 64)
            if sum(len(x) for v in got.values() for _, x in v) >= expected_bytes \
                    and env.ports.idle():
                break
        else:
            raise AssertionError(f"round {r}: results incomplete after 256M cycles")
        for p in range(params.n_ports):
            pieces = sorted(got.get(p, []))
            out[f"r{r}_p{p}"] = np.frombuffer(b"".join(x for _, x in pieces), dtype=np.uint8)
        unexpected = set(got) - receivers
        if unexpected:
            raise AssertionError(f"round {r}: ports {sorted(unexpected)} received packets")
    np.savez(os.environ["SMARTFABRIC_REDUCE_OUT"], **out)
