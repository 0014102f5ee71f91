"""Multicast stimulus: writes by destination set, group and multicast window
(docs/protocol.md section 8), built with the independent encoder (cocotbext-pcie)."""

from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from ..models.formats import SfKind, sf_prefix, HC_SET_PORTS, N_HC_MONITORS

__all__ = ["Multicast", "MC_BASE", "random_multicast_config"]

MC_BASE = 0x4000_0000       # below every unicast window of the AddressPlan


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


def random_multicast_config(env, rng):
    """Random multicast window, receive masks, overlays, group table and monitors in the
    model's configuration (written into the switch by ``env.start()``)."""
    cfg, n, plan = env.config, env.params.n_ports, env.plan
    cfg.mc_enable = True
    cfg.mc_index_pos = rng.choice([12, 13, 16])
    cfg.mc_num_group = rng.randrange(32)
    cfg.mc_base = MC_BASE
    cfg.mc_exclude_source = rng.random() < 0.5
    groups = cfg.mc_num_group + 1
    cfg.mc_receive = [rng.getrandbits(groups) if rng.random() < 0.8 else 0 for _ in range(n)]
    overlays = []
    for p in range(n):
        if rng.random() < 0.6:
            size = rng.randint(max(12, cfg.mc_index_pos), 20)
            base = plan.win32(p)[0] + (rng.randrange(plan.WIN32_SIZE >> size) << size)
            overlays.append((base | rng.getrandbits(size), size))   # low bits are replaced
        else:
            overlays.append((rng.getrandbits(64), rng.randrange(6)))  # size < 6: no overlay
    cfg.mc_overlay = overlays
    used = rng.sample(range(env.params.n_groups), min(12, env.params.n_groups))
    cfg.hc_groups = {g: rng.getrandbits(n) if rng.random() < 0.9 else 0 for g in used}
    cfg.hc_monitors = [(True, 0, used[k]) if k % 2 == 0 else (True, 1, rng.randrange(groups))
                       for k in range(N_HC_MONITORS)]
    return used
