"""Reduction stimulus for the switch benches: group set-up over AXI4-Lite, contributions built
with the independent encoder (cocotbext-pcie), and operand generators with the special values
the numeric spec cares about (docs/reduction.md).
"""

import numpy as np
from cocotb.triggers import ClockCycles
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from ..models.capture_format import GROUP_STATS
from ..models.formats import Collective, RGroupConfigError, inc_prefix
from ..models.inc_model import RGroup
from ..models.reduction import DTYPES, FLOAT_OPS, INT_OPS, dtype_info

__all__ = ["operands", "special_operands", "ring_beats", "Reduction", "ops_of", "ARM_CYCLES"]

#: Cycles a bench waits after arming before contributing (arming takes 4 cycles, 38 for a
#: ReduceScatter: docs/reduction-engine.md section 2).
ARM_CYCLES = 48


def ops_of(dtype):
    """Operations a group of ``dtype`` may use."""
    return FLOAT_OPS if DTYPES[dtype].is_float else INT_OPS


def _float_specials(d):
    s, man, mx = d.sign_bit, d.man_bits, d.max_finite
    out = [0, s, mx, mx | s, 1, 1 | s, (1 << man) - 1, ((1 << man) - 1) | s, 1 << man,
           (1 << man) | s, d.canonical_nan, d.canonical_nan | s]
    if d.has_inf:
        out += [d.inf_bits, d.inf_bits | s, d.inf_bits | 1, d.inf_bits | s | ((1 << man) - 1),
                d.inf_bits | (1 << (man - 1)) | 1]
    return np.array(out, dtype=np.uint64)


def operands(rng, dtype, members, elements):
    """Raw bits, shape ``(members, elements)``, of the type's container: for each run of 64
    elements a random stimulus kind: uniform bits, special values (+-0, infinities, NaNs with
    payloads, subnormals, largest finite), heavy cancellation (x and -x, plus a small term),
    values near the largest finite (overflow), a narrow binade range (rounding), tiny values.
    Integers: uniform bits, extremes, small values. ``rng`` is a ``numpy.random.Generator``."""
    d = dtype_info(dtype)
    w = d.width
    out = np.empty((members, elements), dtype=np.uint64)
    for start in range(0, elements, 64):
        n = min(64, elements - start)
        cols = slice(start, start + n)
        bits = rng.integers(0, 1 << w, size=(members, n), dtype=np.uint64)
        if not d.is_float:
            kind = rng.integers(0, 3)
            if kind == 1:
                extremes = np.array([0, 1, (1 << w) - 1, 1 << (w - 1), (1 << (w - 1)) - 1],
                                    dtype=np.uint64)
                bits = extremes[rng.integers(0, len(extremes), size=(members, n))]
            elif kind == 2:
                bits &= np.uint64(0xF)
            out[:, cols] = bits
            continue
        man, emax = d.man_bits, d.max_exp_field
        sign = rng.integers(0, 2, size=(members, n), dtype=np.uint64) << np.uint64(w - 1)
        frac = rng.integers(0, 1 << man, size=(members, n), dtype=np.uint64)

        def finite(lo, hi):
            e = rng.integers(max(lo, 0), min(hi, emax) + 1, size=(members, n), dtype=np.uint64)
            f = np.where(e == emax, np.minimum(frac, np.uint64(d.max_finite & ((1 << man) - 1))),
                         frac)
            return sign | (e << np.uint64(man)) | f

        kind = rng.integers(0, 6)
        if kind == 1:
            specials = _float_specials(d)
            pick = specials[rng.integers(0, len(specials), size=(members, n))]
            bits = np.where(rng.random((members, n)) < 0.5, pick, finite(0, emax))
        elif kind == 2 and members >= 2:
            bits = finite(0, emax)
            half = members // 2
            bits[half:2 * half] = bits[:half] ^ np.uint64(d.sign_bit)
            if members % 2:
                bits[-1] = finite(0, man + 2)[-1]
            bits = bits[rng.permutation(members)]
        elif kind == 3:
            bits = finite(emax - 2, emax)
        elif kind == 4:
            e0 = int(rng.integers(0, emax + 1))
            bits = finite(e0 - man - 2, e0)
        elif kind == 5:
            bits = finite(0, 2)
        out[:, cols] = bits
    return out.astype(d.container)


def special_operands(rng, dtype, members, elements):
    """Raw bits, shape ``(members, elements)``, whose results exercise the per-group element
    statistics (docs/telemetry.md section 2.1): per element, at random, a NaN among finite
    values; an infinity among finite values (E5M2 with saturate on: a saturation); +inf with
    -inf (NaN); every member at the largest finite value of one sign (an overflow: +-inf, or
    for fp8 a saturation / E4M3 NaN); the largest finite value with zeros (a max-finite sum
    that is not a saturation); or values from :func:`operands`. Integer types: ``operands``.
    ``rng`` is a ``numpy.random.Generator``."""
    d = dtype_info(dtype)
    out = operands(rng, dtype, members, elements).astype(np.uint64)
    if not d.is_float:
        return out.astype(d.container)
    s, mx = np.uint64(d.sign_bit), np.uint64(d.max_finite)
    inf = np.uint64(d.inf_bits if d.has_inf else d.max_finite)   # E4M3: no infinity
    kinds = rng.integers(0, 7, size=elements)
    row = rng.integers(0, members, size=elements)
    neg = rng.integers(0, 2, size=elements).astype(bool)
    cols = np.arange(elements)
    nan = (kinds == 0)
    out[row[nan], cols[nan]] = np.uint64(d.canonical_nan)
    one_inf = (kinds == 1)
    out[row[one_inf], cols[one_inf]] = np.where(neg[one_inf], inf | s, inf)
    if members >= 2:
        both = (kinds == 2)
        out[0, cols[both]] = inf
        out[1, cols[both]] = inf | s
    big = (kinds == 3)
    out[:, cols[big]] = np.where(neg[big], mx | s, mx)
    lone = (kinds == 4)
    out[:, cols[lone]] = np.uint64(0)
    out[row[lone], cols[lone]] = np.where(neg[lone], mx | s, mx)
    return out.astype(d.container)


def ring_beats(params, groups):
    """Ring size per group when ``groups`` share the stage memories (the largest power of
    two that fits)."""
    beats = params.reduce_buffer_beats // groups
    beats = 1 << (beats.bit_length() - 1)
    assert beats >= params.reduce_min_group_beats, "stage memories too small for the groups"
    return beats


class Reduction:
    """Reduction groups and contributions on one switch bench (:class:`verif.env.SwitchEnv`).

    Group g's window (where its members write) is at ``window(g)``; results and notices go to
    offsets of each receiver's window chosen by the bench.
    """

    GROUP_WINDOW = 0x2000_0000_0000      # far from every unicast window of the AddressPlan

    def __init__(self, env):
        self.env = env
        self.params = env.params
        self.model = env.model
        self.rng = env.rng

    def window(self, g, wide=True):
        """Group window base: 64-bit above 4 GiB, or 32-bit (below the unicast windows)."""
        return self.GROUP_WINDOW + (g << 32) if wide else 0x1000_0000 + (g << 20)

    async def arm(self, g, cfg, expect=RGroupConfigError.NONE, wait=True):
        """Write group ``g``'s registers (``ctrl`` last: that write arms it), arm the model at
        the same moment, check the arming result in ``rgroup[g].status``."""
        regs = self.env.regs
        await self.write_group(g, cfg)
        cause = self.model.arm_rgroup(g, cfg)
        assert cause == expect, f"model: arming group {g} gives {cause!r}, bench expected {expect!r}"
        await ClockCycles(self.env.dut.clk, ARM_CYCLES)
        status = await regs.read_fields(f"rgroup[{g}].status")
        want = {"active": int(cause == RGroupConfigError.NONE), "cause": int(cause)}
        assert status == want, f"rgroup[{g}].status {status}, expected {want} ({cause.name})"

    async def write_group(self, g, cfg):
        """Write group ``g``'s registers, ``ctrl`` last (that write arms it)."""
        for name, value in cfg.registers():
            if isinstance(value, dict):
                await self.env.regs.write(f"rgroup[{g}].{name}", **value)
            else:
                await self.env.regs.write(f"rgroup[{g}].{name}", value)

    async def disarm(self, g):
        await self.env.regs.write(f"rgroup[{g}].ctrl", enable=0)
        self.model.inc.disarm(g)

    def contribution(self, port, g, cfg, offset, data, pfx=None, wide=None):
        """Beats of one contribution MWr: ``data`` at ``offset`` of group ``g``'s window."""
        address = cfg.base + offset
        tlp = Tlp()
        four = address >= 1 << 32 if wide is None else wide
        tlp.fmt_type = TlpType.MEM_WRITE_64 if four else TlpType.MEM_WRITE
        tlp.set_addr_be_data(address, bytes(data))
        tlp.requester_id = PcieId(self.env.plan.bus(port), 0, 0)
        tlp.tag = self.env.next_tag(port)
        if pfx is None:
            pfx = inc_prefix(g, cfg.elem_type, cfg.op)
        return self.env.beats_of_tlp(tlp, pfx)

    def split(self, nbytes, max_bytes=None):
        """Random write sizes (whole DWs, 1 DW up to ``max_bytes``) covering ``nbytes``."""
        max_bytes = max_bytes or self.params.max_payload
        sizes, left = [], nbytes
        while left:
            r = self.rng.random()
            if r < 0.3:
                n = max_bytes
            elif r < 0.4:
                n = 4
            else:
                n = 4 * self.rng.randint(1, max_bytes // 4)
            n = min(n, left)
            sizes.append(n)
            left -= n
        return sizes

    def round_packets(self, port, g, cfg, data, max_bytes=None, start=0):
        """One member's contribution to one round (``data`` from offset ``start`` on), cut
        into random writes: a list of packets (each a list of beats)."""
        packets, offset = [], 0
        for n in self.split(len(data), max_bytes):
            packets.append(self.contribution(port, g, cfg, start + offset,
                                             data[offset:offset + n]))
            offset += n
        return packets

    def random_group(self, g, dtype, op, members, size, buf_base, buf_beats, collective=None,
                     root=None):
        """A group configuration with random addresses, collective and flags."""
        rng = self.rng
        ports = [p for p in range(self.params.n_ports) if members >> p & 1]
        if collective is None:
            collective = rng.choice(list(Collective))
        esize = dtype_info(dtype).width // 8
        if collective == Collective.REDUCESCATTER:
            # a chunk must be whole beats unless one chunk holds everything
            lanes = self.params.data_width // 8
            chunk = -(-(size // esize) // len(ports)) * esize
            if len(ports) > 1 and chunk % lanes:
                collective = Collective.ALLREDUCE
        return RGroup(
            members=members, elem_type=dtype, op=op, saturate=rng.random() < 0.7,
            collective=collective,
            root=root if root is not None else rng.choice(ports),
            base=self.window(g, wide=rng.random() < 0.5), size=size, buf_base=buf_base,
            buf_beats=buf_beats,
            result_offset=0x10_0000 * (g + 1) + 4 * rng.randrange(1024),
            notify_offset=0x8_0000 + 64 * g)

    async def run_rounds(self, groups, data):
        """Every member sends its rounds: round r of every group before round r+1 of any, the
        groups' writes interleaved at random on each port (docs/reduction-engine.md section
        7). ``groups``: {g: RGroup}; ``data``: {g: [round][(members, elements) raw bits]}."""
        env, rng = self.env, self.rng
        n_rounds = max(len(rounds) for rounds in data.values())
        for r in range(n_rounds):
            per_port = {p: [] for p in range(self.params.n_ports)}
            for g, cfg in groups.items():
                if r >= len(data[g]):
                    continue
                rows = data[g][r]
                for i, p in enumerate(cfg.member_ports()):
                    per_port[p].append(self.round_packets(p, g, cfg, rows[i].tobytes()))
            for p, streams in per_port.items():
                # merge the groups' packet lists in random order, each list kept in order
                while streams:
                    k = rng.randrange(len(streams))
                    env.send_beats(p, streams[k].pop(0))
                    if not streams[k]:
                        streams.pop(k)

    async def group_stats_mismatches(self):
        """Read ``rgroup_stats[g][0..7]`` of every group over AXI4-Lite and compare with the
        model's statistics (``IncModel.group_stats``; words 5-7 read 0). Returns the
        mismatches as lines of text (empty: all equal)."""
        lines = []
        got = await self.env.regs.read_many(f"rgroup_stats[{g}][{k}]"
                                            for g in range(self.params.n_rgroups)
                                            for k in range(8))
        for g in range(self.params.n_rgroups):
            words = [got[f"rgroup_stats[{g}][{k}]"] for k in range(8)]
            want = self.model.inc.group_stats(g) + [0] * (8 - len(GROUP_STATS))
            if words != want:
                lines.append(f"rgroup_stats[{g}] ({', '.join(GROUP_STATS)}): switch {words}, "
                             f"model {want}")
        return lines
