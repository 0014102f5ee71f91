"""Multicast stimulus: writes by destination set, group and multicast window
(docs/protocol.md section 8), built with the independent encoder (cocotbext-pcie)."""

from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from ..models.formats import SfKind, sf_prefix, HC_SET_PORTS

__all__ = ["Multicast"]


class Multicast:
    """Stimulus for one switch: multicast writes by each of the three mechanisms."""

    def __init__(self, env):
        self.env = env
        self.n = env.params.n_ports
        self.rng = env.rng
        self.seq = 0
        lanes = env.params.data_width // 8
        #: Longest multicast write that fits a VOQ (longer ones are dropped, LENGTH).
        self.max_bytes = min(env.params.max_payload, env.params.voq_depth * lanes)

    def mask_of(self, ports):
        return sum(1 << p for p in ports)

    def write(self, src, address, nbytes, pfx=0, read=False):
        """Beats of an MWr (or MRd) from ``src``'s endpoint to ``address`` with prefix ``pfx``.
        The payload starts with a sequence number, so every packet is distinguishable."""
        tlp = Tlp()
        wide = address >= 1 << 32
        if read:
            tlp.fmt_type = TlpType.MEM_READ_64 if wide else TlpType.MEM_READ
            tlp.set_addr_be(address, nbytes)
        else:
            tlp.fmt_type = TlpType.MEM_WRITE_64 if wide else TlpType.MEM_WRITE
            self.seq += 1
            data = self.seq.to_bytes(4, "little") + self.rng.randbytes(nbytes - 4) \
                if nbytes >= 4 else self.rng.randbytes(nbytes)
            tlp.set_addr_be_data(address, data)
        tlp.requester_id = PcieId(self.env.plan.bus(src), 0, 0)
        tlp.tag = self.env.next_tag(src)
        return self.env.beats_of_tlp(tlp, pfx)

    def window_address(self, port, nbytes, spill=False):
        """An address in ``port``'s 32-bit window with room for ``nbytes`` (or, with
        ``spill``, whose last byte falls past the window's end)."""
        base, limit = self.env.plan.win32(port)
        if spill:
            return limit + 1 - nbytes + 4 * self.rng.randint(1, nbytes // 4 - 1)
        return base + 4 * self.rng.randrange((limit - base + 1 - nbytes) // 4)

    def to_set(self, src, ports, nbytes, xs=False, spill=False):
        window = self.rng.choice([src] + list(ports)) if ports else src
        pfx = sf_prefix(SfKind.HC_SET, mask=self.mask_of(ports), xs=xs)
        return self.write(src, self.window_address(window, nbytes, spill), nbytes, pfx)

    def to_group(self, src, group, nbytes, xs=False, spill=False):
        pfx = sf_prefix(SfKind.HC_GROUP, group=group, xs=xs)
        return self.write(src, self.window_address(src, nbytes, spill), nbytes, pfx)

    def to_mc_window(self, src, group, nbytes, spill=False):
        cfg = self.env.config
        size = 1 << max(12, cfg.mc_index_pos)
        start = cfg.mc_base + group * size
        if spill:
            offset = size - nbytes + 4 * self.rng.randint(1, nbytes // 4 - 1)
        else:
            offset = 4 * self.rng.randrange((size - nbytes) // 4 + 1)
        return self.write(src, start + offset, nbytes)

    def random_set(self, src, size=None):
        limit = min(self.n, HC_SET_PORTS)
        size = size or self.rng.randint(1, limit)
        return sorted(self.rng.sample(range(limit), size))
