"""DLPack inputs and outputs on the CPU: numpy as a DLPack producer, and a producer made here with
ctypes (any dtype code, strides and byte offset) that stands in for torch where torch is absent:
bfloat16 tensors, which numpy cannot hold without ml_dtypes, come in and go out this way."""
import ctypes as C

import numpy as np
import pytest

import sampleattn
from sampleattn import _core, _dlpack

import reference as R

_capsule_new = C.pythonapi.PyCapsule_New
_capsule_new.restype = C.py_object
_capsule_new.argtypes = [C.c_void_p, C.c_char_p, C.c_void_p]
_NAME = C.create_string_buffer(b"dltensor")  # must outlive the capsules
_USED_NAME = C.create_string_buffer(b"used_dltensor")


class ViaDLPack:
    """Only the DLPack protocol of a numpy array (not an ndarray, so the DLPack path is taken)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class HandMade:
    """A DLPack producer over a numpy buffer's bytes. The capsule has no destructor: this object
    owns the DLManagedTensor and must outlive the call (it does: the caller holds it)."""

    def __init__(self, buffer, shape, strides, code=2, bits=32, byte_offset=0, device_type=1, name=_NAME):
        self.buffer = buffer
        self.shape = (C.c_int64 * len(shape))(*shape)
        self.strides = (C.c_int64 * len(strides))(*strides) if strides is not None else None
        self.managed = _dlpack.DLManagedTensor()
        t = self.managed.dl_tensor
        t.data = buffer.ctypes.data
        t.device = _dlpack.DLDevice(device_type, 0)
        t.ndim = len(shape)
        t.dtype = _dlpack.DLDataType(code, bits, 1)
        t.shape = C.cast(self.shape, C.POINTER(C.c_int64))
        t.strides = C.cast(self.strides, C.POINTER(C.c_int64)) if strides is not None else None
        t.byte_offset = byte_offset
        self.device_type = device_type
        self.name = name
        self.exports = 0

    def __dlpack__(self, stream=None):
        self.exports += 1
        return _capsule_new(C.addressof(self.managed), self.name, None)

    def __dlpack_device__(self):
        return (self.device_type, 0)


def bfloat16_tensor(values):
    """A contiguous bfloat16 DLPack tensor holding `values` rounded to bfloat16."""
    bits = np.ascontiguousarray(R.bfloat16_bits(values))
    return HandMade(bits, bits.shape, None, code=4, bits=16)


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_numpy_through_dlpack_equals_numpy(rng):
    q, k, v = (_random(rng, 200, 4, 64) for _ in range(3))
    expected = sampleattn.attention(q, k, v)
    before = _core.copies_made
    out = sampleattn.attention(ViaDLPack(q), ViaDLPack(k), ViaDLPack(v))
    assert _core.copies_made == before
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, expected)
    # out= through DLPack writes in place.
    target = np.zeros_like(q)
    result = sampleattn.attention(ViaDLPack(q), k, v, out=ViaDLPack(target))
    assert isinstance(result, ViaDLPack)
    np.testing.assert_array_equal(target, expected)


def test_strides_and_byte_offset_of_a_dlpack_tensor(rng):
    tokens, heads, d = 100, 2, 64
    q, k, v = (_random(rng, tokens, heads, d) for _ in range(3))
    expected = sampleattn.attention(q, k, v)
    # q stored head-major with one spare row in front: strides (d, tokens * d, 1), byte offset d * 4.
    storage = np.zeros((heads * tokens + 1) * d, np.float32)
    storage[d:] = np.ascontiguousarray(q.transpose(1, 0, 2)).ravel()
    q_dl = HandMade(storage, (tokens, heads, d), (d, tokens * d, 1), byte_offset=d * 4)
    out = sampleattn.attention(q_dl, k, v)
    assert q_dl.exports == 1
    np.testing.assert_array_equal(out, expected)


def test_bfloat16_in_and_out_through_dlpack(rng):
    q, k, v = (_random(rng, 128, 4, 64) for _ in range(3))
    out_bits = np.zeros((128, 4, 64), np.uint16)
    out_dl = HandMade(out_bits, out_bits.shape, None, code=4, bits=16)
    before = _core.copies_made
    result = sampleattn.attention(bfloat16_tensor(q), bfloat16_tensor(k), bfloat16_tensor(v), out=out_dl)
    assert result is out_dl and _core.copies_made == before
    rounded = [R.round_to_bfloat16(x) for x in (q, k, v)]
    ref, _ = R.attention(*rounded)
    # Products in f32 of the bf16 values; the output rounded to bf16 (2^-9 relative).
    assert R.relative_error(R.from_bfloat16_bits(out_bits), ref) < 5e-3
    # The same inputs, a float32 output allocated here, f32 products.
    out32 = sampleattn.attention(bfloat16_tensor(q), bfloat16_tensor(k), bfloat16_tensor(v), out_dtype="float32",
                                 precision="f32")
    assert out32.dtype == np.float32
    assert R.relative_error(out32, ref) < 1e-5
    # precision "auto" (the default) may run bf16 products on bf16 inputs: a bf16 attention's error.
    out_auto = sampleattn.attention(bfloat16_tensor(q), bfloat16_tensor(k), bfloat16_tensor(v), out_dtype="float32")
    assert R.relative_error(out_auto, ref) < 1e-2


def test_bfloat16_output_needs_ml_dtypes_or_out(rng):
    q = _random(rng, 16, 1, 64)
    try:
        import ml_dtypes
    except ImportError:
        with pytest.raises(TypeError, match="ml_dtypes"):
            sampleattn.attention(bfloat16_tensor(q), bfloat16_tensor(q), bfloat16_tensor(q))
    else:
        out = sampleattn.attention(bfloat16_tensor(q), bfloat16_tensor(q), bfloat16_tensor(q))
        assert out.dtype == np.dtype(ml_dtypes.bfloat16)


def test_other_dtypes_and_layouts_are_copied_through_numpy(rng):
    q, k, v = (_random(rng, 64, 2, 64) for _ in range(3))
    expected = sampleattn.attention(q, k, v)
    before = _core.copies_made
    out = sampleattn.attention(ViaDLPack(q.astype(np.float64)), k, v)  # float64: to float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    out = sampleattn.attention(ViaDLPack(np.asfortranarray(q)), k, v)  # last dim strided
    np.testing.assert_array_equal(out, expected)
    assert _core.copies_made == before + 2


def test_dlpack_output_must_be_writable_in_place(rng):
    q = _random(rng, 32, 1, 64)
    with pytest.raises(ValueError, match="in place"):
        sampleattn.attention(q, q, q, out=ViaDLPack(np.zeros((32, 1, 64), np.float64)))


def test_unsupported_devices_and_consumed_capsules(rng):
    q = _random(rng, 16, 1, 64)
    rocm = HandMade(q, q.shape, None, device_type=10)
    with pytest.raises(TypeError, match="rocm"):
        sampleattn.attention(rocm, rocm, rocm)
    used = HandMade(q, q.shape, None, name=_USED_NAME)
    with pytest.raises(TypeError, match="dltensor"):
        sampleattn.attention(used, q, q)


def test_device_mismatch_is_refused(rng):
    q = _random(rng, 16, 1, 64)
    cuda = HandMade(q, q.shape, None, device_type=2)  # never dereferenced: refused first
    with pytest.raises(ValueError, match="cuda:0"):
        sampleattn.attention(q, cuda, q)
