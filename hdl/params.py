"""Build parameters of the switch, validated once for RTL, CLI and benches."""

from dataclasses import dataclass, asdict

from ..models.formats import SUPPORTED_PORTS, SUPPORTED_WIDTHS
from ..models.reduction import DTYPE_NAMES

__all__ = ["SwitchParams", "SMALLEST", "load_config"]


@dataclass(frozen=True)
class SwitchParams:
    """Build-time configuration of a :class:`~smartfabric.hdl.switch.SmartfabricSwitch`.

    Parameters
    ----------
    n_ports : int
        Number of ports N, 2 to 32.
    data_width : int
        Beat width W in bits: 64, 128, 256 or 512.
    max_payload : int
        Maximum payload size in bytes (128 to 4096, a power of two); longer TLPs are dropped
        (LENGTH).
    voq_depth : int
        Depth of each virtual output queue in beats (2 to 64, a power of two). Cut-through
        forwarding means a queue need not hold a whole packet.
    n_windows : int
        Number of address windows (1 to 64).
    n_id_routes : int
        Number of ID-routing entries (1 to 64).
    n_groups : int
        Entries of the Hypercast group table (1 to 4096; one N-bit memory word each).
    n_rgroups : int
        Reduction groups of the in-network reduction engine (1 to 256: the INC descriptor's
        group field has 8 bits); ``docs/reduction-engine.md``.
    reduce_buffer_beats : int
        Depth in beats of the reduction engine's stage memory, one W-bit memory per port
        (a power of two, 2 to 65,536; the engine needs at least
        :attr:`reduce_min_group_beats`). Groups share it as rings of ``buf_beats`` beats each.
    reduce_dtypes : tuple of str
        Element types the reduction engine builds arithmetic for (golden-model names,
        ``models.reduction.DTYPE_NAMES``; default all 11). A group of another type fails to
        arm (config error).
    capture_depth : int
        Entries of the header capture ring (``docs/telemetry.md`` section 3; a power of two,
        2 to 256; default 64). The ring is one block RAM wide (6 ECP5 ``DP16KD``) at any depth
        up to 512; the limit is the register window ``cap_entry`` (8 words per entry).
        0 builds no header capture (about 10,000 LUT4 sites at 8 ports, for FPGA builds):
        ``cap_depth`` then reads 0 and so do the capture's status registers and ``cap_entry``.
    """
    n_ports: int = 8
    data_width: int = 256
    max_payload: int = 256
    voq_depth: int = 32
    n_windows: int = 16
    n_id_routes: int = 16
    n_groups: int = 1024
    n_rgroups: int = 64
    reduce_buffer_beats: int = 512
    reduce_dtypes: tuple = DTYPE_NAMES
    capture_depth: int = 64

    def __post_init__(self):
        def is_pow2(v):
            return isinstance(v, int) and v > 0 and v & (v - 1) == 0
        if not isinstance(self.n_ports, int) or self.n_ports not in SUPPORTED_PORTS:
            raise ValueError(f"ports must be 2 to 32, not {self.n_ports!r}")
        if self.data_width not in SUPPORTED_WIDTHS:
            raise ValueError(f"data width must be one of 64, 128, 256, 512, not {self.data_width!r}")
        if not is_pow2(self.max_payload) or not 128 <= self.max_payload <= 4096:
            raise ValueError(f"max payload must be a power of two from 128 to 4096 bytes, "
                             f"not {self.max_payload!r}")
        if not is_pow2(self.voq_depth) or not 2 <= self.voq_depth <= 64:
            raise ValueError(f"VOQ depth must be a power of two from 2 to 64, not {self.voq_depth!r}")
        for name in ("n_windows", "n_id_routes"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= 64:
                raise ValueError(f"{name} must be 1 to 64, not {v!r}")
        if not isinstance(self.n_groups, int) or not 1 <= self.n_groups <= 4096:
            raise ValueError(f"n_groups must be 1 to 4096, not {self.n_groups!r}")
        if not isinstance(self.n_rgroups, int) or not 1 <= self.n_rgroups <= 256:
            raise ValueError(f"n_rgroups must be 1 to 256, not {self.n_rgroups!r}")
        if not is_pow2(self.reduce_buffer_beats) or not 2 <= self.reduce_buffer_beats <= 65536:
            raise ValueError(f"reduce_buffer_beats must be a power of two from 2 to 65536, "
                             f"not {self.reduce_buffer_beats!r}")
        if self.capture_depth != 0 and (not is_pow2(self.capture_depth) or
                                        not 2 <= self.capture_depth <= 256):
            raise ValueError(f"capture_depth must be 0 (no capture) or a power of two from 2 "
                             f"to 256, not {self.capture_depth!r}")
        dts = self.reduce_dtypes
        if isinstance(dts, str) or not isinstance(dts, (tuple, list)) or not dts or \
                any(d not in DTYPE_NAMES for d in dts):
            raise ValueError(f"reduce_dtypes must be a non-empty tuple of element-type names from "
                             f"{', '.join(DTYPE_NAMES)}, not {self.reduce_dtypes!r}")
        # canonical form: a tuple in the model's order, no repeats
        object.__setattr__(self, "reduce_dtypes",
                           tuple(d for d in DTYPE_NAMES if d in self.reduce_dtypes))

    @property
    def lanes(self):
        """Byte lanes per beat."""
        return self.data_width // 8

    @property
    def max_beats(self):
        """Beats of the longest legal packet (maximum payload plus an ECRC DW)."""
        return -(-(self.max_payload + 4) // self.lanes)

    @property
    def reduce_min_group_beats(self):
        """Smallest ring (``buf_beats``) a reduction group may have: a power of two holding
        the rows one maximum-payload write can touch (``max_payload / lanes + 1`` when it does
        not start on a beat boundary), so a lane can always finish writing a packet."""
        rows = max(1, self.max_payload // self.lanes) + 1
        return 1 << (rows - 1).bit_length()

    def as_dict(self):
        """Plain-data form (tuples as lists, so a JSON round trip compares equal)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: The smallest build of the whole switch: 2 ports x 64, one window and one ID route,
#: VOQs of 2 beats, 2 Hypercast groups, one int8 reduction group with a 32-beat buffer, a
#: 2-entry header capture (what the area and block-timing tests run; with the engines at
#: their defaults, 2 ports need 140,269 LUT4s, measured 2026-11-24). The synthesis flow's
#: full run uses it without the capture (``synth/smallest_2x64.toml``): with it, it does not
#: route (docs/fpga-area.md, session 14).
SMALLEST = SwitchParams(n_ports=2, data_width=64, max_payload=128, voq_depth=2, n_windows=1,
                        n_id_routes=1, n_groups=2, n_rgroups=1, reduce_buffer_beats=32,
                        reduce_dtypes=("int8",), capture_depth=2)


def load_config(path) -> dict:
    """The ``[switch]`` table (or the top level) of a TOML build configuration, checked for
    unknown keys: ``SwitchParams`` fields by name. Raises ValueError with a one-line reason."""
    import tomllib
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read config {path}: {e}")
    table = doc.get("switch", doc)
    known = set(SwitchParams.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"unknown keys in {path}: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(known))})")
    return dict(table)
