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

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("SMARTFABRIC_SEED", random.randrange(1 << 32)))
    print(f"{request.node.name}: SMARTFABRIC_SEED={seed}")
    return random.Random(seed)


@pytest.mark.parametrize("config", [
    {"n_ports": 8}, {"n_ports": 2, "n_windows": 2, "n_id_routes": 2},
    {"n_ports": 32, "n_windows": 4, "n_id_routes": 64, "n_groups": 4096, "n_rgroups": 256},
])
def test_addresses_match_rdl_and_block(config):
    model = RegisterModel(**config)
    top = compile_regmap(**config).top
    n_ports = config["n_ports"]
    n_windows = config.get("n_windows", 16)
    n_id_routes = config.get("n_id_routes", 16)
    n_groups = config.get("n_groups", 1024)
    n_rgroups = config.get("n_rgroups", 64)
    # 36 single registers (identity, status, multicast window, 4 monitors x 3, parity
    # injection and counter, reduction timeout and 3 totals), then the arrays: windows, ID
    # routes, per port 31 counters + receive mask + 3 overlay words, group table, reduction
    # groups (14 registers each).
    assert len(model.registers()) == (36 + 5 * n_windows + n_id_routes + 35 * n_ports
                                      + n_groups + 14 * n_rgroups)
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
                                                         FieldKind.CLEAR_ON_WRITE)), f.path
            assert (f.path in block.swmod) == (f.kind is FieldKind.CLEAR_ON_WRITE
                                               or f.swmod), f.path
    # External registers are one memory per array, one word per entry.
    assert set(block.memories) == {"hc_group"}
    assert block.memories["hc_group"].depth == n_groups
    assert block.memories["hc_group"].shape == n_ports


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
