"""Soak (issue 6): mixed unicast, Hypercast and reduction traffic with malformed packets
injected, random gaps and backpressure, every packet and result element checked by the golden
model, and a summary table at the end (packets, beats, copies, reduced elements, faults
injected, losses).

Run through tests/test_sim.py (``SMARTFABRIC_PACKETS`` = packets offered in all; 1,000,000 in
``make regress-long``). ``SMARTFABRIC_RESULT`` names a JSON file for the summary.
"""

import json
import os

import cocotb
import numpy as np

from ..models.reduction import dtype_info
from .env import SwitchEnv, bad_packets, params_from_env, packets_from_env, seed_from_env
from .multicast import Multicast
from .reduction import Reduction, operands, ops_of

BATCH = 400                 # packets offered per batch (all ports), then the switch drains
FAULT_RATE = 0.02


@cocotb.test()
async def soak_mixed(dut):
    """Batches of: unicast writes, reads and messages to random ports (70%), Hypercast writes
    to random destination sets (15%), one reduction round of a group re-armed with a random
    type, operation and member set (the rest of the members' traffic), and malformed or
    unroutable packets (2%, every kind of ``env.bad_packets``). Gaps and
    backpressure change every batch. Each batch drains; nothing may be left over."""
    params = params_from_env()
    env = SwitchEnv(dut, params, seed_from_env())
    await env.start()
    await env.regs.write("inc_timeout", 0)
    rng, n = env.rng, params.n_ports
    nrng = np.random.default_rng(env.seed)
    mc, red = Multicast(env), Reduction(env)
    total = packets_from_env(2000)
    ring = params.reduce_buffer_beats // 2
    lanes = params.data_width // 8
    stats = {"packets_offered": 0, "unicast": 0, "multicast": 0, "contributions": 0,
             "faults_injected": 0, "batches": 0}
    faults_by_kind = {}
    offered = 0
    while offered < total:
        stats["batches"] += 1
        env.ports.set_gap([rng.choice([0.0, 0.05, 0.3]) for _ in range(n)])
        env.ports.set_ready([rng.choice([1.0, 0.9, 0.5]) for _ in range(n)])
        # a reduction group for this batch (slot 0 or 1 of the stage memories, alternately)
        g = stats["batches"] % 2
        dtype = rng.choice(params.reduce_dtypes)
        op = rng.choice(ops_of(dtype))
        members = sorted(rng.sample(range(n), rng.randint(2, n)))
        esize = dtype_info(dtype).width // 8
        elements = rng.randint(1, ring * lanes // esize)
        elements += -elements % max(1, 4 // esize)
        cfg = red.random_group(g, dtype, op, sum(1 << p for p in members), elements * esize,
                               g * ring, ring)
        await red.arm(g, cfg)
        rows = operands(nrng, dtype, len(members), elements)
        contributions = {p: red.round_packets(p, g, cfg, rows[i].tobytes())
                         for i, p in enumerate(members)}
        batch = min(BATCH, total - offered)
        for k in range(batch):
            src = rng.randrange(n)
            r = rng.random()
            if r < FAULT_RATE:
                desc, beats = rng.choice(bad_packets(env, src, rng.randrange(n)))
                faults_by_kind[desc] = faults_by_kind.get(desc, 0) + 1
                stats["faults_injected"] += 1
            elif r < 0.17:
                ports = mc.random_set(src)
                beats = mc.to_set(src, ports, 4 * rng.randint(1, mc.max_bytes // 4))
                stats["multicast"] += 1
            elif r < 0.30 and contributions.get(src):
                beats = contributions[src].pop(0)
                stats["contributions"] += 1
            else:
                beats = env.random_packet(src, rng.randrange(n))
                stats["unicast"] += 1
            env.send_beats(src, beats)
        for p, rest in contributions.items():      # the round's remaining writes
            for beats in rest:
                env.send_beats(p, beats)
                stats["contributions"] += 1
        offered += batch
        stats["packets_offered"] += batch + sum(len(rest) for rest in contributions.values())
        await env.drain()
        await red.disarm(g)
    await env.check_counters()
    err_count = await env.regs.read("err_count")
    assert err_count == env.model.err_count, f"err_count {err_count} != {env.model.err_count}"
    summary = {
        **stats,
        "packets_delivered": env.delivered,
        "beats_delivered": env.delivered_beats,
        "multicast_copies": sum(env.model.counters[p]["tx_mcast"] for p in range(n)),
        "reduced_elements_checked": env.model.inc.elements_checked,
        "reduction_rounds": sum(env.model.inc.completed),
        "errors_counted": err_count,
        "losses": env.model.pending(),
        "seed": env.seed,
    }
    width = max(len(k) for k in summary)
    dut._log.info("soak summary:\n" + "\n".join(f"  {k:{width}s}  {v}"
                                                 for k, v in summary.items()))
    dut._log.info("faults injected by kind: " + ", ".join(
        f"{k} {v}" for k, v in sorted(faults_by_kind.items())))
    assert summary["losses"] == 0
    if os.environ.get("SMARTFABRIC_RESULT"):
        with open(os.environ["SMARTFABRIC_RESULT"], "w") as f:
            json.dump({**summary, "faults_by_kind": faults_by_kind}, f)
