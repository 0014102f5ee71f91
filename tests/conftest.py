"""Shared pytest fixtures."""

import os
import random

import pytest


@pytest.fixture
def seed(request):
    """The seed of a random test: ``SMARTFABRIC_SEED`` if set, else the test module's
    ``DEFAULT_SEED`` when it has one, else a fresh random seed; printed so a failure can be
    rerun."""
    env = os.environ.get("SMARTFABRIC_SEED")
    if env:
        s = int(env, 0)
    else:
        s = getattr(request.module, "DEFAULT_SEED", None)
        if s is None:
            s = random.SystemRandom().randrange(1 << 31)
    print(f"{request.node.name}: seed {s} (rerun with SMARTFABRIC_SEED={s})")
    return s


def pytest_collection_modifyitems(config, items):
    """Longest first, so that the two workers of ``make test`` (``--dist load
    --maxschedchunk 1``: each takes the next test when it finishes one) end together: the
    simulator tests (marker ``sim``) before the rest, Icarus (about 10x slower) before
    Verilator, each group in its own order; the short block and model tests fill the end."""
    def key(item):
        if item.get_closest_marker("sim") is None:
            return 2
        callspec = getattr(item, "callspec", None)
        return 0 if callspec is not None and callspec.params.get("sim") == "icarus" else 1
    items.sort(key=key)
