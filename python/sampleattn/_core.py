"""Contexts and the attention call over the C API."""
import atexit
import ctypes as C
import threading

import numpy as np

from . import _abi
from . import _dlpack
from ._library import Error, library

SAMPLE_PARAMETERS = ("alpha", "r_row", "r_w", "min_window", "sample_block", "min_stripes", "max_stripes",
                     "sink_tokens", "dense_below", "scope", "window_mass_counts", "max_density", "r_val",
                     "min_kept", "max_lost", "val_rows", "look")

_FLOAT_SAMPLE_PARAMETERS = ("alpha", "r_row", "r_w", "max_density", "r_val", "min_kept", "max_lost", "look")

# How many inputs were copied (not passed zero-copy) since import: lets tests check zero-copy.
copies_made = 0

_INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------------------------
class Context:
    """A library context: a backend (CPU worker pool, or one CUDA device) and its scratch memory.

    backend: "auto" (CUDA when compiled in and a device exists, else CPU), "cpu" or "cuda".
    num_threads: CPU workers; 0 = SAMPLEATTN_NUM_THREADS if set, else one per available core.
    binding: "cores" (each worker bound to its core) or "none".
    cuda_device: the CUDA device ordinal. max_workspace_bytes: scratch limit, 0 = none.

    A context may be used from several threads at once (ctypes releases the GIL during calls);
    close() waits for the calls in flight. Use it as a context manager, or call close().
    """

    def __init__(self, backend="auto", num_threads=0, binding="cores", cuda_device=0, max_workspace_bytes=0):
        lib = library()
        options = lib.init(_abi.ContextOptions())
        options.backend = _choice("backend", backend, _abi.BACKENDS)
        options.num_threads = _int32("num_threads", num_threads)
        options.binding = _choice("binding", binding, _abi.BINDINGS)
        options.cuda_device = _int32("cuda_device", cuda_device)
        if not isinstance(max_workspace_bytes, int) or max_workspace_bytes < 0 or max_workspace_bytes >= 2**64:
            raise ValueError(f"max_workspace_bytes must be an int in [0, 2^64), got {max_workspace_bytes!r}")
        options.max_workspace_bytes = max_workspace_bytes
        handle = C.c_void_p()
        lib.check(lib.cdll.sampleattn_context_create(C.byref(options), C.byref(handle)))
        self._lib = lib
        self._handle = handle
        self._in_use = 0
        self._closed = False
        self._condition = threading.Condition()
        info = self.info()
        self.backend = info["backend"]
        self.cuda_device = options.cuda_device if self.backend == "cuda" else None

    def info(self):
        """Everything sampleattn_context_info says, as a dict (strings decoded; fields a revision
        1.0 library lacks are None), plus the library's version and path."""
        lib = self._lib
        info = _abi.ContextInfo()
        lib.init(info, lib.context_info_size)
        with self._use() as handle:
            lib.check(lib.cdll.sampleattn_context_get_info(handle, C.byref(info)))
        has_1_1 = info.struct_size >= C.sizeof(_abi.ContextInfo)

        def text(value):
            return value.decode(errors="replace") if value is not None else ""

        backends = {v: k for k, v in _abi.BACKENDS.items()}
        bindings = {v: k for k, v in _abi.BINDINGS.items()}
        return {
            "backend": backends.get(info.backend, str(info.backend)),
            "num_threads": info.num_threads,
            "num_numa_nodes": info.num_numa_nodes,
            "isa": text(info.isa),
            "device_name": text(info.device_name),
            "note": text(info.note),
            "binding": bindings.get(info.binding, str(info.binding)) if has_1_1 else None,
            "cpu_model": text(info.cpu_model) if has_1_1 else None,
            "cpu_tables": text(info.cpu_tables) if has_1_1 else None,
            "backends": text(info.backends) if has_1_1 else None,
            "environment": text(info.environment) if has_1_1 else None,
            "version": lib.version(),
            "library": lib.path,
        }

    def close(self):
        """Destroys the context once the calls in flight on it return. Idempotent."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            while self._in_use:
                self._condition.wait()
            handle, self._handle = self._handle, None
        if handle:
            self._lib.cdll.sampleattn_context_destroy(handle)

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: attributes may be gone
            pass

    def __repr__(self):
        state = "closed" if self._closed else self.backend
        device = f" device {self.cuda_device}" if self.cuda_device is not None else ""
        return f"<sampleattn.Context {state}{device}>"

    class _Use:
        def __init__(self, context):
            self.context = context

        def __enter__(self):
            c = self.context
            with c._condition:
                if c._closed:
                    raise ValueError("sampleattn: the context is closed")
                c._in_use += 1
            return c._handle

        def __exit__(self, *exc):
            c = self.context
            with c._condition:
                c._in_use -= 1
                if c._in_use == 0:
                    c._condition.notify_all()

    def _use(self):
        return Context._Use(self)

    def _check_device(self, device):
        kind, index = device
        if self.backend == "cpu" and kind != "cpu":
            raise ValueError(f"sampleattn: a CPU context was given but the tensors are on {kind}:{index}")
        if self.backend == "cuda" and (kind != "cuda" or index != self.cuda_device):
            where = "the host" if kind == "cpu" else f"{kind}:{index}"
            raise ValueError(f"sampleattn: a context on cuda:{self.cuda_device} was given but the tensors are on "
                             f"{where}")


_default_contexts = {}
_default_lock = threading.Lock()


def default_context(device=("cpu", 0)):
    """The context attention() uses for tensors on `device` when none is given: one CPU context
    (default threads) for host memory, one CUDA context per device ordinal. Made on first use."""
    device = tuple(device)
    with _default_lock:
        context = _default_contexts.get(device)
        if context is None or context.closed:
            if device[0] == "cpu":
                context = Context(backend="cpu")
            else:
                context = Context(backend="cuda", cuda_device=device[1])
            _default_contexts[device] = context
        return context


@atexit.register
def _close_default_contexts():
    # The CPU context's workers are joined before the interpreter tears down.
    with _default_lock:
        contexts = list(_default_contexts.values())
        _default_contexts.clear()
    for context in contexts:
        context.close()


def sample_defaults():
    """The library's defaults of the sample parameters (sampleattn_sample_params_init)."""
    params = library().init(_abi.SampleParams())
    out = {name: getattr(params, name) for name in SAMPLE_PARAMETERS}
    out["scope"] = {v: k for k, v in _abi.SCOPES.items()}.get(params.scope, params.scope)
    out["window_mass_counts"] = bool(params.window_mass_counts)
    for name in _FLOAT_SAMPLE_PARAMETERS:
        out[name] = float(str(np.float32(out[name])))  # the f32 the library holds, shortest repr
    return out


# ---------------------------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------------------------
def _choice(name, value, table):
    if value not in table:
        raise ValueError(f"{name} must be one of {', '.join(repr(k) for k in table)}, got {value!r}")
    return table[value]


def _int32(name, value, low=-(2**31)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= _INT32_MAX:
        raise ValueError(f"{name} must be in [{low}, 2^31), got {value}")
    return int(value)


def _int64(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not -(2**63) <= int(value) < 2**63:
        raise ValueError(f"{name} must be within int64, got {value}")
    return int(value)


def _per_head_floats(name, values):
    """None, or the values as a contiguous float32 1-D host array (the library reads one per query
    head; attention checks the count)."""
    if values is None:
        return None
    if _is_torch(values):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"sampleattn: {name} must hold numbers, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"sampleattn: {name} must be 1-D (one value per query head), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def alibi_slopes(num_heads):
    """The standard ALiBi slopes of `num_heads` heads (Press et al.; BLOOM's build_alibi_tensor):
    2^(-8 (h + 1) / n) for n a power of two; otherwise those of the closest power of two below, m,
    followed by every other slope of 2m (2^(-4 (2i + 1) / m), i = 0 .. n - m - 1). float32."""
    n = _int32("num_heads", num_heads, low=1)
    m = 1 << (n.bit_length() - 1)
    slopes = [2.0 ** (-8.0 * (h + 1) / m) for h in range(m)]
    slopes += [2.0 ** (-4.0 * (2 * i + 1) / m) for i in range(n - m)]
    return np.array(slopes, dtype=np.float32)


def _float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _bfloat16_dtype():
    """numpy's bfloat16 from ml_dtypes, or None when ml_dtypes is not importable."""
    global _bf16
    if _bf16 is False:
        try:
            import ml_dtypes
            _bf16 = np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            _bf16 = None
    return _bf16


_bf16 = False


def dtype_name(dtype):
    """"float32", "float16" or "bfloat16" for a numpy/torch dtype or such a string; None else."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        text = dtype
    elif type(dtype).__module__.startswith("torch"):
        text = str(dtype).replace("torch.", "")
    else:
        try:
            text = np.dtype(dtype).name
        except TypeError:
            return None
    text = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}.get(
        text, text)
    return text if text in _abi.DTYPES else None


def _numpy_dtype(name):
    if name == "bfloat16":
        bf16 = _bfloat16_dtype()
        if bf16 is None:
            raise TypeError("sampleattn: a bfloat16 numpy array needs ml_dtypes (not importable); pass "
                            "bfloat16 tensors through DLPack (e.g. torch), or out= of another dtype")
        return bf16
    return np.dtype(name)


def _is_torch(obj):
    return type(obj).__module__.split(".")[0] == "torch"


# ---------------------------------------------------------------------------------------------
# Tensor views
# ---------------------------------------------------------------------------------------------
class _View:
    """A tensor as the library sees it: a pointer, a dtype name, shape and strides in elements,
    its device, and the objects that keep its memory alive."""

    __slots__ = ("ptr", "dtype", "shape", "strides", "device", "keep", "framework")

    def __init__(self, ptr, dtype, shape, strides, device, keep, framework):
        self.ptr, self.dtype, self.shape, self.strides = ptr, dtype, tuple(shape), tuple(strides)
        self.device, self.keep, self.framework = device, keep, framework

    def library_strides(self):
        """(token_stride, head_stride) for a [token, head, dim] view. The stride of an extent of
        1 (or 0) is never used, and numpy may report anything there (0 after a broadcast): give
        the library one that passes its layout checks."""
        (tokens, heads, dim), (ts, hs, _) = self.shape, self.strides
        if tokens == 0 or heads == 0 or dim == 0:  # nothing is read; numpy may say strides 0
            return max(heads * dim, 1), max(dim, 1)
        if heads <= 1:
            hs = max(dim, 1)
        if tokens <= 1:
            ts = max(heads * hs, dim, 1)
        return ts, hs


def _layout_ok(shape, strides):
    """The library reads rows of the last dim contiguously, with positive outer strides."""
    if 0 in shape:
        return True
    if shape and shape[-1] > 1 and strides[-1] != 1:
        return False
    return all(s >= 1 for n, s in zip(shape[:-1], strides[:-1]) if n > 1)


def _numpy_view(name, arr, want_ndim, writable):
    global copies_made
    if arr.ndim != want_ndim:
        raise ValueError(f"sampleattn: {name} must have {want_ndim} dims, got shape {arr.shape}")
    dtype = dtype_name(arr.dtype) if arr.dtype.name in ("float32", "float16", "bfloat16") else None
    item = arr.itemsize
    in_elements = all(s % item == 0 for s in arr.strides)
    strides = tuple(s // item for s in arr.strides) if in_elements else None
    fits = dtype is not None and in_elements and _layout_ok(arr.shape, strides)
    if writable:
        if not fits:
            raise ValueError(f"sampleattn: {name} must be float32, float16 or bfloat16 with its last dim "
                             f"contiguous and positive strides (got {arr.dtype}, strides {arr.strides} bytes)")
        if not arr.flags.writeable:
            raise ValueError(f"sampleattn: {name} is read-only")
    elif not fits:
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"sampleattn: {name} has dtype {arr.dtype}; expected float32, float16 or bfloat16")
        arr = np.ascontiguousarray(arr, dtype=arr.dtype if dtype is not None else np.float32)
        dtype = dtype_name(arr.dtype)
        strides = tuple(s // arr.itemsize for s in arr.strides)
        copies_made += 1
    return _View(arr.ctypes.data, dtype, arr.shape, strides, ("cpu", 0), arr, "numpy")


def _dlpack_view(name, obj, want_ndim, writable, stream):
    global copies_made
    t = _dlpack.DLPackTensor(obj, stream=stream)
    framework = "torch" if _is_torch(obj) else "dlpack"
    if len(t.shape) != want_ndim:
        raise ValueError(f"sampleattn: {name} must have {want_ndim} dims, got shape {t.shape}")
    if t.dtype is not None and _layout_ok(t.shape, t.strides):
        return _View(t.ptr, t.dtype, t.shape, t.strides, t.device, (t.capsule, obj), framework)
    problem = (f"dtype {t.dtype_text}" if t.dtype is None else
               f"strides {t.strides} (the last dim must be contiguous, the others positive)")
    if writable:
        raise ValueError(f"sampleattn: {name} cannot be written in place: {problem}")
    if t.device[0] != "cpu":
        raise TypeError(f"sampleattn: {name} on {t.device[0]}:{t.device[1]} has {problem}; convert it to float16 or "
                        "bfloat16 with a contiguous last dim first (device tensors are not copied here)")
    if framework == "torch":
        copy = obj.contiguous() if t.dtype is not None else obj.float().contiguous()
        copies_made += 1
        return _dlpack_view(name, copy, want_ndim, writable, None)
    try:
        arr = np.from_dlpack(obj)
    except (AttributeError, TypeError, RuntimeError, BufferError) as e:
        raise TypeError(f"sampleattn: {name} has {problem} and numpy cannot import it to copy it ({e})") from None
    return _numpy_view(name, arr, want_ndim, writable)


def _device_of(obj):
    if isinstance(obj, np.ndarray) or not hasattr(obj, "__dlpack__"):
        return ("cpu", 0)
    if hasattr(obj, "__dlpack_device__"):
        return _dlpack.device_of(obj)
    return ("cpu", 0)


def _prepare(obj):
    """An input as an ndarray or a DLPack producer (a torch tensor that needs grad is detached:
    DLPack refuses those; no gradient flows through this call)."""
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "__dlpack__"):
        if _is_torch(obj) and getattr(obj, "requires_grad", False):
            return obj.detach()
        return obj
    return np.asarray(obj)


def _view(name, obj, want_ndim, writable=False, stream=None):
    if isinstance(obj, np.ndarray):
        return _numpy_view(name, obj, want_ndim, writable)
    return _dlpack_view(name, obj, want_ndim, writable, stream)


_ALL_DTYPES = dict(_abi.DTYPES, **_abi.KV_DTYPES)


def _kv_view(name, obj, kv_cache, stream):
    """k or v: as any input, or, with a kv_cache, a quantized numpy array (int8 or ml_dtypes'
    float8_e4m3fn) read in place: its codes mean nothing without their scales, so never copied."""
    if kv_cache is not None and isinstance(obj, np.ndarray) and obj.dtype.name in _abi.KV_DTYPES:
        if obj.ndim != 3:
            raise ValueError(f"sampleattn: {name} must have 3 dims, got shape {obj.shape}")
        strides = tuple(s // obj.itemsize for s in obj.strides)
        if not _layout_ok(obj.shape, strides):
            raise ValueError(f"sampleattn: quantized {name} must have its last dim contiguous and positive strides "
                             f"(got strides {obj.strides} bytes); it is not copied")
        return _View(obj.ctypes.data, obj.dtype.name, obj.shape, strides, ("cpu", 0), obj, "numpy")
    return _view(name, obj, 3, stream=stream)


def kv_cache(**fields):
    """A sampleattn_kv_cache (ABI 1.4) with the library's defaults (packed, no scales), then the
    given fields: host arrays for block_table / seqused_k (int32) and k_scale / v_scale (float32,
    the CPU backend's: CUDA reads device scales, set those pointers yourself) are converted to
    pointers and kept alive by the returned struct; ints for the rest, e.g.
    kv_cache(block_table=table, block_table_stride=4, page_size=16, num_pages=9,
    k_page_stride=16 * heads * dim, v_page_stride=16 * heads * dim)."""
    cache = library().init(_abi.KvCache())
    keep = []
    arrays = {"block_table": np.int32, "seqused_k": np.int32, "k_scale": np.float32, "v_scale": np.float32}
    for name, value in fields.items():
        if name not in dict(_abi.KvCache._fields_) or name == "struct_size":
            raise TypeError(f"sampleattn: kv_cache has no field {name!r}")
        if name in arrays:
            if value is None:
                continue
            if _is_torch(value):
                value = value.detach().cpu().numpy()
            arr = np.ascontiguousarray(value, dtype=arrays[name])
            keep.append(arr)
            ctype = C.c_int32 if arrays[name] is np.int32 else C.c_float
            setattr(cache, name, arr.ctypes.data_as(C.POINTER(ctype)))
        elif name in ("page_size", "num_pages"):
            setattr(cache, name, _int32(name, value))
        else:
            setattr(cache, name, _int64(name, value))
    cache._keep = keep
    return cache


def _cu_seqlens(name, value):
    if value is None:
        return None
    if _is_torch(value):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"sampleattn: {name} must be 1-D with batch + 1 >= 2 offsets, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"sampleattn: {name} must hold integers, got {arr.dtype}")
    if arr.min() < 0 or arr.max() > _INT32_MAX:
        raise ValueError(f"sampleattn: {name} offsets must be in [0, 2^31)")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _allocate(framework, like, shape, dtype, device):
    """A new tensor for q's framework: torch for torch inputs, else numpy (host memory only)."""
    if framework == "torch":
        import torch
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    if device[0] != "cpu":
        raise ValueError("sampleattn: device tensors from a framework other than torch need out= (and "
                         "return_lse needs torch): this package allocates device memory through torch only")
    return np.empty(shape, dtype=_numpy_dtype(dtype))


def _pointer_of(obj):
    if isinstance(obj, np.ndarray):
        return obj.ctypes.data
    return obj.data_ptr()


def _current_stream(framework, device):
    if device[0] != "cuda" or framework != "torch":
        return 0
    import torch
    return torch.cuda.current_stream(device[1]).cuda_stream


# ---------------------------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------------------------
def attention(q, k, v, *, causal=True, scale=None, method="dense", precision="auto",
              alpha=None, r_row=None, r_w=None, min_window=None, sample_block=None, min_stripes=None,
              max_stripes=None, sink_tokens=None, dense_below=None, scope=None, window_mass_counts=None,
              max_density=None, r_val=None, min_kept=None, max_lost=None, val_rows=None, look=None,
              window_left=None, softcap=None, alibi_slopes=None, sinks=None, kv_cache=None,
              cu_seqlens_q=None, cu_seqlens_k=None, out=None, out_dtype=None,
              return_lse=False, return_stats=False, context=None, stream=None):
    """Prefill attention, dense or SampleAttention.

    q: [tokens_q, q_heads, head_dim]; k: [tokens_k, kv_heads, head_dim]; v: [tokens_k, kv_heads,
    head_dim_v] (q_heads a multiple of kv_heads: grouped-query; head_dim_v, v's own head size, may
    differ from head_dim, e.g. 128 with head_dim 192). numpy arrays, or any DLPack tensor (torch,
    CPU or CUDA) read in place.
    float32, float16 or bfloat16 (numpy bfloat16 through ml_dtypes) with the last dim contiguous
    are read zero-copy with any token and head strides; host arrays of other dtypes or layouts are
    copied to float32 or made contiguous first. The CUDA backend reads float16 or bfloat16.

    causal: the mask. When a sequence has fewer queries than keys, its queries are the LAST ones
    (bottom-right aligned, chunked prefill): query i sees keys 0 .. k_len - q_len + i.
    scale: softmax scale, None = 1/sqrt(head_dim). method: "dense" or "sample".
    precision: "auto" (default: bf16 inputs on bf16 products where those are the CPU's fastest,
        AMX or AMD's vdpbf16ps, else f32), "f32", or "bf16" (on CPUs with avx512_bf16).
    alpha, r_row, r_w, min_window, sample_block, min_stripes, max_stripes, sink_tokens,
    dense_below, scope ("per_head" | "per_kv_group"), window_mass_counts, max_density, r_val,
    min_kept, max_lost, val_rows, look (ABI 1.6: the look at every row, nats; both backends):
    SampleAttention's parameters; None = the library's default (sample_defaults()).
    The model's attention variants (ABI 1.3; the model's semantics, whatever the method; natural-log
    units, with p the query's and j the key's position in the sequence):
    window_left: the model's sliding window: the query at p sees keys p - window_left .. p (causal
    only); None = no window. softcap: logit softcap (Gemma 2): a score s = scale * q.k becomes
    softcap * tanh(s / softcap); None = none. alibi_slopes: q_heads slopes (host array-like), head h
    adding -slope[h] * |p - j| to each score after the cap (alibi_slopes(q_heads) gives the standard
    ones); None = none. sinks: q_heads learned sink logits (gpt-oss; -inf = none for that head), each
    adding exp(sink[h]) to the softmax denominator of every row of head h, the lse included; None =
    none.
    cu_seqlens_q, cu_seqlens_k: host int offsets of a varlen batch (batch + 1 entries, from 0);
    one alone is used for both.
    out: where to write O, [tokens_q, q_heads, head_dim_v], any strides with a contiguous last dim.
    out_dtype: O's dtype when out is None (default: q's).
    return_lse / return_stats: also return the log-sum-exp, float32 [tokens_q, q_heads], and/or the
    statistics dict; the result is then a tuple (out, lse, stats) with the asked ones.
    kv_cache: K and V as a KV cache keeps them (ABI 1.4): a sampleattn._abi.KvCache filled by
    sampleattn.kv_cache() (or library().init), passed to the library as is; None = packed K/V. Paged
    (block_table set): k and v are the page pools flattened to [num_pages * page_size, kv_heads,
    dim] with k_page_stride / v_page_stride set, and each sequence's key count comes from
    cu_seqlens_k (or seqused_k), not from k's tokens. Quantized: k and/or v may be numpy int8 or
    ml_dtypes float8_e4m3fn arrays (read in place, never copied), with k_scale / v_scale set. The
    arrays the struct points at (block_table, seqused_k, scales) must outlive the call.
    context: a Context; None = a default one for the tensors' device.
    stream: CUDA stream (an int cudaStream_t) to run on; None = torch's current stream for torch
    tensors, else the default stream.
    """
    q, k, v = _prepare(q), _prepare(k), _prepare(v)
    device = _device_of(q)
    for name, obj in (("k", k), ("v", v)) + ((("out", out),) if out is not None else ()):
        other = _device_of(obj)
        if other != device:
            raise ValueError(f"sampleattn: q is on {device[0]}:{device[1]} but {name} is on {other[0]}:{other[1]}")
    if context is None:
        context = default_context(device)
    else:
        context._check_device(device)
    given = {name: value for name, value in (
        ("alpha", alpha), ("r_row", r_row), ("r_w", r_w), ("min_window", min_window),
        ("sample_block", sample_block), ("min_stripes", min_stripes), ("max_stripes", max_stripes),
        ("sink_tokens", sink_tokens), ("dense_below", dense_below), ("scope", scope),
        ("window_mass_counts", window_mass_counts), ("max_density", max_density), ("r_val", r_val),
        ("min_kept", min_kept), ("max_lost", max_lost), ("val_rows", val_rows), ("look", look))
        if value is not None}
    call = Call(context, causal=causal, scale=scale, method=method, precision=precision, sample=given,
                window_left=window_left, softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
                kv_cache=kv_cache)
    paged = kv_cache is not None and bool(kv_cache.block_table)

    framework = "torch" if _is_torch(q) else ("numpy" if isinstance(q, np.ndarray) else "dlpack")
    if stream is None:
        stream = _current_stream(framework, device)
    dlpack_stream = (stream or 1) if device[0] == "cuda" else None
    qv = _view("q", q, 3, stream=dlpack_stream)
    kv = _kv_view("k", k, kv_cache, dlpack_stream)
    vv = _kv_view("v", v, kv_cache, dlpack_stream)

    tq, hq, d = qv.shape
    tk, hkv, dk = kv.shape
    dv = vv.shape[2]
    if vv.shape[:2] != kv.shape[:2]:
        raise ValueError(f"sampleattn: k {kv.shape} and v {vv.shape} must have the same tokens and heads")
    if dk != d:
        raise ValueError(f"sampleattn: q has head_dim {d} but k has {dk}")
    for name, value in (("q tokens", tq), ("k tokens", tk), ("q heads", hq), ("kv heads", hkv), ("head_dim", d),
                        ("head_dim_v", dv)):
        if value > _INT32_MAX:
            raise ValueError(f"sampleattn: {name} ({value}) must be below 2^31")

    cu_q = _cu_seqlens("cu_seqlens_q", cu_seqlens_q)
    cu_k = _cu_seqlens("cu_seqlens_k", cu_seqlens_k)
    if cu_q is None and cu_k is not None:
        cu_q = cu_k
    elif cu_k is None and cu_q is not None:
        cu_k = cu_q
    if cu_q is not None:
        if cu_q.shape != cu_k.shape:
            raise ValueError(f"sampleattn: cu_seqlens_q has {cu_q.shape[0]} offsets but cu_seqlens_k has "
                             f"{cu_k.shape[0]}")
        if cu_q[-1] != tq or (cu_k[-1] != tk and not paged):
            raise ValueError(f"sampleattn: the last offsets (q {cu_q[-1]}, k {cu_k[-1]}) must equal the token "
                             f"counts of q ({tq}) and k ({tk})")

    if out is not None:
        if not isinstance(out, np.ndarray) and not hasattr(out, "__dlpack__"):
            raise TypeError(f"sampleattn: out must be a numpy array or a DLPack tensor, got {type(out).__name__}")
        ov = _view("out", _prepare(out), 3, writable=True, stream=dlpack_stream)
        if ov.shape != (tq, hq, dv):
            raise ValueError(f"sampleattn: out must have shape {(tq, hq, dv)}, got {ov.shape}")
        result = out
    else:
        name = dtype_name(out_dtype) if out_dtype is not None else qv.dtype
        if name is None:
            raise ValueError(f"sampleattn: out_dtype must be float32, float16 or bfloat16, got {out_dtype!r}")
        result = _allocate(qv.framework, q, (tq, hq, dv), name, device)
        ov = _view("out", result, 3, writable=True, stream=dlpack_stream)
    lse = None
    if return_lse:
        lse = _allocate(qv.framework, q, (tq, hq), "float32", device)

    stats = call.run(qv, kv, vv, ov, cu_seqlens=(cu_q, cu_k) if cu_q is not None else None,
                     lse=_pointer_of(lse) if lse is not None else None, stream=stream,
                     want_stats=return_stats)
    # The views (and the capsules in them) lived until here: the library is done with the memory.
    del qv, kv, vv, ov

    results = [result]
    if return_lse:
        results.append(lse)
    if return_stats:
        results.append(stats)
    return results[0] if len(results) == 1 else tuple(results)


class Call:
    """The parameters of attention calls that differ only in their tensors: built and checked
    once, run on one tensor set after another (the torch binding runs a batch this way)."""

    def __init__(self, context, *, causal=True, scale=None, method="dense", precision="auto", sample=None,
                 window_left=None, softcap=None, alibi_slopes=None, sinks=None, kv_cache=None):
        self.context = context
        lib = self.lib = context._lib
        p = self.params = lib.init(_abi.Params())
        if scale is not None:
            scale = _float("scale", scale)
            if scale == 0:
                raise ValueError("sampleattn: scale must be > 0 (None = 1/sqrt(head_dim))")
            p.softmax_scale = scale
        p.causal = 1 if causal else 0
        p.method = _choice("method", method, _abi.METHODS)
        p.precision = _choice("precision", precision, _abi.PRECISIONS)
        self.sampled = method == "sample"
        unknown = set(sample or ()) - set(SAMPLE_PARAMETERS)
        if unknown:
            raise TypeError(f"sampleattn: unknown sample parameters {sorted(unknown)}; "
                            f"known: {', '.join(SAMPLE_PARAMETERS)}")
        self.sample = _sample_params(lib, sample) if sample else None
        if self.sample is not None:
            p.sample = C.pointer(self.sample)
        # The model's variants (ABI 1.3): the library checks their values; the per-head arrays'
        # lengths are checked here, against each run's query heads (the library reads q_heads
        # floats from each pointer).
        if window_left is not None:
            p.window_left = _int64("window_left", window_left)
        if softcap is not None:
            p.softcap = _float("softcap", softcap)
        self.alibi_slopes = _per_head_floats("alibi_slopes", alibi_slopes)
        self.sinks = _per_head_floats("sinks", sinks)
        if self.alibi_slopes is not None:
            p.alibi_slopes = self.alibi_slopes.ctypes.data_as(C.POINTER(C.c_float))
        if self.sinks is not None:
            p.sinks = self.sinks.ctypes.data_as(C.POINTER(C.c_float))
        # ABI 1.4: the caller's KV cache struct, kept alive with the call.
        if kv_cache is not None:
            if not isinstance(kv_cache, _abi.KvCache):
                raise TypeError(f"sampleattn: kv_cache must be a sampleattn._abi.KvCache (see sampleattn.kv_cache), "
                                f"got {type(kv_cache).__name__}")
            self.kv_cache = kv_cache
            p.kv_cache = C.pointer(kv_cache)

    def run(self, qv, kv, vv, ov, *, cu_seqlens=None, lse=None, stream=None, want_stats=False):
        """One sampleattn_forward on [token, head, dim] views; the statistics dict or None.
        cu_seqlens: None or (cu_q, cu_k) int32 numpy arrays; lse: a float32 pointer or None."""
        lib, p = self.lib, self.params
        for field, view in (("q", qv), ("k", kv), ("v", vv)):
            ts, hs = view.library_strides()
            setattr(p, field, _abi.Tensor(view.ptr, _ALL_DTYPES[view.dtype], ts, hs))
        ts, hs = ov.library_strides()
        p.o = _abi.Output(ov.ptr, _abi.DTYPES[ov.dtype], ts, hs)
        tq, hq, d = qv.shape
        tk, hkv, _ = kv.shape
        dv = vv.shape[2]
        for name, values in (("alibi_slopes", self.alibi_slopes), ("sinks", self.sinks)):
            if values is not None and values.shape[0] != hq:
                raise ValueError(f"sampleattn: {name} must have one value per query head ({hq}), got {values.shape[0]}")
        p.head_dim, p.num_q_heads, p.num_kv_heads = d, hq, hkv
        p.head_dim_v = dv if dv != d else 0  # 0: head_dim
        if cu_seqlens is not None:
            cu_q, cu_k = cu_seqlens
            p.batch = cu_q.shape[0] - 1
            p.cu_seqlens_q = cu_q.ctypes.data_as(C.POINTER(C.c_int32))
            p.cu_seqlens_k = cu_k.ctypes.data_as(C.POINTER(C.c_int32))
            p.seqlen_q = p.seqlen_k = 0
        else:
            p.batch = 1
            p.cu_seqlens_q = p.cu_seqlens_k = None
            p.seqlen_q, p.seqlen_k = tq, tk
        p.lse = C.cast(C.c_void_p(lse), C.POINTER(C.c_float)) if lse else None
        p.stream = stream or None
        stats = buffers = None
        if want_stats:
            stats, buffers = _stats_buffers(lib, p.batch, hq, tk, tq, self.sampled)
        with self.context._use() as handle:
            lib.check(lib.cdll.sampleattn_forward(handle, C.byref(p), C.byref(stats) if stats is not None else None))
        return _stats_dict(stats, buffers, p.batch, hq) if want_stats else None


def _sample_params(lib, given):
    params = lib.init(_abi.SampleParams())
    for name, value in given.items():
        if name == "scope":
            params.scope = _choice("scope", value, _abi.SCOPES)
        elif name == "window_mass_counts":
            params.window_mass_counts = 1 if value else 0
        elif name in _FLOAT_SAMPLE_PARAMETERS:
            params.__setattr__(name, _float(name, value))
        else:
            params.__setattr__(name, _int32(name, value))
    return params


def _stats_buffers(lib, batch, hq, tk, tq, sampled):
    stats = lib.init(_abi.Stats())
    heads = batch * hq
    head_stats = (_abi.HeadStats * heads)()
    offsets = np.zeros(heads + 1, dtype=np.int32)
    # A head keeps at most k_len stripes of its sequence, so q_heads * total keys always suffice;
    # likewise q_heads * total queries for the look's dense rows.
    capacity = min(hq * tk, _INT32_MAX) if sampled else 0
    stripes = np.zeros(max(capacity, 1), dtype=np.int32)
    row_offsets = np.zeros(heads + 1, dtype=np.int32)
    row_capacity = min(hq * tq, _INT32_MAX) if sampled else 0
    rows = np.zeros(max(row_capacity, 1), dtype=np.int32)
    stats.head_stats = C.cast(head_stats, C.POINTER(_abi.HeadStats))
    stats.head_stats_size = C.sizeof(_abi.HeadStats)
    stats.stripe_offsets = offsets.ctypes.data_as(C.POINTER(C.c_int32))
    stats.stripes = stripes.ctypes.data_as(C.POINTER(C.c_int32))
    stats.stripe_capacity = capacity
    stats.dense_row_offsets = row_offsets.ctypes.data_as(C.POINTER(C.c_int32))
    stats.dense_row_indices = rows.ctypes.data_as(C.POINTER(C.c_int32))
    stats.dense_row_capacity = row_capacity
    return stats, (head_stats, offsets, stripes, row_offsets, rows)


def _stats_dict(stats, buffers, batch, hq):
    head_stats, offsets, stripes, row_offsets, rows = buffers
    written = stats.stripes_required <= stats.stripe_capacity
    stripes = stripes[:stats.stripes_required].copy() if written else None
    rows_written = stats.num_dense_rows <= stats.dense_row_capacity
    rows = rows[:stats.num_dense_rows].copy() if rows_written else None
    heads = []
    for i in range(batch * hq):
        h = head_stats[i]
        heads.append({
            "sequence": i // hq,
            "head": i % hq,
            "window": h.window,
            "num_stripes": h.num_stripes,
            "dense": bool(h.dense),
            "density": float(h.density),
            "cra_min": float(h.cra_min),
            "cra_mean": float(h.cra_mean),
            # The validation rows (rows that did not choose the stripes): the honest kept mass.
            "val_cra_min": float(h.val_cra_min),
            "val_cra_p1": float(h.val_cra_p1),
            "val_cra_p5": float(h.val_cra_p5),
            "val_cra_mean": float(h.val_cra_mean),
            "val_lost_rms": float(h.val_lost_rms),
            "decision": _abi.DECISIONS.get(h.decision, str(h.decision)),
            "alpha_stripes": h.alpha_stripes,
            "dense_rows": h.dense_rows,  # how many rows the look sent dense
            "dense_row_indices": rows[row_offsets[i]:row_offsets[i + 1]] if rows_written else None,
            "stripes": stripes[offsets[i]:offsets[i + 1]] if written else None,
        })
    return {
        "time_total_s": stats.time_total_s,
        "time_sampling_s": stats.time_sampling_s,
        "time_selection_s": stats.time_selection_s,
        "time_attention_s": stats.time_attention_s,
        "density": stats.density,
        "stripes_mean": stats.stripes_mean,
        "cra_min": float(stats.cra_min),
        "num_dense_heads": stats.num_dense_heads,
        "num_heads_total": stats.num_heads_total,
        "val_cra_min": float(stats.val_cra_min),
        "val_cra_p5": float(stats.val_cra_p5),
        "val_cra_mean": float(stats.val_cra_mean),
        "num_widened_heads": stats.num_widened_heads,
        "num_dense_rows": stats.num_dense_rows,
        "isa": stats.isa.decode() if stats.isa else "",
        "precision": stats.precision.decode() if stats.precision else "",
        "stripes_required": stats.stripes_required,
        "stripe_offsets": offsets if written else None,
        "stripes": stripes,
        "heads": heads,
    }
