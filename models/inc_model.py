"""Golden model of the in-network reduction engine as the switch uses it.

Written from ``docs/reduction-engine.md`` (sections 2 and 4-8) and ``docs/reduction.md``; the
numbers come from :func:`models.reduction.reduce` (exact arithmetic). Pure Python and numpy, no
HDL imports.

:class:`SwitchModel` feeds it every contribution whose first beat passed the ingress checks
(:meth:`IncModel.check`, in each port's order) and every accepted one once its last beat is in
(:meth:`IncModel.commit`); a bench arms groups (:meth:`IncModel.arm`), and tells it about a
timeout abort it provoked (:meth:`IncModel.abort`). The model predicts

* the rejections (reason, in the documented check order) and the notices they cause;
* the results, as a byte stream per (receiver, group): the engine may cut a round into bursts
  (one MWr each) at any beat boundary, depending on timing, so :meth:`IncModel.match_result`
  accepts any packet that is the next piece of a stream, and checks its header, length,
  ``keep`` and every payload byte;
* the per-group ``completed`` / ``aborted`` counts and the arming results (``status``);
* the per-group statistics of the ``rgroup_stats`` window (docs/telemetry.md section 2.1):
  completed and aborted operations, and the NaN, infinity and saturated elements of the
  results of every completed round, from :func:`models.reduction.reduce_with_events`
  (:meth:`IncModel.group_stats`, :meth:`IncModel.clear_stats`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .formats import (
    INC_PREFIX, REQ_DW1, Collective, DropReason, IncNoticeKind, RGroupConfigError,
    field_get, inc_notice,
)
from .capture_format import GROUP_STATS
from .reduction import (
    DTYPE_NAMES, ELEMENT_EVENTS, FLOAT_OPS, OPS, dtype_info, reduce, reduce_scatter_chunks,
    reduce_with_events,
)

__all__ = ["RGroup", "IncModel", "result_receivers"]

_MASK64 = (1 << 64) - 1
_STAT_MAX = (1 << 32) - 1          # the rgroup_stats counters saturate at 32 bits


@dataclass
class RGroup:
    """One reduction group's configuration: the ``rgroup[g]`` registers
    (docs/reduction-engine.md section 2). ``elem_type`` and ``op`` take model names or codes.
    Write :attr:`ctrl` / the other registers from it with :meth:`registers`."""
    members: int
    elem_type: int | str
    op: int | str
    saturate: bool = True
    collective: int = Collective.ALLREDUCE
    root: int = 0
    base: int = 0
    size: int = 0
    buf_base: int = 0
    buf_beats: int = 0
    result_offset: int = 0
    notify_offset: int = 0

    def __post_init__(self):
        if isinstance(self.elem_type, str):
            self.elem_type = DTYPE_NAMES.index(self.elem_type)
        if isinstance(self.op, str):
            self.op = OPS.index(self.op)

    @property
    def dtype(self) -> str | None:
        return DTYPE_NAMES[self.elem_type] if self.elem_type < len(DTYPE_NAMES) else None

    @property
    def op_name(self) -> str | None:
        return OPS[self.op] if self.op < len(OPS) else None

    def member_ports(self) -> list[int]:
        return [p for p in range(self.members.bit_length()) if self.members >> p & 1]

    def registers(self, enable: bool = True) -> list[tuple[str, int | dict]]:
        """``(register, value or fields)`` writes that set the group up, ``ctrl`` (the arming
        write) last."""
        return [
            ("members", self.members),
            ("base_lo", self.base & 0xFFFFFFFF), ("base_hi", self.base >> 32 & 0xFFFFFFFF),
            ("size", self.size),
            ("buf_base", self.buf_base), ("buf_beats", self.buf_beats),
            ("result_lo", self.result_offset & 0xFFFFFFFF),
            ("result_hi", self.result_offset >> 32 & 0xFFFFFFFF),
            ("notify_lo", self.notify_offset & 0xFFFFFFFF),
            ("notify_hi", self.notify_offset >> 32 & 0xFFFFFFFF),
            ("ctrl", dict(enable=int(enable), elem_type=self.elem_type, op=self.op,
                          saturate=int(self.saturate), collective=int(self.collective),
                          root=self.root)),
        ]


def result_receivers(cfg: RGroup, n_elements: int) -> list[tuple[int, int, int]]:
    """``(port, first byte, end byte)`` of the result each receiver gets in one round
    (section 8): every member for an AllReduce, the root for a Reduce, chunk i to the i-th
    member for a ReduceScatter (empty chunks omitted)."""
    esize = dtype_info(cfg.dtype).width // 8
    members = cfg.member_ports()
    if cfg.collective == Collective.ALLREDUCE:
        return [(p, 0, cfg.size) for p in members]
    if cfg.collective == Collective.REDUCE:
        return [(cfg.root, 0, cfg.size)]
    chunks = reduce_scatter_chunks(n_elements, len(members))
    return [(p, a * esize, b * esize) for p, (a, b) in zip(members, chunks) if b > a]


class _Round:
    """One operation's contributions: per member, the bytes received so far."""

    def __init__(self, members, size, lanes):
        self.data = {p: bytearray(size) for p in members}
        self.received = dict.fromkeys(members, 0)
        self.size = size
        self.lanes = lanes
        self.result: bytes | None = None            # whole-round result, once complete
        self.pieces: dict[tuple[int, int], bytes] = {}   # results of parts, before that

    def available(self) -> int:
        """Result bytes the engine can have produced: the beats every member has sent whole
        (section 8), or the whole round once every member has sent all of it."""
        have = min(self.received.values())
        return have if have == self.size else have - have % self.lanes


class _Group:
    """An armed group: its configuration snapshot and progress."""

    def __init__(self, cfg: RGroup, lanes: int):
        self.cfg = dataclasses.replace(cfg)
        self.lanes = lanes
        self.members = cfg.member_ports()
        self.esize = dtype_info(cfg.dtype).width // 8
        self.n_elements = cfg.size // self.esize
        self.receivers = result_receivers(cfg, self.n_elements)
        self.next_offset = dict.fromkeys(self.members, 0)   # bytes, in the member's round
        self.member_round = dict.fromkeys(self.members, 0)
        self.rounds: dict[int, _Round] = {}
        # receiver -> [round, next byte, end byte, first byte] of its stream
        self.cursor = {p: [0, a, b, a] for p, a, b in self.receivers}
        self.completed = 0
        self.parity_error = False        # the snapshot was written with a parity error

    def round(self, r) -> _Round:
        if r not in self.rounds:
            self.rounds[r] = _Round(self.members, self.cfg.size, self.lanes)
        return self.rounds[r]

    def complete_rounds(self) -> int:
        """Rounds every member has sent whole."""
        return min(self.member_round.values())

    def pending_bytes(self) -> int:
        """Result bytes the model can predict that have not been delivered."""
        total = 0
        for p, (r, off, end, start) in self.cursor.items():
            while r in self.rounds:
                total += max(0, min(self.rounds[r].available(), end) - off)
                if self.rounds[r].available() < self.cfg.size:
                    break
                r, off = r + 1, start
        return total


class IncModel:
    """The engine's reduction groups, contributions and results.

    Parameters
    ----------
    n_ports, data_width, max_payload : int
        Switch build parameters.
    n_rgroups : int
        Reduction groups built.
    reduce_dtypes : tuple of str
        Element types the engine is built for.
    buffer_beats : int
        D, beats of each per-port stage memory.
    """

    def __init__(self, n_ports, data_width, max_payload, n_rgroups=64,
                 reduce_dtypes=DTYPE_NAMES, buffer_beats=512):
        self.n = n_ports
        self.w = data_width
        self.max_payload = max_payload
        self.n_rgroups = n_rgroups
        self.reduce_dtypes = tuple(reduce_dtypes)
        self.buffer_beats = buffer_beats
        self.groups: dict[int, _Group] = {}
        self.retired: list[_Group] = []            # disarmed groups with results still due
        self.status = {g: (False, 0) for g in range(n_rgroups)}   # (active, cause)
        self.completed = [0] * n_rgroups
        self.aborted = [0] * n_rgroups
        # the rgroup_stats window: GROUP_STATS per group since reset or the last clear
        self.stats = {name: [0] * n_rgroups for name in GROUP_STATS}
        self.config_errors = 0
        self.elements_checked = 0        # result elements matched, all receivers

    # -- configuration -------------------------------------------------------------------------

    @property
    def min_group_beats(self) -> int:
        """Smallest ring a group may have (section 1)."""
        rows = max(1, self.max_payload // (self.w // 8)) + 1
        return 1 << (rows - 1).bit_length()

    def validate(self, cfg: RGroup) -> RGroupConfigError:
        """The arming checks of section 2, in their documented order."""
        members = cfg.members & ((1 << self.n) - 1)
        if members == 0:
            return RGroupConfigError.NO_MEMBERS
        if cfg.collective not in (Collective.ALLREDUCE, Collective.REDUCESCATTER,
                                  Collective.REDUCE):
            return RGroupConfigError.COLLECTIVE
        if cfg.collective == Collective.REDUCE and (cfg.root >= self.n
                                                    or not members >> cfg.root & 1):
            return RGroupConfigError.ROOT
        dtype = cfg.dtype
        if dtype is None or dtype not in self.reduce_dtypes or cfg.op_name is None:
            return RGroupConfigError.TYPE_OP
        if dtype_info(dtype).is_float and cfg.op_name not in FLOAT_OPS:
            return RGroupConfigError.TYPE_OP
        if cfg.size == 0 or cfg.size % 4:
            return RGroupConfigError.SIZE
        if cfg.base % 4 or cfg.result_offset % 4 or cfg.notify_offset % 4:
            return RGroupConfigError.ALIGN
        beats = cfg.buf_beats
        if (beats & (beats - 1) or beats < self.min_group_beats
                or cfg.buf_base + beats > self.buffer_beats):
            return RGroupConfigError.BUFFER
        if cfg.collective == Collective.REDUCESCATTER:
            esize = dtype_info(dtype).width // 8
            n_el = cfg.size // esize
            chunk = -(-n_el // bin(members).count("1"))
            if chunk < n_el and (chunk * esize) % (self.w // 8):
                return RGroupConfigError.CHUNK
        return RGroupConfigError.NONE

    def arm(self, g: int, cfg: RGroup, parity_error: bool = False) -> RGroupConfigError:
        """Writing ``rgroup[g].ctrl`` with enable = 1: validate and (re)start the group.
        ``parity_error``: the arming consumes an injected parity error (section 9), so if it
        succeeds, every contribution to the group is rejected as PARITY until it is re-armed.
        A failed arming does not consume it (returned cause != NONE; the bench keeps it
        pending)."""
        self.disarm(g)
        cfg = dataclasses.replace(cfg, members=cfg.members & ((1 << self.n) - 1))
        cause = self.validate(cfg)
        if cause != RGroupConfigError.NONE:
            self.config_errors += 1
            self.status[g] = (False, int(cause))
            return cause
        self.groups[g] = _Group(cfg, self.w // 8)
        self.groups[g].parity_error = parity_error
        self.status[g] = (True, 0)
        return cause

    def disarm(self, g: int) -> None:
        """Writing ``rgroup[g].ctrl`` with enable = 0 (or before re-arming): the group stops
        accepting; results it owes are no longer predicted."""
        if g in self.groups:
            del self.groups[g]
        active, cause = self.status[g]
        self.status[g] = (False, cause)

    def abort(self, g: int) -> list[tuple[int, int, int]]:
        """The timeout aborted group g's operation (section 7): every member back to offset 0
        of a fresh round, data of the unfinished round discarded, one abort notice per member.
        Returns the notices as ``(port, notify offset, payload DW)``. Results of the aborted
        round that had already left the rings are not predicted: a bench aborts only rounds
        none of whose results can have been produced (a member has sent nothing of it)."""
        grp = self.groups[g]
        self.aborted[g] += 1
        self.stats["aborted"][g] += 1
        r = grp.complete_rounds()
        grp.rounds = {k: v for k, v in grp.rounds.items() if k < r}
        # The aborted round's results are no longer due; the next round takes its number.
        for p in grp.members:
            grp.next_offset[p] = 0
            grp.member_round[p] = r
        for c in grp.cursor.values():
            if c[0] >= r:
                c[0], c[1] = r, c[3]
        notice = inc_notice(0, g, IncNoticeKind.ABORTED)
        return [(p, grp.cfg.notify_offset, notice) for p in grp.members]

    # -- contributions -------------------------------------------------------------------------

    def check(self, port: int, hdr: int, pfx: int) -> tuple[DropReason | None, int]:
        """Section 5: the first failing check of a contribution's first beat, or None.
        Returns ``(reason, notify offset)``; an accepted one must later be committed."""
        group = field_get(pfx, INC_PREFIX, "group")
        grp = self.groups.get(group)
        if grp is None:
            return DropReason.INC_BAD_GROUP, 0
        if grp.parity_error:       # the group's snapshot is not trusted: notice at offset 0
            return DropReason.PARITY, 0
        cfg = grp.cfg
        if port not in grp.next_offset:
            return DropReason.INC_NOT_MEMBER, cfg.notify_offset
        if (field_get(pfx, INC_PREFIX, "elem_type") != cfg.elem_type
                or field_get(pfx, INC_PREFIX, "op") != cfg.op):
            return DropReason.INC_MISMATCH, cfg.notify_offset
        address, nbytes, first_be, last_be = _write_of(hdr)
        offset = (address - cfg.base) & _MASK64
        length_dw = nbytes // 4
        if (address < cfg.base or offset + nbytes > cfg.size or first_be != 0xF
                or last_be != (0 if length_dw == 1 else 0xF) or nbytes > self.max_payload):
            return DropReason.INC_OUTSIDE, cfg.notify_offset
        if offset != grp.next_offset[port]:
            return DropReason.INC_OFFSET, cfg.notify_offset
        return None, cfg.notify_offset

    def commit(self, port: int, hdr: int, pfx: int, payload: bytes) -> None:
        """An accepted contribution's last beat is in: its data counts (section 4)."""
        grp = self.groups[field_get(pfx, INC_PREFIX, "group")]
        address, nbytes, _, _ = _write_of(hdr)
        offset = address - grp.cfg.base
        rnd = grp.round(grp.member_round[port])
        rnd.data[port][offset:offset + nbytes] = payload[:nbytes]
        rnd.received[port] = offset + nbytes
        grp.next_offset[port] = offset + nbytes
        if offset + nbytes == grp.cfg.size:
            grp.next_offset[port] = 0
            grp.member_round[port] += 1

    def rejection_notice(self, reason: DropReason, pfx: int) -> int:
        """Payload DW of the notice a rejected contribution earns."""
        return inc_notice(reason, field_get(pfx, INC_PREFIX, "group"), IncNoticeKind.REJECTED)

    # -- results -------------------------------------------------------------------------------

    def _result_bytes(self, grp: _Group, r: int, start: int, end: int) -> bytes:
        rnd = grp.rounds[r]
        if rnd.available() == grp.cfg.size:
            if rnd.result is None:
                rnd.result = self._reduce(grp, rnd, 0, grp.cfg.size)
                rnd.pieces.clear()
            return rnd.result[start:end]
        # The same packet goes to every receiver of an AllReduce: reduce it once.
        if (start, end) not in rnd.pieces:
            rnd.pieces[(start, end)] = self._reduce(grp, rnd, start, end)
        return rnd.pieces[(start, end)]

    @staticmethod
    def _rows(grp, rnd, start, end) -> np.ndarray:
        """The members' contributions to bytes [start, end) of a round: (members, elements)."""
        d = dtype_info(grp.cfg.dtype)
        return np.stack([np.frombuffer(bytes(rnd.data[p][start:end]),
                                       dtype=d.container.newbyteorder("<"))
                         for p in grp.members])

    @classmethod
    def _reduce(cls, grp, rnd, start, end) -> bytes:
        cfg = grp.cfg
        d = dtype_info(cfg.dtype)
        out = reduce(cfg.dtype, cfg.op_name, cls._rows(grp, rnd, start, end),
                     saturate=cfg.saturate)
        return out.astype(d.container.newbyteorder("<")).tobytes()

    def _count_round(self, g: int, grp: _Group, rnd: _Round) -> None:
        """Round ``rnd`` of group ``g`` completed: count the operation and its result
        elements' events. Every element of the round's result is sent once (to every member
        of an AllReduce in one packet, to its chunk's member of a ReduceScatter, to the root
        of a Reduce), so each counts once."""
        self.completed[g] += 1
        self.stats["completed"][g] += 1
        _, events = reduce_with_events(grp.cfg.dtype, grp.cfg.op_name,
                                       self._rows(grp, rnd, 0, grp.cfg.size),
                                       saturate=grp.cfg.saturate)
        for name in ELEMENT_EVENTS:
            self.stats[name][g] += int(events[name].sum())

    def _next_round(self, g: int, grp: _Group, cursor: list) -> None:
        """A receiver's ``cursor`` reached the end of its share of its round: move it to the
        next round; once every receiver has its share, the round is complete."""
        r = cursor[0]
        cursor[0], cursor[1] = r + 1, cursor[3]
        if all(cur[0] > r for cur in grp.cursor.values()):
            grp.completed += 1
            self._count_round(g, grp, grp.rounds.pop(r))

    def group_stats(self, g: int) -> list[int]:
        """Words 0-4 of ``rgroup_stats[g]``: the statistics of GROUP_STATS, saturated at
        2^32 - 1 like the counters."""
        return [min(self.stats[name][g], _STAT_MAX) for name in GROUP_STATS]

    def clear_stats(self) -> None:
        """``telemetry_ctrl.gstat_clear``: every group's statistics back to 0 (the
        ``rgroup[g].completed`` / ``aborted`` registers are not affected)."""
        for counts in self.stats.values():
            counts[:] = [0] * self.n_rgroups

    def match_result(self, port: int, address: int, nbytes: int, payload: bytes,
                     window_base: int) -> tuple[int | None, str]:
        """Match one result MWr delivered at ``port``: its (rebased) ``address``, byte count
        and payload. Returns ``(group, "")`` when it is the next piece of one of the port's
        result streams (and advances that stream), else ``(None, why)``."""
        why = []
        for g, grp in list(self.groups.items()):
            c = grp.cursor.get(port)
            if c is None:
                continue
            r, off, end, _ = c
            expect = (window_base + grp.cfg.result_offset + off) & _MASK64
            if address != expect:
                why.append(f"group {g} expects its next result at {expect:#x}")
                continue
            rnd = grp.rounds.get(r)
            avail = min(rnd.available(), end) if rnd else off
            lanes = self.w // 8
            if nbytes > self.max_payload or off % lanes or off + nbytes > end:
                why.append(f"group {g}: {nbytes} bytes at offset {off} of round {r} "
                           f"break the burst rules (beats, max payload, end {end})")
                continue
            if off + nbytes > avail:
                why.append(f"group {g}: bytes {off}..{off + nbytes} of round {r} delivered "
                           f"before every member sent them (model has {avail})")
                continue
            want = self._result_bytes(grp, r, off, off + nbytes)
            if want != payload:
                bad = next(i for i in range(nbytes) if want[i] != payload[i])
                e = grp.esize
                k = (off + bad) // e * e
                why.append(f"group {g} round {r}: payload differs at byte {off + bad}: element "
                           f"{k // e} expected {want[k - off:k - off + e][::-1].hex()}, got "
                           f"{payload[k - off:k - off + e][::-1].hex()}")
                continue
            self.elements_checked += nbytes // grp.esize
            off += nbytes
            c[1] = off
            if off == end:
                self._next_round(g, grp, c)
            return g, ""
        return None, "; ".join(why) or "no armed group sends results to this port"

    def pending(self) -> int:
        """Predictable result bytes not delivered yet."""
        return sum(grp.pending_bytes() for grp in self.groups.values())

    def drop_results(self, port: int) -> int:
        """Every result due to ``port`` so far was sent and dropped (its receiver window was
        hidden by a window parity error, docs/protocol.md section 9): skip them in the port's
        streams and return the number of result packets dropped.

        The engine cuts a round's results into bursts by timing (section 8), so the count is
        known only when each dropped share is a single beat; a longer one raises ValueError.
        """
        packets = 0
        lanes = self.w // 8
        for g, grp in list(self.groups.items()):
            c = grp.cursor.get(port)
            while c is not None and c[0] in grp.rounds:
                r, off, end, _ = c
                avail = min(grp.rounds[r].available(), end)
                if avail > off:
                    if avail - off > lanes or off // lanes != (avail - 1) // lanes:
                        raise ValueError(
                            f"group {g}: {avail - off} result bytes to hidden port {port} span "
                            f"more than one beat; the model cannot count their packets")
                    packets += 1
                    c[1] = off = avail
                if off < end:
                    break
                self._next_round(g, grp, c)    # the engine sent and counted all of it
        return packets


def _write_of(hdr: int) -> tuple[int, int, int, int]:
    """(address, payload bytes, First BE, Last BE) of a memory write header."""
    from .switch_model import decode_header     # here: switch_model imports this module
    d = decode_header(hdr)
    d1 = hdr >> 32 & 0xFFFFFFFF
    return (d.address, 4 * (d.length_field or 1024), field_get(d1, REQ_DW1, "first_be"),
            field_get(d1, REQ_DW1, "last_be"))
