"""WindowTable (hdl/window_table.py) in Amaranth's simulator: the receiver windows its scan
derives are the golden model's (``SwitchConfig.receiver_window``,
``receiver_parity_error``), the table in use changes as a whole and only when ``applied``
says, a change during a scan starts it again, and every read port shows the table in use."""

import random

import pytest
from amaranth.sim import Simulator

from smartfabric.hdl.params import SwitchParams
from smartfabric.hdl.window_table import WindowTable
from smartfabric.models.switch_model import SwitchConfig

TOP = 1 << 64


def _params(n_ports, n_windows):
    return SwitchParams(n_ports=n_ports, data_width=64, max_payload=128, voq_depth=2,
                        n_windows=n_windows, n_id_routes=1, n_groups=2, n_rgroups=1,
                        reduce_buffer_beats=32, reduce_dtypes=("int8",), capture_depth=2)


def _random_table(rng, n_ports, n_windows):
    """(windows, parity errors): few ports, so that ports share windows, some have none and
    some windows name a port >= N (which has no receiver window)."""
    windows = []
    for _ in range(n_windows):
        base = rng.choice([0, TOP - 4, rng.randrange(TOP)]) & ~3
        limit = rng.choice([base + 4 * rng.randrange(1 << 20), base - 4, TOP - 1,
                            rng.randrange(TOP)]) % TOP
        port = rng.randrange(min(n_ports + 2, 32)) if rng.random() < 0.8 else rng.randrange(32)
        windows.append((base, limit, port, rng.random() < 0.7))
    errors = {k for k in range(n_windows) if rng.random() < 0.1}
    return windows, errors


def _expected(n_ports, windows, errors):
    """Each port's receiver window as the model defines it: (valid, base, span, parity)."""
    cfg = SwitchConfig(n_ports=n_ports, data_width=64, windows=list(windows),
                       window_parity_errors=set(errors))
    out = []
    for o in range(n_ports):
        w = cfg.receiver_window(o)
        valid, base, span = (0, 0, 0) if w is None else (1, w.base, w.limit - w.base)
        out.append((valid, base, span, int(cfg.receiver_parity_error(o))))
    return out


@pytest.mark.parametrize("n_ports,n_windows", [(4, 1), (4, 5), (8, 16), (32, 16)])
def test_scan_matches_model(n_ports, n_windows, seed):
    """Random tables, changed at random moments (often in the middle of a scan): every
    cycle, ``live`` is the table of the latest ``applied`` and the receiver windows are the
    model's for it from the cycle after; ``applied`` comes exactly ``n_windows + 1`` cycles
    after the last change, never earlier. Every cycle each read port gets a random index
    and must show that entry of the table in use, in the same cycle."""
    rng = random.Random(seed)
    dut = WindowTable(_params(n_ports, n_windows))
    state = {"applied": 0, "restarts": 0}

    def drive(ctx, windows, errors):
        for k, (base, limit, port, enable) in enumerate(windows):
            w = dut.windows[k]
            ctx.set(w.base, base)
            ctx.set(w.limit, limit)
            ctx.set(w.port, port)
            ctx.set(w.enable, enable)
        ctx.set(dut.window_parity, sum(1 << k for k in errors))

    def entry(ctx, w):
        return ctx.get(w.base), ctx.get(w.limit), ctx.get(w.port), ctx.get(w.enable)

    def read(ctx):
        live = [entry(ctx, w) for w in dut.live]
        parity = ctx.get(dut.live_parity)
        rx = [(ctx.get(r.valid), ctx.get(r.base), ctx.get(r.span), ctx.get(r.parity_error))
              for r in dut.receiver_windows]
        return live, parity, rx

    async def main(ctx):
        # After reset the table present from the start is scanned as if changed had been
        # high in cycle -1.
        pending = _random_table(rng, n_ports, n_windows)     # the table being scanned
        drive(ctx, *pending)
        since = 1                           # cycles since the last change
        live = rx = rx_next = None          # what the outputs must show (None: not known)
        # Until 20 tables are applied and 5 scans restarted (about 600 cycles at 16 windows;
        # a fixed length fell short for some seeds), within a bound no working table misses.
        for cycle in range(600 * (n_windows + 4)):
            if state["applied"] >= 20 and state["restarts"] >= 5:
                break
            change = cycle > 0 and rng.random() < 1 / (n_windows + 2)
            if change:
                state["restarts"] += since <= n_windows      # the scan had not finished
                pending, since = _random_table(rng, n_ports, n_windows), 0
                drive(ctx, *pending)
            ctx.set(dut.changed, change)
            indices = [rng.randrange(n_windows) for _ in dut.source_index]
            for port, index in zip(dut.source_index, indices):
                ctx.set(port, index)
            await ctx.delay(1e-9)
            applied = ctx.get(dut.applied)
            assert applied == (not change and since == n_windows + 1), \
                f"cycle {cycle}: applied={applied}, {since} cycles after the last change"
            got_live, got_parity, got_rx = read(ctx)
            for r, (index, w) in enumerate(zip(indices, dut.source_window)):
                got = entry(ctx, w)
                assert got == got_live[index], \
                    f"cycle {cycle}: read port {r} shows {got} for window {index}, " \
                    f"the table in use has {got_live[index]}"
            if live is not None:
                assert (got_live, got_parity) == live, \
                    f"cycle {cycle}: the table in use is not the one last applied"
            if rx is not None:
                assert got_rx == rx, f"cycle {cycle}: receiver windows {got_rx}, model {rx}"
            if rx_next is not None:         # the receiver windows follow the table a cycle later
                rx, rx_next = rx_next, None
            if applied:
                windows, errors = pending
                live = ([(b, l, p, int(e)) for b, l, p, e in windows],
                        sum(1 << k for k in errors))
                rx_next = _expected(n_ports, windows, errors)
                state["applied"] += 1
            since += 1
            await ctx.tick()
        print(f"tables applied: {state['applied']}, scans restarted: {state['restarts']}")
        assert state["applied"] >= 20 and state["restarts"] >= 5, state

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.run()
