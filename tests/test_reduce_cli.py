"""``smartfabric reduce``: argument and input checks (one line, non-zero exit), a real run on
each simulator (bit-exact, exit 0) and the mismatch report (exit 1, first elements in hex)."""

import subprocess
import sys
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest

from smartfabric import reduce_tool
from smartfabric.models.reduction import reduce
from smartfabric.verif.simenv import simulator_missing

DEFAULT_SEED = 7


def run(*args):
    r = subprocess.run([sys.executable, "-m", "smartfabric.cli", "reduce", *args],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(1)
    paths = {}
    for name, array in {
        "bf16": rng.integers(0, 1 << 16, size=(3, 40), dtype=np.uint16),
        "flat": rng.integers(0, 1 << 16, size=40, dtype=np.uint16),
        "f64": rng.random((3, 40)),
        "native_bf16": rng.random((3, 40)).astype(ml_dtypes.bfloat16),
        "empty": np.zeros((3, 0), np.uint16),
        "many": np.zeros((33, 4), np.uint16),
    }.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    (tmp_path / "junk.npy").write_text("not numpy")
    paths["junk"] = tmp_path / "junk.npy"
    return paths


@pytest.mark.parametrize("args,needle", [
    (["--dtype", "fp64", "--op", "sum"], "unknown --dtype 'fp64'"),
    (["--dtype", "bf16", "--op", "xor"], "not an operation of bf16"),
    (["--dtype", "bf16", "--op", "sum", "@flat"], "shape (members, elements)"),
    (["--dtype", "bf16", "--op", "sum", "@f64"], "must be raw bits (uint16) or bfloat16"),
    (["--dtype", "bf16", "--op", "sum", "@empty"], "at least one member and one element"),
    (["--dtype", "bf16", "--op", "sum", "@many"], "at most 32 ports"),
    (["--dtype", "bf16", "--op", "sum", "@junk"], "cannot read"),
    (["--dtype", "bf16", "--op", "sum", "--ports", "2"], "3 members do not fit 2 ports"),
    (["--dtype", "bf16", "--op", "sum", "--ports", "64"], "--ports must be 2 to 32"),
    (["--dtype", "bf16", "--op", "sum", "--collective", "gather"], "invalid choice"),
    (["--op", "sum"], "required: --dtype"),
])
def test_bad_input_gets_one_line(tmp_path, inputs, args, needle):
    source = inputs["bf16"]
    if args and args[-1].startswith("@"):
        source = inputs[args.pop()[1:]]
    code, out, err = run(*args, "--input", str(source), "--output", str(tmp_path / "o.npy"))
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smartfabric: error:"), err
    assert needle in lines[0], lines[0]


def test_missing_input_file(tmp_path):
    code, _, err = run("--dtype", "int8", "--op", "sum", "--input", str(tmp_path / "no.npy"),
                       "--output", str(tmp_path / "o.npy"))
    assert code == 1 and "cannot read" in err and len(err.strip().splitlines()) == 1


def test_native_values_are_accepted(inputs):
    rows = reduce_tool.load_rows(inputs["native_bf16"], "bf16")
    assert rows.dtype == np.uint16 and rows.shape == (3, 40)


def test_padding_keeps_the_input_and_makes_legal_chunks():
    rows = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
    padded = reduce_tool._padded(rows, 3, 1, 8, reduce_tool.COLLECTIVES["reducescatter"])
    assert padded.shape == (3, 24) and (padded[:, :5] == rows).all() and not padded[:, 5:].any()
    padded = reduce_tool._padded(rows, 3, 1, 8, reduce_tool.COLLECTIVES["allreduce"])
    assert padded.shape == (3, 8)


@pytest.mark.sim
@pytest.mark.parametrize("sim,collective,members", [
    ("verilator", "reducescatter", 4), ("icarus", "reduce", 3)])
def test_reduce_on_the_rtl(tmp_path, sim, collective, members, seed):
    reason = simulator_missing(sim)
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 1 << 16, size=(members, 301), dtype=np.uint16)
    rows[:, :4] = [0x7F80, 0xFF80, 0x7FC1, 0x8000]          # +inf, -inf, NaN payload, -0
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, rows)
    from smartfabric.verif.runner import REPO
    code, out, err = run("--dtype", "bf16", "--op", "sum", "--collective", collective,
                         "--sim", sim, "--input", str(src), "--output", str(dst),
                         "--seed", str(seed), "--build-dir", str(REPO / "sim_build" / "reduce"))
    assert code == 0, out + err
    assert "OK bf16 sum" in out
    got = np.load(dst)
    assert got.dtype == np.uint16 and (got == reduce("bf16", "sum", rows)).all()


def test_mismatch_is_reported(tmp_path, monkeypatch, capsys):
    """The report path, with the simulation replaced by one that delivers a wrong element."""
    rows = np.array([[0x3F80, 0x4000], [0x3F80, 0x4000]], dtype=np.uint16)    # 1+1, 2+2
    src = tmp_path / "in.npy"
    np.save(src, rows)

    def fake_run_test(params, sim, testcase, *, module, extra_env, build_root):
        import json
        import os
        good = reduce("bf16", "sum", rows).astype("<u2")
        bad = good.copy()
        bad[1] ^= 1
        out = {}
        for r in (0, 1):
            for p in range(params.n_ports):
                data = (bad if p == 1 else good) if p < 2 else np.zeros(0, "<u2")
                out[f"r{r}_p{p}"] = data.view(np.uint8)
        np.savez(extra_env["SMARTFABRIC_REDUCE_OUT"], **out)
    monkeypatch.setattr("smartfabric.verif.runner.run_test", fake_run_test)
    monkeypatch.setattr("smartfabric.verif.simenv.simulator_missing", lambda sim: None)
    args = SimpleNamespace(dtype="bf16", op="sum", no_saturate=False, collective="allreduce",
                           sim="verilator", ports=None, data_width=64, input=src,
                           output=tmp_path / "o.npy", seed=1, build_dir=tmp_path)
    import io
    text = io.StringIO()
    assert reduce_tool.run_reduce(args, out=text) == 1
    assert "port 1 received other bits than port 0" in text.getvalue()
