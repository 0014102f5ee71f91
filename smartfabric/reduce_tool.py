"""``smartfabric reduce``: run a reduction through the switch RTL in simulation and check it
bit for bit against the golden model (docs/reduction-engine.md, docs/reduction.md).

The members are ports 0 .. members-1 of an N-port switch built with only the requested
element type and no header capture (a small, quick build; cached under ``--build-dir``). Two
rounds run: the rows as given, then the rows permuted over the ports; both must give the same
bits, every receiver must get the same, and those bits must equal ``models.reduction.reduce``.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["run_reduce", "load_rows", "PORT_SIZES"]

#: Switch sizes the tool picks from by default (each size is its own simulator build).
PORT_SIZES = (4, 8, 16, 32)
COLLECTIVES = {"allreduce": 0, "reducescatter": 1, "reduce": 2}


def load_rows(path, dtype):
    """Input rows as raw bits of ``dtype``'s container, shape (members, elements). Accepts
    raw unsigned bit patterns of the format's width, or the type's native numpy / ml_dtypes
    array (``np.save`` writes ml_dtypes arrays as raw bytes, which are read as the type's
    bits). Raises ValueError with a one-line reason otherwise."""
    from .models.reduction import dtype_info, to_bits, _native
    d = dtype_info(dtype)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a .npy array: {str(e).splitlines()[0]}")
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{path} holds several arrays (.npz); give one .npy array")
    if a.ndim != 2:
        raise ValueError(f"input must have shape (members, elements), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"input must have at least one member and one element, got {a.shape}")
    if a.dtype == d.container:
        return np.ascontiguousarray(a)
    if a.dtype == _native(d):
        return np.ascontiguousarray(to_bits(dtype, a))
    if a.dtype.kind == "V" and a.dtype.itemsize == d.width // 8 and not a.dtype.fields:
        # numpy saves ml_dtypes arrays (bf16, fp8) as raw bytes of the element size
        return np.ascontiguousarray(a).view(d.container)
    raise ValueError(f"{dtype} input must be raw bits ({np.dtype(d.container).name}) or "
                     f"{_native(d).name} values, not {a.dtype.name}")


def _padded(rows, members, esize, lanes, collective):
    """Zero elements appended so the group is legal: whole DWs, and for a ReduceScatter
    chunks of whole beats (docs/reduction-engine.md section 2, CHUNK). Results beyond the
    input's elements are dropped."""
    n = rows.shape[1]
    unit = max(1, 4 // esize)
    if collective == COLLECTIVES["reducescatter"] and members > 1:
        per_chunk = -(-n // members)
        beat_elems = lanes // esize
        per_chunk = -(-per_chunk // beat_elems) * beat_elems
        total = per_chunk * members
    else:
        total = -(-n // unit) * unit
    if total == n:
        return rows
    return np.concatenate([rows, np.zeros((rows.shape[0], total - n), rows.dtype)], axis=1)


def _hex(v, width):
    return f"0x{int(v):0{width // 4}x}"


def run_reduce(args, out=sys.stdout):
    """The command; returns the exit status (0 match, 1 mismatch). Raises ValueError /
    RuntimeError for bad arguments or a failed simulation."""
    from .hdl.params import SwitchParams
    from .models.reduction import DTYPE_NAMES, FLOAT_OPS, INT_OPS, dtype_info, reduce
    from .verif.runner import run_test
    from .verif.simenv import simulator_missing

    if args.dtype not in DTYPE_NAMES:
        raise ValueError(f"unknown --dtype {args.dtype!r}; one of {', '.join(DTYPE_NAMES)}")
    d = dtype_info(args.dtype)
    ops = FLOAT_OPS if d.is_float else INT_OPS
    if args.op not in ops:
        raise ValueError(f"--op {args.op!r} is not an operation of {args.dtype} "
                         f"({', '.join(ops)})")
    rows = load_rows(args.input, args.dtype)
    members, n = rows.shape
    if args.ports is None:
        fits = [p for p in PORT_SIZES if p >= members]
        if not fits:
            raise ValueError(f"{members} members: at most 32 ports")
        ports = fits[0]
    else:
        ports = args.ports
        if not 2 <= ports <= 32:
            raise ValueError(f"--ports must be 2 to 32, not {ports}")
        if members > ports:
            raise ValueError(f"{members} members do not fit {ports} ports")
    reason = simulator_missing(args.sim)
    if reason:
        raise RuntimeError(reason)
    collective = COLLECTIVES[args.collective]
    # Only what a reduction needs: one element type, two groups, no header capture.
    params = SwitchParams(n_ports=ports, data_width=args.data_width, max_payload=256,
                          n_rgroups=2, reduce_buffer_beats=256, reduce_dtypes=(args.dtype,),
                          capture_depth=0)
    lanes = params.data_width // 8
    padded = _padded(rows, members, d.width // 8, lanes, collective)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(members)
    spec = {"dtype": args.dtype, "op": args.op, "saturate": not args.no_saturate,
            "collective": collective}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, rows=padded, perm=perm)
        env = {"SMARTFABRIC_REDUCE_IN": str(src), "SMARTFABRIC_REDUCE_OUT": str(dst),
               "SMARTFABRIC_REDUCE_GROUP": json.dumps(spec)}
        if args.seed is not None:
            env["SMARTFABRIC_SEED"] = str(args.seed)
        log = Path(args.build_dir) / "reduce.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        from .cli import _capture
        try:
            _capture(lambda: run_test(params, args.sim, "reduce_file",
                                      module="smartfabric.verif.test_reduce", extra_env=env,
                                      build_root=args.build_dir), True, log)
        except AssertionError as e:
            raise RuntimeError(f"simulation failed: {str(e).splitlines()[0]} (log: {log})")
        got = dict(np.load(dst))
    # What each receiver got, as elements; the result as the tool reports it.
    container = np.dtype(d.container).newbyteorder("<")
    width = d.width
    if collective == COLLECTIVES["allreduce"]:
        receivers = list(range(members))
    elif collective == COLLECTIVES["reduce"]:
        receivers = [0]
    else:
        receivers = None
    results = []
    for r in (0, 1):
        views = {p: got[f"r{r}_p{p}"].view(container) for p in range(ports)}
        if receivers is None:
            result = np.concatenate([views[p] for p in range(members)])
        else:
            result = views[receivers[0]]
            for p in receivers[1:]:
                if not np.array_equal(views[p], result):
                    print(f"mismatch: port {p} received other bits than port {receivers[0]}",
                          file=out)
                    return 1
        results.append(result[:n].astype(d.container))
    result = results[0]
    np.save(args.output, result)
    if len(result) != n:
        print(f"mismatch: the switch delivered {len(result)} elements, expected {n}", file=out)
        return 1
    if not np.array_equal(results[0], results[1]):
        k = int(np.flatnonzero(results[0] != results[1])[0])
        print(f"mismatch: permuting the member rows changed element {k}: "
              f"{_hex(results[0][k], width)} vs {_hex(results[1][k], width)}", file=out)
        return 1
    expected = reduce(args.dtype, args.op, rows, saturate=not args.no_saturate)
    bad = np.flatnonzero(result != expected)
    summary = (f"{args.dtype} {args.op} {args.collective}: {members} members x {n} elements "
               f"on {ports} ports ({args.sim})")
    if len(bad):
        print(f"MISMATCH {summary}: {len(bad)} elements differ from the golden model; first:",
              file=out)
        for k in bad[:8]:
            inputs = " ".join(_hex(v, width) for v in rows[:, k])
            print(f"  [{k}] inputs {inputs} expected {_hex(expected[k], width)} "
                  f"got {_hex(result[k], width)}", file=out)
        return 1
    print(f"OK {summary}: bit-exact against the golden model; every receiver got the same, "
          f"and the permuted rows gave the same bits; result written to {args.output}",
          file=out)
    return 0
