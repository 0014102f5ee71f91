"""`smartfabric lint` (``verilator --lint-only -Wall`` on the generated Verilog, with the waivers
of ``synth.verilog.LINT_WAIVERS``) passes on small builds, so the Verilog FPGA users take stays
lint clean. The default build (`make lint`, about 2.5 minutes) has the same modules, more of
them; these builds also cover one-entry tables (zero-width indices) and every element type."""

import dataclasses
import subprocess
import sys

import pytest

from smartfabric.hdl.params import SMALLEST
from smartfabric.models.reduction import DTYPE_NAMES
from smartfabric.verif.simenv import simulator_missing

BUILDS = {
    # one window, one ID route, one reduction group, a 2-entry capture
    "smallest": SMALLEST,
    # three ports (not a power of two), several windows and groups, every element type
    "three_ports": dataclasses.replace(SMALLEST, n_ports=3, voq_depth=4, n_windows=4,
                                       n_id_routes=2, n_groups=8, n_rgroups=2,
                                       reduce_dtypes=DTYPE_NAMES, capture_depth=4),
}


def _toml(params):
    def value(v):
        return "[" + ", ".join(f'"{x}"' for x in v) + "]" if isinstance(v, list) else str(v)
    return "[switch]\n" + "".join(f"{k} = {value(v)}\n" for k, v in params.as_dict().items())


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_generated_verilog_is_lint_clean(tmp_path, build):
    reason = simulator_missing("verilator")
    if reason:
        pytest.skip(reason)
    config = tmp_path / f"{build}.toml"
    config.write_text(_toml(BUILDS[build]))
    r = subprocess.run([sys.executable, "-m", "smartfabric.cli", "lint", "--config", str(config)],
                       capture_output=True, text=True)
    findings = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("%")]
    assert r.returncode == 0 and not findings, "\n".join(findings) or r.stderr
    assert "lint clean" in r.stdout
