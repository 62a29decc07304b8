"""Contexts: info() as a dict, options, closing, concurrent use, the environment it reports."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import sampleattn

INFO_KEYS = {"backend", "num_threads", "num_numa_nodes", "isa", "device_name", "note", "binding", "cpu_model",
             "cpu_tables", "backends", "environment", "version", "library"}


def test_info_has_every_field(cpu_context):
    info = cpu_context.info()
    assert set(info) == INFO_KEYS
    assert info["backend"] == "cpu" and cpu_context.backend == "cpu"
    assert info["num_threads"] >= 1 and info["num_numa_nodes"] >= 1
    assert info["binding"] == "cores"
    assert info["isa"] and info["isa"] in info["cpu_tables"]  # the table in use is one this CPU runs
    assert "scalar" in info["cpu_tables"]
    assert info["backends"].startswith("cpu: in use")
    assert info["note"] and isinstance(info["cpu_model"], str)
    assert info["version"] == sampleattn.library_version()
    assert info["library"] == sampleattn.library_path()


def test_options():
    with sampleattn.Context(backend="cpu", num_threads=1, binding="none") as context:
        info = context.info()
        assert info["num_threads"] == 1 and info["binding"] == "none"
        assert "closed" not in repr(context)
    assert context.closed and "closed" in repr(context)
    with pytest.raises(ValueError, match="backend"):
        sampleattn.Context(backend="gpu")
    with pytest.raises(ValueError, match="binding"):
        sampleattn.Context(binding="numa")
    with pytest.raises(ValueError, match="max_workspace_bytes"):
        sampleattn.Context(max_workspace_bytes=-1)


def test_cuda_backend_is_there_or_says_why_not():
    try:
        context = sampleattn.Context(backend="cuda")
    except sampleattn.Error as e:  # not compiled in, or no device
        assert e.status == "SAMPLEATTN_UNSUPPORTED_BACKEND"
        assert e.message
    else:
        with context:
            info = context.info()
            assert info["backend"] == "cuda" and info["isa"] == "cuda" and info["device_name"]
            assert context.cuda_device == 0


def test_auto_falls_back_or_uses_cuda():
    with sampleattn.Context() as context:
        info = context.info()
        assert info["backend"] in ("cpu", "cuda")
        assert info["note"]


def test_context_is_used_from_several_threads(rng, cpu_context):
    q, k, v = (rng.standard_normal((512, 4, 64)).astype(np.float32) for _ in range(3))
    expected = sampleattn.attention(q, k, v, context=cpu_context)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = sampleattn.attention(q, k, v, context=cpu_context)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def _python(code, **env):
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout


def test_environment_is_reported():
    # The library reads SAMPLEATTN_* once per process, so each case runs in its own.
    code = "import sampleattn, json; print(json.dumps(sampleattn.Context(backend='cpu').info()))"
    info = json.loads(_python(code, SAMPLEATTN_ISA="bogus"))
    assert "SAMPLEATTN_ISA=bogus rejected" in info["environment"]
    info = json.loads(_python(code, SAMPLEATTN_ISA="scalar"))
    assert info["isa"] == "scalar" and "SAMPLEATTN_ISA=scalar" in info["environment"]


def test_scalar_table_gives_the_same_attention(rng):
    # The forced scalar table against the default one, through the binding.
    code = ("import numpy as np, sampleattn, sys\n"
            "rng = np.random.default_rng(7)\n"
            "q, k, v = (rng.standard_normal((300, 4, 64)).astype(np.float32) for _ in range(3))\n"
            "np.save(sys.argv[1], sampleattn.attention(q, k, v))\n")
    outputs = []
    for isa in ("scalar", ""):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sampleattn_isa_{os.getpid()}_{isa or 'best'}.npy")
        environment = dict(os.environ)
        environment.pop("SAMPLEATTN_ISA", None)
        if isa:
            environment["SAMPLEATTN_ISA"] = isa
        subprocess.run([sys.executable, "-c", code, path], env=environment, check=True)
        outputs.append(np.load(path))
        os.unlink(path)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_sample_defaults_are_the_headers():
    assert sampleattn.sample_defaults() == {
        "alpha": 0.95, "r_row": 0.05, "r_w": 0.08, "min_window": 64, "sample_block": 64, "min_stripes": 0,
        "max_stripes": 0, "sink_tokens": 4, "dense_below": 2048, "scope": "per_head",
        "window_mass_counts": False, "max_density": 0.8, "r_val": 0.02, "min_kept": 0.9, "max_lost": 0.01, "val_rows": 384,
        "look": 0.0}
