"""The switch model's reduction engine (models/inc_model.py): arming checks, contribution
checks in the documented order, result streams cut at any beat boundary, aborts."""

import numpy as np
import pytest

from smartfabric.models import tlp_build as tb
from smartfabric.models.capture_format import GROUP_STATS
from smartfabric.models.formats import (
    Collective, DropReason, IncNoticeKind, RGroupConfigError, inc_notice, inc_prefix,
)
from smartfabric.models.inc_model import IncModel, RGroup, result_receivers
from smartfabric.models.reduction import reduce
from smartfabric.models.switch_model import SwitchConfig, SwitchModel

W = 64
LANES = W // 8
BASE = 0x1_0000_0000
DEFAULT_SEED = 20261124


def _model(**kw):
    return IncModel(4, W, 128, n_rgroups=8, buffer_beats=256, **kw)


def _group(**kw):
    fields = dict(members=0b0111, elem_type="int32", op="sum", base=BASE, size=256, buf_base=0,
                  buf_beats=64, result_offset=0x1000, notify_offset=0x2000)
    fields.update(kw)
    return RGroup(**fields)


def _hdr(address, nbytes, **kw):
    return tb.mwr_hdr(address, nbytes // 4, **kw)


@pytest.mark.parametrize("change,cause", [
    (dict(members=0), RGroupConfigError.NO_MEMBERS),
    (dict(members=0b10000), RGroupConfigError.NO_MEMBERS),      # only a port that is not there
    (dict(collective=3), RGroupConfigError.COLLECTIVE),
    (dict(collective=Collective.REDUCE, root=3), RGroupConfigError.ROOT),
    (dict(collective=Collective.REDUCE, root=4), RGroupConfigError.ROOT),
    (dict(elem_type="fp32", op="xor"), RGroupConfigError.TYPE_OP),
    (dict(elem_type=11), RGroupConfigError.TYPE_OP),
    (dict(op=6), RGroupConfigError.TYPE_OP),
    (dict(size=0), RGroupConfigError.SIZE),
    (dict(size=258), RGroupConfigError.SIZE),
    (dict(base=BASE + 2), RGroupConfigError.ALIGN),
    (dict(notify_offset=1), RGroupConfigError.ALIGN),
    (dict(buf_beats=48), RGroupConfigError.BUFFER),
    (dict(buf_beats=16), RGroupConfigError.BUFFER),             # minimum is 32 (128 B / 8 + 1)
    (dict(buf_base=224), RGroupConfigError.BUFFER),
    (dict(collective=Collective.REDUCESCATTER, size=3 * 3 * 4), RGroupConfigError.CHUNK),
    (dict(collective=Collective.REDUCESCATTER, size=8 * 3), RGroupConfigError.NONE),
    (dict(collective=Collective.REDUCESCATTER, members=1, size=12), RGroupConfigError.NONE),
    ({}, RGroupConfigError.NONE),
])
def test_arming_checks(change, cause):
    m = _model()
    assert m.arm(3, _group(**change)) == cause
    assert m.status[3] == (cause == RGroupConfigError.NONE, int(cause))
    assert m.config_errors == int(cause != RGroupConfigError.NONE)


def test_type_not_built_fails_to_arm():
    m = _model(reduce_dtypes=("int32",))
    assert m.arm(0, _group(elem_type="fp16")) == RGroupConfigError.TYPE_OP


def test_contribution_checks_in_order():
    m = _model()
    m.arm(2, _group())
    pfx = inc_prefix(2, "int32", "sum")
    rid = 0x100
    cases = [
        (0, _hdr(BASE, 16), inc_prefix(5, "int32", "sum"), DropReason.INC_BAD_GROUP),
        (0, _hdr(BASE, 16), inc_prefix(200, "int32", "sum"), DropReason.INC_BAD_GROUP),
        (3, _hdr(BASE, 16), pfx, DropReason.INC_NOT_MEMBER),
        (3, _hdr(BASE, 16), inc_prefix(2, "fp32", "sum"), DropReason.INC_NOT_MEMBER),
        (0, _hdr(BASE, 16), inc_prefix(2, "fp32", "sum"), DropReason.INC_MISMATCH),
        (0, _hdr(BASE, 16), inc_prefix(2, "int32", "max"), DropReason.INC_MISMATCH),
        (0, _hdr(BASE - 4, 16), pfx, DropReason.INC_OUTSIDE),
        (0, _hdr(BASE + 248, 16), pfx, DropReason.INC_OUTSIDE),
        (0, tb.mwr_hdr(BASE, 4, first_be=0x7, requester_id=rid), pfx, DropReason.INC_OUTSIDE),
        (0, tb.mwr_hdr(BASE, 1, last_be=0xF), pfx, DropReason.INC_OUTSIDE),
        (0, _hdr(BASE + 4, 16), pfx, DropReason.INC_OFFSET),
        (0, _hdr(BASE, 16), pfx, None),
    ]
    for port, hdr, p, reason in cases:
        got, notify = m.check(port, hdr, p)
        assert got == reason, (port, hex(hdr), reason)
        assert notify == (0 if reason == DropReason.INC_BAD_GROUP else 0x2000)
    m.commit(0, _hdr(BASE, 16), pfx, bytes(16))
    assert m.check(0, _hdr(BASE, 16), pfx)[0] == DropReason.INC_OFFSET      # duplicate
    assert m.check(0, _hdr(BASE + 16, 112), pfx)[0] is None
    assert m.check(0, _hdr(BASE + 16, 132), pfx)[0] == DropReason.INC_OUTSIDE   # > max payload
    assert m.rejection_notice(DropReason.INC_OFFSET, pfx) == \
        inc_notice(DropReason.INC_OFFSET, 2, IncNoticeKind.REJECTED)


def _feed(m, g, cfg, rows, cuts):
    """Commit every member's row in writes of the given sizes."""
    pfx = inc_prefix(g, cfg.elem_type, cfg.op)
    for p, row in zip(cfg.member_ports(), rows):
        data, off = row.tobytes(), 0
        for n in cuts:
            assert m.check(p, _hdr(cfg.base + off, n), pfx)[0] is None
            m.commit(p, _hdr(cfg.base + off, n), pfx, data[off:off + n])
            off += n


@pytest.mark.parametrize("collective", list(Collective))
def test_results_match_in_any_burst_cut(collective, seed):
    rng = np.random.default_rng(seed)
    m = _model()
    cfg = _group(collective=collective, root=1, size=24 * 4)     # 24 elements, 3 chunks of 8
    assert m.arm(1, cfg) == RGroupConfigError.NONE
    rows = rng.integers(0, 1 << 32, size=(3, 24), dtype=np.uint32)
    _feed(m, 1, cfg, rows, [40, 56])
    want = reduce("int32", "sum", rows).astype("<u4").tobytes()
    assert m.pending() == sum(b - a for _, a, b in result_receivers(cfg, 24))
    for port, start, end in result_receivers(cfg, 24):
        wbase = 0x8000_0000 + port * 0x100_0000
        off = start
        # a wrong payload, a wrong address, then the right pieces in beat-aligned bursts
        bad = bytearray(want[off:off + LANES])
        bad[3] ^= 1
        g, why = m.match_result(port, wbase + 0x1000 + off, LANES, bytes(bad), wbase)
        assert g is None and "differs at byte" in why
        g, why = m.match_result(port, wbase + 0x1000 + off + LANES, LANES,
                                want[off + LANES:off + 2 * LANES], wbase)
        assert g is None and "expects its next result" in why
        while off < end:
            n = min(end - off, LANES * int(rng.integers(1, 4)))
            assert m.match_result(port, wbase + 0x1000 + off, n, want[off:off + n], wbase) \
                == (1, "")
            off += n
    assert m.pending() == 0
    assert m.completed[1] == 1


def test_result_before_all_members_is_an_error():
    m = _model()
    cfg = _group(size=64)
    m.arm(0, cfg)
    pfx = inc_prefix(0, "int32", "sum")
    for p in (0, 1):
        m.commit(p, _hdr(BASE, 64), pfx, bytes(64))
    g, why = m.match_result(0, 0x1000, 8, bytes(8), 0)
    assert g is None and "before every member sent them" in why


def test_abort_notices_and_fresh_round():
    m = _model()
    cfg = _group(size=64)
    m.arm(4, cfg)
    pfx = inc_prefix(4, "int32", "sum")
    m.commit(0, _hdr(BASE, 32), pfx, bytes(32))
    notices = m.abort(4)
    assert notices == [(p, 0x2000, inc_notice(0, 4, IncNoticeKind.ABORTED)) for p in (0, 1, 2)]
    assert m.check(0, _hdr(BASE + 32, 32), pfx)[0] == DropReason.INC_OFFSET
    assert m.check(0, _hdr(BASE, 32), pfx)[0] is None
    assert m.aborted[4] == 1 and m.pending() == 0


def test_switch_model_contribution_path():
    """Through SwitchModel: a rejected contribution becomes a notice from source N, counted;
    accepted ones count and their result is matched as a stream."""
    n = 4
    windows = [(0x8000_0000 + p * 0x100_0000, 0x80FF_FFFF + p * 0x100_0000, p, True)
               for p in range(n)]
    sm = SwitchModel(SwitchConfig(n_ports=n, data_width=W, max_payload=128, windows=windows,
                                  n_rgroups=8, reduce_buffer_beats=256))
    cfg = _group(members=0b11, size=32)
    assert sm.arm_rgroup(0, cfg) == RGroupConfigError.NONE
    pfx = inc_prefix(0, "int32", "sum")
    # port 2 is not a member
    sm.ingress_packet(2, tb.packet_beats(_hdr(BASE, 32), pfx, bytes(32), W))
    assert sm.counters[2]["drop_inc_not_member"] == 1
    notice = sm.expected[(n, 2)][0]
    assert notice.beats[0].data == inc_notice(DropReason.INC_NOT_MEMBER, 0,
                                              IncNoticeKind.REJECTED)
    assert tb.hdr_dw(notice.hdr, 2) == 0x8200_2000
    rows = [bytes(range(32)), bytes(range(32, 64))]
    for p in (0, 1):
        sm.ingress_packet(p, tb.packet_beats(_hdr(BASE, 32), pfx, rows[p], W))
    want = reduce("int32", "sum", np.stack([np.frombuffer(r, "<u4") for r in rows]))
    for p in (0, 1):
        base = 0x8000_0000 + p * 0x100_0000
        packet = tb.packet_beats(tb.mwr_hdr(base + 0x1000, 8), 0, want.astype("<u4").tobytes(),
                                 W)
        assert sm.match_egress(p, packet) == n
    assert sm.counters[0]["tx_bytes"] == 32 and sm.inc.completed[0] == 1
    with pytest.raises(AssertionError, match="as a reduction result"):
        sm.match_egress(0, tb.packet_beats(tb.mwr_hdr(0x8000_1000, 8), 0, bytes(32), W))


def test_only_whole_beats_are_due_before_the_round_ends():
    """A beat is reduced once every member has sent all of it; the round's tail beat once
    the round is complete."""
    m = _model()
    cfg = _group(members=0b11, size=36)                 # 4 beats of 8 bytes and a 4-byte tail
    m.arm(0, cfg)
    pfx = inc_prefix(0, "int32", "sum")
    for p in (0, 1):
        m.commit(p, _hdr(BASE, 12), pfx, bytes(12))
    assert m.pending() == 2 * 8                         # one whole beat, to both members
    for p in (0, 1):
        m.commit(p, _hdr(BASE + 12, 24), pfx, bytes(24))
    assert m.pending() == 2 * 36


def test_parity_error_rejects_every_contribution_until_rearmed():
    """docs/reduction-engine.md section 15: a group armed with an injected parity error
    rejects every contribution to it, member or not, as PARITY with a notice at offset 0,
    after the group-exists check; a failed arming does not make one; re-arming clears it."""
    m = _model()
    pfx = inc_prefix(2, "int32", "sum")
    assert m.arm(2, _group(size=6), parity_error=True) == RGroupConfigError.SIZE
    assert m.check(0, _hdr(BASE, 16), pfx) == (DropReason.INC_BAD_GROUP, 0)
    assert m.arm(2, _group(), parity_error=True) == RGroupConfigError.NONE
    for port in range(4):
        assert m.check(port, _hdr(BASE, 16), pfx) == (DropReason.PARITY, 0)
    assert m.check(0, _hdr(BASE, 16), inc_prefix(3, "int32", "sum"))[0] == \
        DropReason.INC_BAD_GROUP
    m.arm(2, _group())
    assert m.check(0, _hdr(BASE, 16), pfx) == (None, 0x2000)


def test_hidden_receiver_drops_results_and_notices():
    """docs/reduction-engine.md section 15: with port 1's receiver window hidden by a window
    parity error, its one-beat result shares and its notices are dropped and counted in
    ``parity_errors``; port 0 gets its results; a share of more than one beat cannot be
    counted and says so."""
    n = 4
    windows = [(0x8000_0000 + p * 0x100_0000, 0x80FF_FFFF + p * 0x100_0000, p, True)
               for p in range(n)]
    config = SwitchConfig(n_ports=n, data_width=W, max_payload=128, windows=windows,
                          n_rgroups=8, reduce_buffer_beats=256, window_parity_errors={1})
    sm = SwitchModel(config)
    assert [config.receiver_parity_error(p) for p in range(n)] == [False, True, True, True]
    cfg = _group(members=0b11, size=LANES)
    assert sm.arm_rgroup(0, cfg) == RGroupConfigError.NONE
    pfx = inc_prefix(0, "int32", "sum")
    rows = [bytes(range(LANES)), bytes(range(LANES, 2 * LANES))]
    for _ in range(2):
        for p in (0, 1):
            sm.ingress_packet(p, tb.packet_beats(_hdr(BASE, LANES), pfx, rows[p], W))
    sm.ingress_packet(2, tb.packet_beats(_hdr(BASE, LANES), pfx, bytes(LANES), W))  # no member
    assert not sm.expected[(n, 2)] and sm.parity_errors == 1        # its notice, dropped
    assert sm.pending() == 2 * 2 * LANES
    assert sm.drop_hidden_results() == 2                            # port 1: two rounds
    assert sm.pending() == 2 * LANES and sm.parity_errors == 3
    want = reduce("int32", "sum", np.stack([np.frombuffer(r, "<u4") for r in rows]))
    for _ in range(2):
        packet = tb.packet_beats(tb.mwr_hdr(0x8000_1000, LANES // 4), 0,
                                 want.astype("<u4").tobytes(), W)
        assert sm.match_egress(0, packet) == n
    assert sm.pending() == 0 and sm.inc.completed[0] == 2
    # a longer share: its bursts depend on timing
    sm.arm_rgroup(1, _group(members=0b11, size=4 * LANES))
    for p in (0, 1):
        sm.ingress_packet(p, tb.packet_beats(_hdr(BASE, 4 * LANES), inc_prefix(1, "int32", "sum"),
                                             bytes(4 * LANES), W))
    with pytest.raises(ValueError, match="more than one beat"):
        sm.drop_hidden_results()


def _e5m2_rows():
    """3 members x 24 fp8 E5M2 elements whose sums are worked out by hand: elements 0-5
    +inf + small (saturate on: 57344, a saturation; off: +inf), 6-8 57344 + 2048 (rounds back
    to 57344: a genuine max, no event), 9-10 a NaN, 11 +inf + -inf (NaN), 12-13 57344 + 4096
    (a tie that overflows: saturation, or +inf), 14-23 1 + 1 + 1 = 3 (nothing)."""
    cols = ([[0x7C, 0x01, 0x00]] * 6 + [[0x7B, 0x68, 0x00]] * 3 + [[0x7D, 0x00, 0x00]] * 2
            + [[0x7C, 0xFC, 0x00]] + [[0x7B, 0x6C, 0x00]] * 2 + [[0x3C, 0x3C, 0x3C]] * 10)
    return np.array(cols, dtype=np.uint8).T.copy()


def _deliver(m, g, cfg, want):
    """Deliver the round's result to every receiver in one-beat bursts."""
    for port, start, end in result_receivers(cfg, cfg.size):
        for off in range(start, end, LANES):
            n = min(end - off, LANES)
            assert m.match_result(port, cfg.result_offset + off, n, want[off:off + n], 0) \
                == (g, "")


@pytest.mark.parametrize("collective", list(Collective))
@pytest.mark.parametrize("saturate", [True, False])
def test_group_stats_count_each_result_element_once(collective, saturate):
    """docs/telemetry.md section 2.1: NaN, infinity and saturation count once per result
    element of a completed round, whatever the collective (an AllReduce packet reaches every
    member but counts once); nothing counts before the round completes; an aborted round
    adds only to ``aborted``; counts saturate at 2^32 - 1; clear_stats zeroes the window
    but not rgroup[g].completed."""
    m = _model()
    cfg = _group(elem_type="fp8_e5m2", op="sum", saturate=saturate, size=24,
                 collective=collective, root=2)
    assert m.arm(3, cfg) == RGroupConfigError.NONE
    rows = _e5m2_rows()
    _feed(m, 3, cfg, rows, [8, 16])
    want = reduce("fp8_e5m2", "sum", rows, saturate=saturate).tobytes()
    assert want[:6] == bytes([0x7B if saturate else 0x7C] * 6) and want[6:9] == b"\x7B" * 3
    assert m.group_stats(3) == [0] * 5                  # not complete yet
    _deliver(m, 3, cfg, want)
    assert m.group_stats(3) == ([1, 0, 3, 0, 8] if saturate else [1, 0, 3, 8, 0])
    # an aborted round: part of it sent, nothing of it counted but the abort
    pfx = inc_prefix(3, "fp8_e5m2", "sum")
    m.commit(0, _hdr(BASE, 8), pfx, rows[0].tobytes()[:8])
    m.abort(3)
    assert m.group_stats(3) == ([1, 1, 3, 0, 8] if saturate else [1, 1, 3, 8, 0])
    # a second round with the counters near the top: they stop at 2^32 - 1
    name = "saturation" if saturate else "infinity"
    m.stats[name][3] = (1 << 32) - 3
    _feed(m, 3, cfg, rows, [24])
    _deliver(m, 3, cfg, want)
    got = m.group_stats(3)
    assert got[GROUP_STATS.index(name)] == (1 << 32) - 1 and got[:3] == [2, 1, 6]
    assert m.stats[name][3] == (1 << 32) - 3 + 8       # the model keeps the true count
    assert m.group_stats(2) == [0] * 5                  # other groups untouched
    m.clear_stats()
    assert m.group_stats(3) == [0] * 5 and m.completed[3] == 2 and m.aborted[3] == 1


def test_group_stats_integer_and_minmax_groups():
    """Integer results never count; float min/max count NaN and infinity by the result's
    bits and never saturation."""
    m = _model()
    rows = _e5m2_rows()
    cfg_int = _group(elem_type="uint8", op="max", size=24, members=0b0111)
    cfg_max = _group(elem_type="fp8_e5m2", op="max", size=24, base=BASE + 0x1000,
                     result_offset=0x8000)
    m.arm(0, cfg_int)
    m.arm(1, cfg_max)
    for g, cfg in ((0, cfg_int), (1, cfg_max)):
        _feed(m, g, cfg, rows, [24])
        _deliver(m, g, cfg, reduce(cfg.dtype, cfg.op_name, rows).tobytes())
    assert m.group_stats(0) == [1, 0, 0, 0, 0]
    # max: +inf wins in 0-5 and 11 (7 infinities), the NaN in 9-10
    assert m.group_stats(1) == [1, 0, 2, 7, 0]
