"""Finding and loading the sampleattn C library, and its function prototypes.

Lookup order (the first that names a library wins):
  1. the environment variable SAMPLEATTN_LIBRARY: a path to libsampleattn.so (nothing else is
     tried when it is set, so a wrong path fails loudly instead of loading another library);
  2. a path recorded at install time: sampleattn/_config.py with LIBRARY = "/path/...". The
     package ships without one; an install step (e.g. CMake's) may write it;
  3. the dynamic loader's search path by soname: libsampleattn.so.1 (LD_LIBRARY_PATH, the
     ldconfig cache, the default directories), then ctypes.util.find_library("sampleattn").
"""
import ctypes as C
import ctypes.util
import os
import threading

from . import _abi

ENV_VARIABLE = "SAMPLEATTN_LIBRARY"
SONAME = "libsampleattn.so.1"


class Error(RuntimeError):
    """A call into the library failed.

    status: the status name, e.g. "SAMPLEATTN_INVALID_SHAPE"; code: its number; message: the
    library's description of what was wrong (sampleattn_last_error).
    """

    def __init__(self, status, message, code=None):
        self.status = status
        self.code = code if code is not None else _abi.STATUSES.get(status)
        self.message = message
        super().__init__(f"{status}: {message}")

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.code))


class LibraryNotFoundError(ImportError):
    """The C library could not be found or loaded, or is not one this package can use."""


class Library:
    """A loaded libsampleattn with its prototypes set, checked against this package's ABI."""

    def __init__(self, path):
        self.path = path
        self.cdll = C.CDLL(path)
        self._declare()
        self.path = _loaded_file(self.cdll) or path
        self._check_abi()

    def _declare(self):
        L = self.cdll
        try:
            L.sampleattn_params_init_sized
        except AttributeError:
            raise LibraryNotFoundError(
                f"{self.path} has no sampleattn_params_init_sized: it is a library from before ABI 1; "
                f"this package needs ABI {_abi.ABI_VERSION} ({SONAME})") from None
        vp, c_int = C.c_void_p, C.c_int
        protos = {
            "sampleattn_status_string": (C.c_char_p, [c_int]),
            "sampleattn_last_error": (C.c_char_p, []),
            "sampleattn_version": (C.c_char_p, []),
            "sampleattn_context_create": (c_int, [C.POINTER(_abi.ContextOptions), C.POINTER(vp)]),
            "sampleattn_context_destroy": (None, [vp]),
            "sampleattn_context_get_info": (c_int, [vp, C.POINTER(_abi.ContextInfo)]),
            "sampleattn_plan": (c_int, [vp, C.POINTER(_abi.Params), C.POINTER(_abi.PlanInfo)]),
            "sampleattn_forward": (c_int, [vp, C.POINTER(_abi.Params), C.POINTER(_abi.Stats)]),
        }
        for struct, name in _abi.INIT_FUNCTIONS.items():
            protos[name] = (None, [C.POINTER(struct), C.c_size_t])
        for name, (restype, argtypes) in protos.items():
            try:
                fn = getattr(L, name)
            except AttributeError:  # e.g. sampleattn_kv_cache_init_sized, new in ABI 1.4
                raise LibraryNotFoundError(
                    f"{self.path} has no {name}: the library is older than this package's ABI "
                    f"{_abi.ABI_VERSION}.{_abi.ABI_REVISION}; version {L.sampleattn_version().decode()}") from None
            fn.restype = restype
            fn.argtypes = argtypes

    def _check_abi(self):
        # A library older than this package's structs refuses their size and writes nothing: found
        # here, once, rather than as a confusing failure of the first call.
        self.context_info_size = C.sizeof(_abi.ContextInfo)
        for struct in _abi.INIT_FUNCTIONS:
            probe = struct()
            self.init(probe)
            if probe.struct_size == C.sizeof(struct):
                continue
            if struct is _abi.ContextInfo:
                # A revision 1.0 library: use the first layout and report the later fields as None.
                self.init(probe, _abi.CONTEXT_INFO_1_0_SIZE)
                if probe.struct_size == _abi.CONTEXT_INFO_1_0_SIZE:
                    self.context_info_size = _abi.CONTEXT_INFO_1_0_SIZE
                    continue
            raise LibraryNotFoundError(
                f"{self.path} refuses struct {struct.c_name} of {C.sizeof(struct)} bytes "
                f"(this package's header layout, ABI {_abi.ABI_VERSION}.{_abi.ABI_REVISION}): "
                f"the library is older or of another ABI; version {self.version()}")

    def init(self, struct, size=None):
        """Fills a struct with the library's defaults through its *_init_sized function."""
        fn = getattr(self.cdll, _abi.INIT_FUNCTIONS[type(struct)])
        fn(C.byref(struct), C.sizeof(struct) if size is None else size)
        return struct

    def version(self):
        return self.cdll.sampleattn_version().decode()

    def status_name(self, code):
        return self.cdll.sampleattn_status_string(code).decode()

    def check(self, code):
        """Raises Error for a status other than SAMPLEATTN_SUCCESS (call right after the call:
        the message is the calling thread's last error)."""
        if code != 0:
            message = self.cdll.sampleattn_last_error().decode(errors="replace")
            raise Error(self.status_name(code), message, code)


def _loaded_file(cdll):
    """The file a library was loaded from (by soname the loader may pick any), where
    /proc/self/maps says; None elsewhere."""
    address = C.cast(cdll.sampleattn_version, C.c_void_p).value
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                begin, end = (int(x, 16) for x in fields[0].split("-"))
                if begin <= address < end and len(fields) >= 6:
                    return fields[5]
    except (OSError, ValueError):
        pass
    return None


_library = None
_lock = threading.Lock()


def _recorded_path():
    try:
        from . import _config  # written by an install step, absent by default
    except ImportError:
        return None
    return getattr(_config, "LIBRARY", None) or None


def _load_default():
    env = os.environ.get(ENV_VARIABLE)
    if env:
        try:
            return Library(env)
        except OSError as e:
            raise LibraryNotFoundError(
                f"sampleattn: {ENV_VARIABLE}={env} could not be loaded ({e}). Point {ENV_VARIABLE} at the "
                f"built shared library, e.g. build/src/libsampleattn.so") from None
    tried = []
    recorded = _recorded_path()
    candidates = ([(recorded, "recorded at install time")] if recorded else []) + [
        (SONAME, "by soname on the loader's search path")]
    found = ctypes.util.find_library("sampleattn")
    if found and found != SONAME:
        candidates.append((found, "ctypes.util.find_library"))
    for path, how in candidates:
        try:
            return Library(path)
        except OSError as e:
            tried.append(f"{path} ({how}): {e}")
    raise LibraryNotFoundError(
        "sampleattn: the C library libsampleattn was not found. Tried:\n  " + "\n  ".join(tried) +
        f"\nSet {ENV_VARIABLE} to the path of libsampleattn.so (e.g. build/src/libsampleattn.so), "
        "or install the library where the dynamic loader finds it (LD_LIBRARY_PATH, ldconfig).")


def library():
    """The loaded library, loading it on first use (see the module's lookup order)."""
    global _library
    if _library is None:
        with _lock:
            if _library is None:
                _library = _load_default()
    return _library


def load_library(path=None):
    """Loads the library from `path` (or by the default lookup when None) and makes it the one
    this package uses from now on; returns its path. Contexts made before keep their library."""
    global _library
    if path is None:
        lib = _load_default()
    else:
        try:
            lib = Library(os.fspath(path))
        except OSError as e:
            raise LibraryNotFoundError(f"sampleattn: {path} could not be loaded ({e})") from None
    with _lock:
        _library = lib
    return lib.path
