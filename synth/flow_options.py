"""The command line of the ECP5 synthesis flow, one definition for ``smartfabric synth`` and
``python -m smartfabric.synth.ecp5`` (this module imports nothing of the HDL, so building the
command line stays fast)."""

from pathlib import Path

from ..argparsing import add_switch_arguments

__all__ = ["DEVICES", "PLACERS", "ROUTERS", "DEFAULT_PLACER", "DEFAULT_ROUTER",
           "add_synth_arguments", "add_pnr_arguments"]

#: Device flags nextpnr-ecp5 knows (``--<device>``).
DEVICES = ("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k",
           "um5g-25k", "um5g-45k", "um5g-85k")
#: nextpnr-ecp5 placers (``--placer``).
PLACERS = ("heap", "static", "sa")
#: nextpnr-ecp5 routers (``--router``).
ROUTERS = ("router1", "router2")
#: The flow's defaults: with them the whole switch routes (``run_ecp5``, docs/fpga-area.md).
DEFAULT_PLACER = "static"
DEFAULT_ROUTER = "router2"


def add_synth_arguments(parser):
    """Add every option of the flow to ``parser``: the switch's build (8 x 64 by default,
    :func:`~smartfabric.argparsing.add_switch_arguments`), ``--out``, the device and
    :func:`add_pnr_arguments`. ``smartfabric.synth.ecp5.run_from_args`` runs them."""
    add_switch_arguments(parser, ports=8, width=64)
    parser.add_argument("--out", type=Path, default=Path("build/synth"),
                        help="output directory (default build/synth)")
    parser.add_argument("--device", default="85k", choices=DEVICES,
                        help="ECP5 device (default 85k)")
    parser.add_argument("--package", default="CABGA381", help="package (default CABGA381)")
    parser.add_argument("--speed", type=int, default=8, choices=(6, 7, 8),
                        help="speed grade (default 8)")
    return add_pnr_arguments(parser)


def add_pnr_arguments(parser):
    """Add ``--freq``, ``--seed``, ``--router`` and ``--placer`` to ``parser``."""
    parser.add_argument("--freq", type=float, default=150.0, help="target MHz (default 150)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    parser.add_argument("--router", default=DEFAULT_ROUTER, choices=ROUTERS,
                        help=f"nextpnr router (default {DEFAULT_ROUTER})")
    parser.add_argument("--placer", default=DEFAULT_PLACER, choices=PLACERS,
                        help=f"nextpnr placer (default {DEFAULT_PLACER}: the whole switch "
                             f"routes with it)")
    return parser
