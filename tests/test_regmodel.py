"""RegisterModel (models/regmodel.py) against the RDL, the register block, and the docs."""

import os
import random
from pathlib import Path

import pytest
from amaranth.hdl import Fragment

from smartfabric.hdl import regdoc
from smartfabric.hdl.regblock import RegisterBlock
from smartfabric.models.regmap import FieldKind, compile_regmap
from smartfabric.models.regmodel import RegisterModel
from smartfabric.models.capture_format import (
    DEFAULT_TRIGGER_KINDS, ENTRY_WORDS, KEY_WORDS, LINK_STATUS)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("SMARTFABRIC_SEED", random.randrange(1 << 32)))
    print(f"{request.node.name}: SMARTFABRIC_SEED={seed}")
    return random.Random(seed)


@pytest.mark.parametrize("config", [
    {"n_ports": 8}, {"n_ports": 2, "n_windows": 2, "n_id_routes": 2},
    {"n_ports": 32, "n_windows": 4, "n_id_routes": 64, "n_groups": 4096, "n_rgroups": 256,
     "capture_depth": 256},
])
def test_addresses_match_rdl_and_block(config):
    model = RegisterModel(**config)
    top = compile_regmap(**config).top
    n_ports = config["n_ports"]
    n_windows = config.get("n_windows", 16)
    n_id_routes = config.get("n_id_routes", 16)
    n_groups = config.get("n_groups", 1024)
    n_rgroups = config.get("n_rgroups", 64)
    depth = config.get("capture_depth", 64)
    # 34 single registers (identity, status, multicast window, 4 monitors x 3, reduction
    # timeout and 3 totals), 2 of parity (injection, parity_errors) and 21 of telemetry
    # (control, 8 capture registers, 6 + 6 filter words), then the arrays: windows, ID routes,
    # per port 31 counters + receive mask + 3 overlay words + link status + 16 histogram
    # buckets, group table, reduction groups (14 registers and 8 statistics words each),
    # capture ring (8 words per entry).
    assert len(model.registers()) == (34 + 2 + 21 + 5 * n_windows + n_id_routes
                                      + 52 * n_ports + n_groups + 22 * n_rgroups + 8 * depth)
    for path in model.registers():
        node = top.find_by_path(path)
        assert model.address(path) == node.absolute_address, path
        assert model.width(path) == node.get_property("regwidth"), path
        assert model.fields(path) == {
            f.inst_name: (f.lsb, f.width, f.get_property("reset") or 0) for f in node.fields()}
    block = RegisterBlock(**config)
    Fragment.get(block, platform=None)       # it elaborates for this configuration too
    assert [(r.path, r.address, r.width) for r in block.registers] == [
        (p, model.address(p), model.width(p)) for p in model.registers()]
    # Every writable field is a hw_r signal or scratch, every hardware input a hw_w signal.
    for reg in model.table:
        for f in reg.fields:
            assert (f.path in block.hw_r) == (f.kind is FieldKind.HW_READ
                                              and not reg.external), f.path
            assert (f.path in block.hw_w) == (f.kind in (FieldKind.HW_WRITE,
                                                         FieldKind.CLEAR_ON_WRITE)
                                              and not reg.external), f.path
            assert (f.path in block.swmod) == (f.kind is FieldKind.CLEAR_ON_WRITE
                                               or f.swmod), f.path
            assert (f.path in block.pulse) == (f.kind is FieldKind.PULSE), f.path
    # External registers are one memory or read window per array, one word per entry; the
    # port counters one 64-bit window of 32 slots per port (0x100 bytes), 31 of them used.
    assert set(block.memories) == {"hc_group"}
    assert block.memories["hc_group"].depth == n_groups
    assert block.memories["hc_group"].shape == n_ports
    assert {name: w.depth for name, w in block.read_windows.items()} == {
        "latency_hist": 16 * n_ports, "rgroup_stats": 8 * n_rgroups, "cap_entry": 8 * depth,
        "port": 32 * (n_ports - 1) + 31}
    assert {name: w.width for name, w in block.read_windows.items()} == {
        "latency_hist": 32, "rgroup_stats": 32, "cap_entry": 32, "port": 64}
    assert block.window_index(f"port[{n_ports - 1}].drop_parity") == 32 * (n_ports - 1) + 30


def test_known_addresses():
    model = RegisterModel(n_ports=8)
    assert model.address("id") == 0x000
    assert model.address("scratch") == 0x01C
    assert model.address("err_hdr[4]") == 0x040
    assert model.address("window[3].base_lo") == 0x160
    assert model.address("window[15].ctrl") == 0x2F0
    assert model.address("id_route[5]") == 0x814
    assert model.address("port[2].rx_packets") == 0x1200
    assert model.address("port[7].tx_err") == 0x1790
    assert model.is_64bit("port[7].tx_err") and not model.is_64bit("window[3].base_lo")
    assert model.path_at(0x1794) == ("port[7].tx_err", 1)
    assert model.path_at(0x17F0) == ("port[7].drop_parity", 0)
    assert model.path_at(0x17F8) is None
    assert model.address("dbg_parity_inject") == 0x3E00
    assert model.address("parity_errors") == 0x3E08
    assert model.address("inc_timeout") == 0x3F00
    assert model.address("rgroup[1].ctrl") == 0x4040
    assert model.address("rgroup[63].aborted") == 0x4FF8 and model.path_at(0x5000) is None
    assert model.address("hc_group[1023]") == 0x8FFC and model.path_at(0x9000) is None
    assert model.fields("root_port") == {"port": (0, 5, 0), "valid": (8, 1, 0)}
    assert model.reset_value("port_enable") == 0xFFFF_FFFF
    assert model.reset_value("id") == 0x5346_4142
    assert model.is_writable("scratch") and not model.is_writable("err_count")
    with pytest.raises(KeyError, match="window\\[16\\]"):
        model.address("window[16].base_lo")
    # telemetry (docs/telemetry.md section 5)
    assert model.address("telemetry_ctrl") == 0x3000
    assert model.address("cap_ctrl") == 0x3010 and model.address("cap_depth") == 0x302C
    assert model.address("cap_match[5]") == 0x3054 and model.address("cap_mask[0]") == 0x3060
    assert model.address("link_status[7]") == 0x309C
    assert model.address("latency_hist[1][0]") == 0x3140
    assert model.address("latency_hist[7][15]") == 0x32FC and model.path_at(0x3300) is None
    assert model.address("cap_entry[1][0]") == 0xC020
    assert model.address("cap_entry[63][7]") == 0xC7FC and model.path_at(0xC800) is None
    assert model.address("rgroup_stats[63][7]") == 0xE7FC
    assert model.reset_value("cap_ctrl") == DEFAULT_TRIGGER_KINDS << 8


def test_telemetry_registers_follow_capture_format():
    """The RDL's link_status fields are models.capture_format.LINK_STATUS, its capture key is
    KEY_WORDS words, an entry ENTRY_WORDS words padded to 8, and the largest maps fit."""
    model = RegisterModel(n_ports=32, n_rgroups=256, capture_depth=256)
    assert {name: (lsb, width) for name, (lsb, width, _) in
            model.fields("link_status[0]").items()} == LINK_STATUS
    assert len([p for p in model.registers() if p.startswith("cap_match[")]) == KEY_WORDS
    assert ENTRY_WORDS <= 8
    assert model.address("latency_hist[31][15]") < model.address("inc_timeout")
    assert model.address("cap_entry[255][7]") < model.address("rgroup_stats[0][0]")
    assert model.address("rgroup_stats[255][7]") == 0xFFFC
    with pytest.raises(ValueError, match="power of two"):
        RegisterModel(n_ports=8, capture_depth=48)
    with pytest.raises(ValueError, match="capture_depth"):
        RegisterModel(n_ports=8, capture_depth=512)
    with pytest.raises(ValueError, match="power of two"):
        RegisterModel(n_ports=8, capture_depth=1)
    # no capture: the window keeps one entry (reading 0 in the switch)
    none = RegisterModel(n_ports=8, capture_depth=0)
    assert "cap_entry[0][7]" in none.registers() and "cap_entry[1][0]" not in none.registers()


def test_encode_decode_round_trip(rng):
    model = RegisterModel(n_ports=4, n_windows=4, n_id_routes=4)
    for path in model.registers():
        for _ in range(4):
            fields = {name: rng.getrandbits(width)
                      for name, (lsb, width, reset) in model.fields(path).items()}
            value = model.encode(path, **fields)
            assert value < (1 << model.width(path))
            assert model.decode(path, value) == fields, path
            junk = rng.getrandbits(model.width(path))
            assert model.encode(path, **model.decode(path, junk)) == junk & sum(
                ((1 << w) - 1) << lsb for lsb, w, _ in model.fields(path).values())
    assert model.encode("id_route[1]", bus_lo=0x12, bus_hi=0x34, port=5, enable=1) == 0x8005_3412
    assert model.encode("root_port", port=3) == 0x003
    with pytest.raises(KeyError, match="no field 'prot'"):
        model.encode("root_port", prot=1)
    with pytest.raises(ValueError, match="5 bits"):
        model.encode("root_port", port=32)


def test_registers_doc_is_up_to_date(tmp_path):
    fresh = tmp_path / "registers.md"
    regdoc.main([str(fresh)])
    committed = REPO / "docs" / "registers.md"
    assert committed.read_text() == fresh.read_text(), (
        "docs/registers.md is stale: run `python -m smartfabric.hdl.regdoc docs/registers.md`")


def test_regdoc_other_configuration(tmp_path):
    out = tmp_path / "regs4.md"
    regdoc.main([str(out), "--ports", "4"])
    text = out.read_text()
    assert "port[3]" in text and "port[4]" not in text
    assert "N_PORTS=4" in text
