"""ctypes mirrors of include/sampleattn/sampleattn.h (ABI 1, layout revision 1.6).

Written by hand from the header. tests/test_abi.py compiles a C program against the header and
checks every struct's size and every field's offset, and every enum value, against these.
Enums are C `int`s (4 bytes with GCC and Clang on the platforms the library supports).
"""
import ctypes as C

ABI_VERSION = 1
ABI_REVISION = 6

STATUSES = {
    "SAMPLEATTN_SUCCESS": 0,
    "SAMPLEATTN_INVALID_ARGUMENT": 1,
    "SAMPLEATTN_NULL_POINTER": 2,
    "SAMPLEATTN_INVALID_SHAPE": 3,
    "SAMPLEATTN_UNSUPPORTED_HEAD_DIM": 4,
    "SAMPLEATTN_UNSUPPORTED_DTYPE": 5,
    "SAMPLEATTN_UNSUPPORTED_BACKEND": 6,
    "SAMPLEATTN_OUT_OF_MEMORY": 7,
    "SAMPLEATTN_DEVICE_ERROR": 8,
    "SAMPLEATTN_INTERNAL_ERROR": 9,
    "SAMPLEATTN_UNSUPPORTED_VERSION": 10,
}

# Every constant of the header, by its C name (the layout test compares them with C).
CONSTANTS = dict(STATUSES, **{
    "SAMPLEATTN_BACKEND_AUTO": 0,
    "SAMPLEATTN_BACKEND_CPU": 1,
    "SAMPLEATTN_BACKEND_CUDA": 2,
    "SAMPLEATTN_BIND_CORES": 0,
    "SAMPLEATTN_BIND_NONE": 1,
    "SAMPLEATTN_DTYPE_F32": 0,
    "SAMPLEATTN_DTYPE_F16": 1,
    "SAMPLEATTN_DTYPE_BF16": 2,
    "SAMPLEATTN_DTYPE_I8": 3,
    "SAMPLEATTN_DTYPE_FP8_E4M3": 4,
    "SAMPLEATTN_METHOD_DENSE": 0,
    "SAMPLEATTN_METHOD_SAMPLE": 1,
    "SAMPLEATTN_PRECISION_F32": 0,
    "SAMPLEATTN_PRECISION_BF16": 1,
    "SAMPLEATTN_PRECISION_AUTO": 2,
    "SAMPLEATTN_STRIPES_PER_HEAD": 0,
    "SAMPLEATTN_STRIPES_PER_KV_GROUP": 1,
    "SAMPLEATTN_DECISION_SPARSE": 0,
    "SAMPLEATTN_DECISION_SPARSE_WIDENED": 1,
    "SAMPLEATTN_DECISION_DENSE_METHOD": 2,
    "SAMPLEATTN_DECISION_DENSE_SHORT": 3,
    "SAMPLEATTN_DECISION_DENSE_COST": 4,
    "SAMPLEATTN_DECISION_DENSE_VALIDATION": 5,
    "SAMPLEATTN_DECISION_DENSE_WINDOW": 6,
    "SAMPLEATTN_DECISION_DENSE_LOOK": 7,
    "SAMPLEATTN_ABI_VERSION": ABI_VERSION,
    "SAMPLEATTN_ABI_REVISION": ABI_REVISION,
})

# Python names of the enums' values.
BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
BINDINGS = {"cores": 0, "none": 1}
DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
# ABI 1.4: quantized K and V only (a KV cache; the scales are in KvCache). Not in DTYPES, which
# names what Q, K, V and O may all be.
KV_DTYPES = {"int8": 3, "float8_e4m3fn": 4}
METHODS = {"dense": 0, "sample": 1}
PRECISIONS = {"f32": 0, "bf16": 1, "auto": 2}
SCOPES = {"per_head": 0, "per_kv_group": 1}

_enum = C.c_int

# ABI 1.4: a host thread pool's parallel-for (sampleattn_task_fn, sampleattn_parallel_for_fn).
TaskFn = C.CFUNCTYPE(None, C.c_void_p, C.c_int64)
ParallelForFn = C.CFUNCTYPE(None, C.c_void_p, TaskFn, C.c_void_p, C.c_int64)


class ContextOptions(C.Structure):
    c_name = "sampleattn_context_options"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("backend", _enum),
        ("num_threads", C.c_int32),
        ("binding", _enum),
        ("cuda_device", C.c_int32),
        ("max_workspace_bytes", C.c_uint64),
        ("parallel_for", ParallelForFn),  # ABI 1.4: run on the host's threads
        ("host_pool", C.c_void_p),
    ]


class ContextInfo(C.Structure):
    c_name = "sampleattn_context_info"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("backend", _enum),
        ("num_threads", C.c_int32),
        ("num_numa_nodes", C.c_int32),
        ("isa", C.c_char_p),
        ("device_name", C.c_char_p),
        ("note", C.c_char_p),
        # ABI revision 1.1
        ("binding", _enum),
        ("cpu_model", C.c_char_p),
        ("cpu_tables", C.c_char_p),
        ("backends", C.c_char_p),
        ("environment", C.c_char_p),
    ]


# The first ABI 1 layout of sampleattn_context_info ends after `note`: a revision 1.0 library
# accepts that size only (the fields after it are then absent).
CONTEXT_INFO_1_0_SIZE = ContextInfo.note.offset + C.sizeof(C.c_char_p)


class Tensor(C.Structure):
    c_name = "sampleattn_tensor"
    _fields_ = [
        ("data", C.c_void_p),
        ("dtype", _enum),
        ("token_stride", C.c_int64),
        ("head_stride", C.c_int64),
    ]


class Output(C.Structure):
    c_name = "sampleattn_output"
    _fields_ = [
        ("data", C.c_void_p),
        ("dtype", _enum),
        ("token_stride", C.c_int64),
        ("head_stride", C.c_int64),
    ]


class KvCache(C.Structure):
    """ABI 1.4: paged and/or quantized K/V (Params.kv_cache). block_table NULL = packed."""
    c_name = "sampleattn_kv_cache"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("block_table", C.POINTER(C.c_int32)),
        ("block_table_stride", C.c_int64),
        ("page_size", C.c_int32),
        ("num_pages", C.c_int32),
        ("k_page_stride", C.c_int64),
        ("v_page_stride", C.c_int64),
        ("seqused_k", C.POINTER(C.c_int32)),
        ("k_scale", C.POINTER(C.c_float)),
        ("v_scale", C.POINTER(C.c_float)),
        ("scale_token_stride", C.c_int64),
        ("scale_head_stride", C.c_int64),
        ("scale_page_stride", C.c_int64),
    ]


class SampleParams(C.Structure):
    c_name = "sampleattn_sample_params"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("alpha", C.c_float),
        ("r_row", C.c_float),
        ("r_w", C.c_float),
        ("min_window", C.c_int32),
        ("sample_block", C.c_int32),
        ("min_stripes", C.c_int32),
        ("max_stripes", C.c_int32),
        ("sink_tokens", C.c_int32),
        ("dense_below", C.c_int32),
        ("scope", _enum),
        ("window_mass_counts", C.c_int32),
        ("max_density", C.c_float),
        ("r_val", C.c_float),  # ABI 1.2: validation
        ("min_kept", C.c_float),
        ("max_lost", C.c_float),
        ("val_rows", C.c_int32),
        ("look", C.c_float),  # ABI 1.6: the look at every row
    ]


class Params(C.Structure):
    c_name = "sampleattn_params"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("q", Tensor),
        ("k", Tensor),
        ("v", Tensor),
        ("o", Output),
        ("head_dim", C.c_int32),
        ("num_q_heads", C.c_int32),
        ("num_kv_heads", C.c_int32),
        ("batch", C.c_int32),
        ("cu_seqlens_q", C.POINTER(C.c_int32)),
        ("cu_seqlens_k", C.POINTER(C.c_int32)),
        ("seqlen_q", C.c_int64),
        ("seqlen_k", C.c_int64),
        ("softmax_scale", C.c_float),
        ("causal", C.c_int32),
        ("method", _enum),
        ("precision", _enum),
        ("sample", C.POINTER(SampleParams)),
        ("lse", C.POINTER(C.c_float)),
        ("stream", C.c_void_p),
        ("head_dim_v", C.c_int32),  # ABI 1.3: the model's variants
        ("window_left", C.c_int64),
        ("softcap", C.c_float),
        ("alibi_slopes", C.POINTER(C.c_float)),
        ("sinks", C.POINTER(C.c_float)),
        ("kv_cache", C.POINTER(KvCache)),  # ABI 1.4: paged and/or quantized K/V
    ]


class HeadStats(C.Structure):
    c_name = "sampleattn_head_stats"
    _fields_ = [
        ("window", C.c_int32),
        ("num_stripes", C.c_int32),
        ("dense", C.c_int32),
        ("density", C.c_float),
        ("cra_min", C.c_float),
        ("cra_mean", C.c_float),
        ("val_cra_min", C.c_float),  # ABI 1.2: validation rows, the decision
        ("val_cra_p1", C.c_float),
        ("val_cra_p5", C.c_float),
        ("val_cra_mean", C.c_float),
        ("val_lost_rms", C.c_float),
        ("decision", C.c_int32),
        ("alpha_stripes", C.c_int32),
        ("dense_rows", C.c_int32),  # ABI 1.6: rows the look sent dense
    ]

# sampleattn_head_decision (the SAMPLEATTN_DECISION_* constants above)
DECISIONS = {0: "sparse", 1: "widened", 2: "dense:method", 3: "dense:short", 4: "dense:cost", 5: "dense:validation",
             6: "dense:window", 7: "dense:look"}


class Stats(C.Structure):
    c_name = "sampleattn_stats"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("time_total_s", C.c_double),
        ("time_sampling_s", C.c_double),
        ("time_selection_s", C.c_double),
        ("time_attention_s", C.c_double),
        ("density", C.c_double),
        ("stripes_mean", C.c_double),
        ("cra_min", C.c_float),
        ("num_dense_heads", C.c_int32),
        ("num_heads_total", C.c_int32),
        ("isa", C.c_char_p),
        ("head_stats", C.POINTER(HeadStats)),
        ("stripe_offsets", C.POINTER(C.c_int32)),
        ("stripes", C.POINTER(C.c_int32)),
        ("stripe_capacity", C.c_int64),
        ("stripes_required", C.c_int64),
        ("head_stats_size", C.c_uint32),  # ABI 1.1: the stride of the head_stats array
        ("val_cra_min", C.c_float),  # ABI 1.2
        ("val_cra_p5", C.c_float),
        ("val_cra_mean", C.c_float),
        ("num_widened_heads", C.c_int32),
        ("precision", C.c_char_p),  # ABI 1.5: the products that ran
        ("num_dense_rows", C.c_int64),  # ABI 1.6: rows the look sent dense, and which
        ("dense_row_offsets", C.POINTER(C.c_int32)),
        ("dense_row_indices", C.POINTER(C.c_int32)),
        ("dense_row_capacity", C.c_int64),
    ]


class PlanInfo(C.Structure):
    c_name = "sampleattn_plan_info"
    _fields_ = [
        ("struct_size", C.c_uint32),
        ("workspace_bytes", C.c_uint64),
        ("total_q_tokens", C.c_int64),
        ("total_k_tokens", C.c_int64),
        ("dense_flops", C.c_double),
    ]


# Every struct of the header; those with an *_init_sized function carry its name.
STRUCTS = [ContextOptions, ContextInfo, Tensor, Output, KvCache, SampleParams, Params, HeadStats, Stats, PlanInfo]
INIT_FUNCTIONS = {
    ContextOptions: "sampleattn_context_options_init_sized",
    ContextInfo: "sampleattn_context_info_init_sized",
    SampleParams: "sampleattn_sample_params_init_sized",
    Params: "sampleattn_params_init_sized",
    Stats: "sampleattn_stats_init_sized",
    PlanInfo: "sampleattn_plan_info_init_sized",
    KvCache: "sampleattn_kv_cache_init_sized",
}
