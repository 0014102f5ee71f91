"""nextpnr-ecp5 choices of the synthesis flow, shared by ``smartfabric synth`` and
``python -m smartfabric.synth.ecp5`` (this module imports nothing of the HDL, so building the
command line stays fast)."""

__all__ = ["PLACERS", "ROUTERS", "DEFAULT_PLACER", "DEFAULT_ROUTER", "add_pnr_arguments"]

#: nextpnr-ecp5 placers (``--placer``).
PLACERS = ("heap", "static", "sa")
#: nextpnr-ecp5 routers (``--router``).
ROUTERS = ("router1", "router2")
#: The flow's defaults: with them the whole switch routes (``run_ecp5``, docs/fpga-area.md).
DEFAULT_PLACER = "static"
DEFAULT_ROUTER = "router2"


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
