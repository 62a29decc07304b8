"""sampleattn: dense and SampleAttention prefill attention for CPUs and NVIDIA GPUs.

A pure-Python binding over the library's C ABI (ctypes): numpy arrays in and out, zero-copy from
any DLPack tensor (torch on CPU or CUDA, numpy). `import sampleattn.torch` adds a torch.library
custom op and a drop-in `scaled_dot_product_attention` where PyTorch is installed.

    import numpy as np, sampleattn
    q = np.random.randn(4096, 32, 128).astype(np.float32)   # [tokens, q_heads, head_dim]
    k = np.random.randn(4096, 8, 128).astype(np.float32)    # [tokens, kv_heads, head_dim]
    v = np.random.randn(4096, 8, 128).astype(np.float32)
    o, stats = sampleattn.attention(q, k, v, method="sample", return_stats=True)

The C library is found through SAMPLEATTN_LIBRARY, a path recorded at install time, or the
loader's search path (see sampleattn._library).
"""
from ._core import Context, alibi_slopes, attention, default_context, kv_cache, sample_defaults
from ._library import ENV_VARIABLE, Error, LibraryNotFoundError, library, load_library

__version__ = "0.5.0"

__all__ = ["Context", "Error", "LibraryNotFoundError", "alibi_slopes", "attention", "default_context",
           "kv_cache", "library_path", "library_version", "load_library", "sample_defaults"]


def library_version():
    """The C library's version string, e.g. "0.5.0" (loads the library)."""
    return library().version()


def library_path():
    """The file the C library was loaded from (loads the library)."""
    return library().path
