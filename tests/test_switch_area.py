"""The per-block ECP5 area report (synth/switch_area.py): grouping of Yosys's per-module
statistics. The Yosys run itself (minutes at 8 ports) runs under SMARTFABRIC_LONG."""

import os

import pytest

from smartfabric.hdl.params import SMALLEST
from smartfabric.synth.switch_area import (area_by_block, block_of, lut4_sites, main,
                                           markdown_table, switch_area)


def test_block_of():
    assert block_of("smartfabric_switch") == "top"
    assert block_of("\\smartfabric_switch.regs") == "regs"
    assert block_of("smartfabric_switch.latency_hist7.table") == "latency_hist*"
    assert block_of("smartfabric_switch.core") == "core"
    assert block_of("smartfabric_switch.core.ingress12") == "core.ingress*"
    assert block_of("smartfabric_switch.core.voq3_11") == "core.voq*"
    assert block_of("smartfabric_switch.core.voq_engine_4") == "core.voq_engine_*"
    assert block_of("smartfabric_switch.engine.reducer.int32_int0") == "engine"


def test_area_by_block_sums_own_cells_and_skips_instances():
    stat = {"modules": {
        "\\smartfabric_switch": {"num_cells_by_type": {
            "LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "\\smartfabric_switch.core": 1}},
        "\\smartfabric_switch.core": {"num_cells_by_type": {
            "LUT4": 100, "\\smartfabric_switch.core.ingress0": 1,
            "\\smartfabric_switch.core.ingress1": 1}},
        "\\smartfabric_switch.core.ingress0": {"num_cells_by_type": {"LUT4": 40, "CCU2C": 5}},
        "\\smartfabric_switch.core.ingress1": {"num_cells_by_type": {"LUT4": 41, "CCU2C": 5,
                                                                     "$scopeinfo": 2}},
        "\\smartfabric_switch.core.voq0_1": {"num_cells_by_type": {"TRELLIS_DPR16X4": 64}},
        "\\other_top": {"num_cells_by_type": {"LUT4": 999}},
    }}
    blocks = area_by_block(stat)
    assert list(blocks) == ["core.voq*", "core.ingress*", "core", "top"]   # largest first
    assert blocks["core.ingress*"]["LUT4"] == 81 and blocks["core.ingress*"]["CCU2C"] == 10
    assert blocks["core.ingress*"]["modules"] == 2
    assert blocks["core.ingress*"]["lut4_sites"] == 81 + 20
    assert blocks["core"]["LUT4"] == 100 and blocks["core"]["lut4_sites"] == 100
    assert blocks["top"]["lut4_sites"] == 16 and blocks["top"]["TRELLIS_FF"] == 7
    assert blocks["core.voq*"]["lut4_sites"] == lut4_sites({"TRELLIS_DPR16X4": 64}) == 128
    table = markdown_table(blocks)
    assert table.splitlines()[-1].startswith("| total | 5 | 345 | 191 | 13 | 64 | 7 | 0 | 0 |")


def test_cli_rejects_bad_arguments(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[switch]\nn_ports = 8\nwidth = 64\n")
    for argv, message in ((["--ports", "1"], "ports must be 2 to 32"),
                          (["--config", str(bad)], "unknown keys"),
                          (["--config", str(tmp_path / "none.toml")], "cannot read config")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("SMARTFABRIC_LONG", "0") in ("", "0"),
                    reason="a Yosys run of a few minutes; SMARTFABRIC_LONG=1")
def test_small_switch_area(tmp_path):
    result = switch_area(SMALLEST, tmp_path)
    blocks = result["blocks"]
    assert {"top", "core", "core.ingress*", "regs", "engine"} <= set(blocks)
    assert blocks["core.ingress*"]["modules"] == 2
    assert result["total_lut4_sites"] == sum(b["lut4_sites"] for b in blocks.values()) > 1000
