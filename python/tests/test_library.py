"""Where the package finds the C library: SAMPLEATTN_LIBRARY, a path recorded at install time
(sampleattn/_config.py), then libsampleattn.so.1 on the loader's search path. Each case runs in
a fresh interpreter (the library is loaded once per process)."""
import os
import pathlib
import shutil
import subprocess
import sys

import sampleattn

PRINT_PATH = "import sampleattn; print(sampleattn.library_path())"


def _run(code, env, cwd=None):
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)


def _environment(**changes):
    env = {k: v for k, v in os.environ.items() if k not in ("SAMPLEATTN_LIBRARY", "LD_LIBRARY_PATH")}
    env.update(changes)
    return env


def _package_copy(tmp_path):
    """A copy of the package under test, which a test may give a _config.py."""
    site = tmp_path / "site"
    shutil.copytree(pathlib.Path(sampleattn.__file__).parent, site / "sampleattn",
                    ignore=shutil.ignore_patterns("__pycache__", "_config.py"))
    return site


def test_path_recorded_at_install_time(tmp_path):
    site = _package_copy(tmp_path)
    library = os.path.realpath(sampleattn.library_path())
    (site / "sampleattn" / "_config.py").write_text(f"LIBRARY = {library!r}\n")
    result = _run(PRINT_PATH, _environment(PYTHONPATH=str(site)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.path.realpath(result.stdout.strip()) == library


def test_soname_on_the_loader_path(tmp_path):
    site = _package_copy(tmp_path)
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (libdir / "libsampleattn.so.1").symlink_to(os.path.realpath(sampleattn.library_path()))
    result = _run(PRINT_PATH, _environment(PYTHONPATH=str(site), LD_LIBRARY_PATH=str(libdir)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.path.realpath(result.stdout.strip()) == os.path.realpath(sampleattn.library_path())


def test_environment_variable_wins_over_the_recorded_path(tmp_path):
    site = _package_copy(tmp_path)
    (site / "sampleattn" / "_config.py").write_text("LIBRARY = '/nonexistent/recorded/libsampleattn.so'\n")
    env = _environment(PYTHONPATH=str(site), SAMPLEATTN_LIBRARY=os.path.realpath(sampleattn.library_path()))
    result = _run(PRINT_PATH, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Without the variable, the stale recorded path is reported among what was tried.
    result = _run(PRINT_PATH, _environment(PYTHONPATH=str(site), LD_LIBRARY_PATH=str(tmp_path)), cwd=tmp_path)
    if result.returncode != 0:  # no libsampleattn.so.1 installed system-wide
        assert "/nonexistent/recorded/libsampleattn.so (recorded at install time)" in result.stderr
        assert "SAMPLEATTN_LIBRARY" in result.stderr


def test_load_library_switches(tmp_path):
    path = os.path.realpath(sampleattn.library_path())
    code = ("import sampleattn\n"
            f"print(sampleattn.load_library({path!r}))\n"
            "try:\n"
            "    sampleattn.load_library('/nonexistent/libsampleattn.so')\n"
            "except sampleattn.LibraryNotFoundError as e:\n"
            "    print('refused', e)\n")
    result = _run(code, _environment(PYTHONPATH=os.environ.get("PYTHONPATH", "")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert os.path.realpath(lines[0]) == path
    assert lines[1].startswith("refused") and "/nonexistent/libsampleattn.so" in lines[1]
