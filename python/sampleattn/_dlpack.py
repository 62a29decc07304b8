"""Reading a DLPack capsule without copying (https://dmlc.github.io/dlpack/latest/).

The consumer side of the protocol, done with ctypes: `obj.__dlpack__()` returns a PyCapsule named
"dltensor" that points to a DLManagedTensor. We read its DLTensor and keep the capsule alive for
as long as the pointer is used. We never rename the capsule to "used_dltensor": the capsule's own
destructor then calls the producer's deleter when the capsule is collected, so the producer's
memory lives at least as long as our reference to the capsule (and the producer's object, which we
keep too).
"""
import ctypes as C


class DLDevice(C.Structure):
    _fields_ = [("device_type", C.c_int32), ("device_id", C.c_int32)]


class DLDataType(C.Structure):
    _fields_ = [("code", C.c_uint8), ("bits", C.c_uint8), ("lanes", C.c_uint16)]


class DLTensor(C.Structure):
    _fields_ = [
        ("data", C.c_void_p),
        ("device", DLDevice),
        ("ndim", C.c_int32),
        ("dtype", DLDataType),
        ("shape", C.POINTER(C.c_int64)),
        ("strides", C.POINTER(C.c_int64)),  # in elements; NULL = compact row-major
        ("byte_offset", C.c_uint64),
    ]


class DLManagedTensor(C.Structure):
    _fields_ = [
        ("dl_tensor", DLTensor),
        ("manager_ctx", C.c_void_p),
        ("deleter", C.c_void_p),
    ]


# DLDeviceType values we accept.
KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3  # pinned host memory: a CPU pointer
KDL_CUDA_MANAGED = 13  # managed memory: device-accessible, treated as CUDA
DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
                10: "rocm", 11: "rocm_host", 12: "ext_dev", 13: "cuda_managed", 14: "oneapi",
                15: "webgpu", 16: "hexagon", 17: "maia"}

# DLDataTypeCode values.
_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque", 4: "bfloat", 5: "complex", 6: "bool"}
_DTYPES = {(2, 32, 1): "float32", (2, 16, 1): "float16", (4, 16, 1): "bfloat16"}

_capsule_is_valid = C.pythonapi.PyCapsule_IsValid
_capsule_is_valid.restype = C.c_int
_capsule_is_valid.argtypes = [C.py_object, C.c_char_p]
_capsule_get_pointer = C.pythonapi.PyCapsule_GetPointer
_capsule_get_pointer.restype = C.c_void_p
_capsule_get_pointer.argtypes = [C.py_object, C.c_char_p]


def device_of(obj):
    """("cpu" | "cuda", device id) of a DLPack producer, from __dlpack_device__ (no export)."""
    device_type, device_id = obj.__dlpack_device__()
    return _device(int(device_type), int(device_id))


def _device(device_type, device_id):
    if device_type in (KDL_CPU, KDL_CUDA_HOST):
        return ("cpu", 0)
    if device_type in (KDL_CUDA, KDL_CUDA_MANAGED):
        return ("cuda", device_id)
    name = DEVICE_NAMES.get(device_type, f"device type {device_type}")
    raise TypeError(f"sampleattn: DLPack tensors on {name} are not supported (CPU and CUDA only)")


class DLPackTensor:
    """What one exported capsule describes. `capsule` and `owner` keep the memory alive."""

    __slots__ = ("capsule", "owner", "ptr", "device", "dtype", "dtype_text", "shape", "strides")

    def __init__(self, obj, stream=None):
        # The stream argument tells a CUDA producer which stream we will read on, so that it can
        # order its pending work before ours (1 = the legacy default stream; 0 is not allowed).
        if stream is None:
            capsule = obj.__dlpack__()
        else:
            try:
                capsule = obj.__dlpack__(stream=stream)
            except TypeError:  # a producer without the stream keyword
                capsule = obj.__dlpack__()
        if not _capsule_is_valid(capsule, b"dltensor"):
            raise TypeError(f"sampleattn: {type(obj).__name__}.__dlpack__() did not return a 'dltensor' capsule "
                            "(already consumed, or an unknown protocol version)")
        managed = DLManagedTensor.from_address(_capsule_get_pointer(capsule, b"dltensor"))
        t = managed.dl_tensor
        self.capsule = capsule
        self.owner = obj
        self.device = _device(t.device.device_type, t.device.device_id)
        key = (t.dtype.code, t.dtype.bits, t.dtype.lanes)
        self.dtype = _DTYPES.get(key)
        lanes = f"x{t.dtype.lanes}" if t.dtype.lanes != 1 else ""
        self.dtype_text = self.dtype or f"{_CODE_NAMES.get(t.dtype.code, 'code %d' % t.dtype.code)}{t.dtype.bits}{lanes}"
        ndim = t.ndim
        self.shape = tuple(t.shape[i] for i in range(ndim))
        if t.strides:
            self.strides = tuple(t.strides[i] for i in range(ndim))
        else:
            strides, step = [], 1
            for extent in reversed(self.shape):
                strides.append(step)
                step *= extent
            self.strides = tuple(reversed(strides))
        self.ptr = (t.data or 0) + t.byte_offset
