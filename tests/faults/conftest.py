"""Fault injection: each test reproduces one fault of a real deployment (a killed
run, a dead server, a corrupt file) on loopback servers and small data, and
asserts the clear end state: exit code, message, nothing lost, next run works."""
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)
