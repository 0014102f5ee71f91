"""The command-line tool: Verilog generation and one-line answers to bad arguments."""

import subprocess
import sys

import pytest

from smartfabric.cli import main


def run(*args):
    r = subprocess.run([sys.executable, "-m", "smartfabric.cli", *args],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("args,needle", [
    (["generate", "--ports", "40", "-o", "x.v"], "ports must be 2 to 32"),
    (["generate", "--ports", "1", "-o", "x.v"], "ports must be 2 to 32"),
    (["generate", "--data-width", "100", "-o", "x.v"], "data width must be one of"),
    (["generate", "--voq-depth", "3", "-o", "x.v"], "VOQ depth"),
    (["generate", "--bogus", "-o", "x.v"], "unrecognized arguments: --bogus"),
    (["generate"], "required: -o/--output"),
    (["bench", "warp"], "unknown benchmark"),
    (["bench", "allreduce", "--bytes", "100"], "must be a positive multiple"),
    (["bench", "allreduce", "--bytes", "lots"], "sizes are integers"),
    (["bench", "unicast", "--bytes", "64K"], "--bytes is an option of the allreduce"),
    (["bench", "unicast", "--payload-beats", "0"], "--payload-beats must be at least 1"),
    (["frobnicate"], "invalid choice"),
    (["synth", "--placer", "anneal"], "invalid choice: 'anneal'"),
    (["synth", "--router", "router3"], "invalid choice: 'router3'"),
    (["synth", "--freq", "0"], "frequency must be positive"),
    (["synth", "--windows", "0"], "n_windows must be 1 to 64"),
    (["generate", "--ports", "x", "-o", "x.v"], "invalid int value"),
    (["formal", "no_such_check"], "unknown check 'no_such_check' (available: allocator_n4"),
    (["formal", "--depth", "0", "allocator_n4"], "depth must be at least 1"),
    (["formal", "--depth", "six"], "invalid int value"),
    (["formal", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_get_one_line(tmp_path, args, needle):
    code, out, err = run(*args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smartfabric: error:") and needle in lines[0], lines[0]


def test_options_override_the_config_file(tmp_path):
    """A build option given on the command line wins over --config, which wins over the
    command's defaults; the same for every command that builds a switch."""
    from smartfabric.argparsing import OneLineParser, add_switch_arguments, switch_params
    cfg = tmp_path / "sw.toml"
    cfg.write_text("[switch]\nn_ports = 4\nn_windows = 8\nvoq_depth = 4\n")
    parser = add_switch_arguments(OneLineParser(prog="t"), ports=8, width=64)

    def build(*argv):
        p = switch_params(parser.parse_args(argv))
        return p.n_ports, p.data_width, p.n_windows, p.voq_depth, p.n_id_routes

    assert build() == (8, 64, 16, 32, 16)
    assert build("--config", str(cfg)) == (4, 64, 8, 4, 16)
    assert build("--config", str(cfg), "--ports", "2", "--windows", "3",
                 "--id-routes", "5") == (2, 64, 3, 4, 5)
    assert build("--data-width", "128", "--voq-depth", "8") == (8, 128, 16, 8, 16)


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "sw.toml"
    cfg.write_text("[switch]\nn_ports = 4\nflux = 3\n")
    code, _, err = run("generate", "--config", str(cfg), "-o", str(tmp_path / "x.v"))
    assert code == 1 and "unknown keys" in err and len(err.strip().splitlines()) == 1


def test_config_the_engine_refuses(tmp_path):
    """A configuration that only the reduction engine can refuse (its stage memory is too
    small for two maximum payloads) is answered before anything is built: one line."""
    cfg = tmp_path / "sw.toml"
    cfg.write_text("[switch]\nn_ports = 2\ndata_width = 64\nmax_payload = 256\n"
                   "reduce_buffer_beats = 32\nreduce_dtypes = [\"int8\"]\n")
    code, _, err = run("generate", "--config", str(cfg), "-o", str(tmp_path / "x.v"))
    assert code == 1 and "reduce_buffer_beats 32" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_generate_from_config(tmp_path):
    cfg = tmp_path / "sw.toml"
    cfg.write_text("[switch]\nn_ports = 2\ndata_width = 512\nn_windows = 2\nn_id_routes = 2\n"
                   "n_rgroups = 2\nreduce_dtypes = [\"int8\"]\n")
    out = tmp_path / "sw.v"
    assert main(["generate", "--config", str(cfg), "-o", str(out)]) == 0
    text = out.read_text()
    assert "module smartfabric_switch" in text
    assert "input [511:0] s1_data" in text and "output [511:0] m1_data" in text
    assert "s2_data" not in text


def test_formal_options_reach_the_checks(tmp_path):
    """``smartfabric formal`` takes its options (they were once swallowed by the sub-command):
    the 4-port allocator proof passes at its depth, in ``--out``; at ``--depth 3``, below
    what its induction needs, it is inconclusive and the command fails with one line."""
    code, out, err = run("formal", "--out", str(tmp_path), "allocator_n4")
    assert code == 0 and out.startswith("allocator_n4: proven by 8-induction"), out + err
    assert (tmp_path / "allocator_n4").is_dir()
    code, out, err = run("formal", "--out", str(tmp_path), "--depth", "3", "allocator_n4")
    assert code == 1 and "allocator_n4: FAILED" in out, out + err
    assert err.strip() == "smartfabric: error: 1 formal check failed (see above)", err
