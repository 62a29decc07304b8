import os
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


def pytest_configure(config):
    # python/run_tests.sh installs the package and says where: the tests must use that copy, not
    # a source tree that happens to be on sys.path.
    expected = os.environ.get("SAMPLEATTN_EXPECT_PACKAGE_DIR")
    actual = pathlib.Path(sampleattn.__file__).resolve().parent
    if expected and actual != pathlib.Path(expected).resolve():
        raise pytest.UsageError(f"sampleattn was imported from {actual}, not the installed {expected}")
