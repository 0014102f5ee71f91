"""Formal checks (verif/formal.py) with SymbiYosys and Boolector, at make-test size.

``make formal`` runs every check at full size (the 8-port allocator proof, the switch core to a
deeper bound); here: the 4-port allocator proof, a deliberately wrong bound that the checker
must refute (so the check can fail), and the switch core's stream rules to a short bound.
"""

import dataclasses

import pytest

from smartfabric.verif.formal import (
    CHECKS, CORE_PARAMS, AllocatorHarness, Check, run_check,
)

BY_NAME = {c.name: c for c in CHECKS}


def test_allocator_invariants_proven(tmp_path):
    passed, line, log = run_check(BY_NAME["allocator_n4"], tmp_path)
    assert passed, f"{line}\n{log.read_text()[-3000:]}"
    assert "proven by 8-induction" in line


def test_allocator_wait_bound_is_tight(tmp_path):
    """Claiming a requester waits fewer than N - 1 matches is false: the solver must find the
    counterexample (the proof above is not vacuous)."""
    wrong = Check("allocator_n4_wrong_bound",
                  lambda: AllocatorHarness(4, exclusive_ingress=False, wait_bound=3), "bmc", 8)
    passed, line, log = run_check(wrong, tmp_path)
    assert not passed and "FAIL" in line, line
    assert "failed assertion" in log.read_text()


def test_core_stream_rules_bounded(tmp_path):
    check = dataclasses.replace(BY_NAME["core_streams_n2"], depth=4)   # make formal: 6
    passed, line, log = run_check(check, tmp_path)
    assert passed, f"{line}\n{log.read_text()[-3000:]}"


def test_core_harness_lets_packets_through(tmp_path):
    """The ingress assumptions leave room for real traffic: claiming that no packet ever ends
    at egress 1 is refused within the bound (a complete packet leaves by step 4)."""
    from amaranth.hdl import Assert
    from smartfabric.verif.formal import CoreStreamHarness

    class NoPacketOut(CoreStreamHarness):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            eg = self.core.egress[1]
            m.d.comb += Assert(~(eg.valid & eg.ready & eg.payload.last))
            return m

    check = dataclasses.replace(BY_NAME["core_streams_n2"], name="core_no_packet",
                                make=lambda: NoPacketOut(CORE_PARAMS),
                                depth=6)
    passed, line, log = run_check(check, tmp_path)
    assert not passed and "failed assertion" in log.read_text(), line


def test_queue_checks_reach_the_engine_queues(tmp_path):
    """The queue assertions see real queues: claiming the engine's queue to egress 0 is never
    written is refused (the free engine stream reaches it)."""
    from amaranth.hdl import Assert
    from smartfabric.verif.formal import CoreStreamHarness, QueueChecks

    class NeverWritten(QueueChecks):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            m.d.comb += Assert(~self.core.queues["voq_engine_0"].w_en)
            return m

    class Harness(CoreStreamHarness):
        queue_checks = NeverWritten

    check = dataclasses.replace(BY_NAME["core_streams_n2"], name="core_engine_queue",
                                make=lambda: Harness(CORE_PARAMS), depth=4)
    passed, line, log = run_check(check, tmp_path)
    assert not passed and "failed assertion" in log.read_text(), line


def test_queue_order_check_reaches_the_reads(tmp_path):
    """The order check is not vacuous: claiming that a tracked VOQ entry is never read back
    (so never compared) is refused."""
    from amaranth.hdl import Assert
    from smartfabric.verif.formal import CoreStreamHarness, QueueChecks

    class NeverChecked(QueueChecks):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            m.d.comb += Assert(~self.checked["voq0_1"])
            return m

    class Harness(CoreStreamHarness):
        queue_checks = NeverChecked

    check = dataclasses.replace(BY_NAME["core_streams_n2"], name="core_order_reached",
                                make=lambda: Harness(CORE_PARAMS), depth=6)
    passed, line, log = run_check(check, tmp_path)
    assert not passed and "failed assertion" in log.read_text(), line


def test_engine_stream_rules_bounded(tmp_path):
    passed, line, log = run_check(BY_NAME["engine_streams_n2"], tmp_path)
    assert passed, f"{line}\n{log.read_text()[-3000:]}"


def test_engine_harness_reaches_results(tmp_path):
    """The engine check is not vacuous: claiming the result stream never completes a packet
    within the bound is refused."""
    from amaranth.hdl import Assert
    from smartfabric.verif.formal import ENGINE_PARAMS, EngineStreamHarness

    class Harness(EngineStreamHarness):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            r = self.engine.result
            m.d.comb += Assert(~(r.valid & r.ready & r.payload.beat.last))
            return m

    check = dataclasses.replace(BY_NAME["engine_streams_n2"], name="engine_reached",
                                make=lambda: Harness(ENGINE_PARAMS))
    passed, line, log = run_check(check, tmp_path)
    assert not passed and "failed assertion" in log.read_text(), line


def test_formal_cli_rejects_bad_arguments(capsys):
    """``smartfabric formal``: an unknown check or a depth below 1 is a one-line usage error
    (exit status 2) before any solver runs."""
    from smartfabric.verif.formal import main
    for argv, message in ((["no_such_check"], "unknown check 'no_such_check'"),
                          (["--depth", "0", "allocator_n4"], "depth must be at least 1"),
                          (["--depth", "six"], "invalid int value")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
