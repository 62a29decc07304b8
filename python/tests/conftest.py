import pathlib

import numpy as np
import pytest

import sampleattn

REPO = pathlib.Path(__file__).resolve().parents[2]


def pytest_report_header(config):
    lines = [f"sampleattn package: {pathlib.Path(sampleattn.__file__).parent}"]
    try:
        lines.append(f"sampleattn library: {sampleattn.library_path()} ({sampleattn.library_version()})")
    except sampleattn.LibraryNotFoundError as e:
        lines.append(f"sampleattn library: NOT FOUND: {e}")
    return lines


@pytest.fixture
def rng():
    return np.random.default_rng(20241202)


@pytest.fixture(scope="session")
def cpu_context():
    with sampleattn.Context(backend="cpu") as context:
        yield context
