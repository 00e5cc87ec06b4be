"Shared fixtures: a registry of every public layer with a factory that builds it for a given feature size."
import os
import pytest
import torch
from hypothesis import settings, HealthCheck

# one torch thread per pytest-xdist worker (`-n auto` starts one worker per core), two for a single process
_DEFAULT_THREADS = '1' if os.environ.get('PYTEST_XDIST_WORKER') else '2'
torch.set_num_threads(int(os.environ.get('FLOWNB_TEST_THREADS', _DEFAULT_THREADS)))

settings.register_profile('ci', max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile('dev', max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci' if os.environ.get('CI') else 'dev')


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False, help='run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long end-to-end checks (run with --runslow)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'): return
    skip = pytest.mark.skip(reason='slow: pass --runslow to run')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
