"""Shared pytest fixtures."""

import os

import pytest


@pytest.fixture
def seed(request):
    """The seed of a random test: ``SMARTFABRIC_SEED`` if set, else the test module's
    ``DEFAULT_SEED``; printed so a failure can be rerun. Modules with their own ``seed``
    fixture (a fresh random default) override this one."""
    env = os.environ.get("SMARTFABRIC_SEED")
    s = int(env, 0) if env else request.module.DEFAULT_SEED
    print(f"{request.node.name}: seed {s} (rerun with SMARTFABRIC_SEED={s})")
    return s


def pytest_collection_modifyitems(config, items):
    """The simulator tests (marker ``sim``, seconds to minutes each) first, in their own
    order, then the rest: with ``--dist worksteal`` the short block and model tests fill
    the gaps at the end, so both workers finish together instead of one running the last
    long simulation alone."""
    items.sort(key=lambda item: item.get_closest_marker("sim") is None)
