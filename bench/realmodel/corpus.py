"""The corpus of the small model (train.py, eval.py, np_eval.py), numpy only: the Python sources
installed on the machine that runs it.

Every *.py file (non-empty, at most MAX_FILE_BYTES) under the running Python's stdlib and
site-packages directories (sysconfig + site), walked in sorted order; a file is held out when the
first 8 hex digits of sha1(its key) mod 100 are below HELDOUT_PERCENT, key = "stdlib/" or "site/"
plus its path relative to its root, so held-out windows are text of files never trained on.
Files are concatenated in sorted order, each followed by one NUL byte.

The split depends on a file's key only, so a key present on two machines falls on the same side
of it on both; the streams themselves are those of the Python that runs this, so they differ
between machines (another Python version, other packages).
"""
import hashlib
import os
import site
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HELDOUT_PERCENT = 3
MAX_FILE_BYTES = 1 << 20  # skip generated giants (tables, vendored bundles) above 1 MiB
SEPARATOR = b"\x00"


def source_roots():
    """(label, directory) of the installed Python's stdlib and site-packages, deduplicated."""
    paths = sysconfig.get_paths()
    found = [("stdlib", paths.get("stdlib")), ("stdlib", paths.get("platstdlib")),
             ("site", paths.get("purelib")), ("site", paths.get("platlib"))]
    try:
        found += [("site", p) for p in site.getsitepackages()]
    except AttributeError:
        pass
    out, seen = [], set()
    for label, p in found:
        if not p or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        out.append((label, real))
    return out


def list_files():
    """Sorted [(key, path, size)]: key = label/relative path. A file reached from two roots (the
    stdlib holding site-packages, say) is listed once, under the first root that reaches it."""
    files, seen = [], set()
    roots = source_roots()
    for label, root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            # another root nested inside this one is walked as its own root
            dirnames[:] = [d for d in dirnames
                           if not any(os.path.join(dirpath, d) == r for _, r in roots if r != root)]
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                real = os.path.realpath(path)
                if real in seen:
                    continue
                try:
                    size = os.path.getsize(real)
                except OSError:
                    continue
                if size == 0 or size > MAX_FILE_BYTES:
                    continue
                seen.add(real)
                files.append((f"{label}/{os.path.relpath(path, root)}", real, size))
    files.sort()
    return files, roots


def file_hash(key):
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


def is_heldout(key):
    return file_hash(key) % 100 < HELDOUT_PERCENT


def _cap(files, max_bytes):
    """At most max_bytes of files, chosen by hash rank (deterministic, spread over packages),
    returned in sorted order."""
    if max_bytes is None or sum(f[2] for f in files) <= max_bytes:
        return list(files)
    chosen, total = [], 0
    for f in sorted(files, key=lambda f: (file_hash("cap:" + f[0]), f[0])):
        if total + f[2] > max_bytes:
            continue
        chosen.append(f)
        total += f[2]
    return sorted(chosen)


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def concat(files, threads=16):
    with ThreadPoolExecutor(threads) as pool:
        blobs = list(pool.map(lambda f: _read(f[1]), files))
    return np.frombuffer(SEPARATOR.join(blobs) + SEPARATOR, dtype=np.uint8)


def build_corpus(split, max_mb=None):
    """split 'train' or 'heldout': (uint8 array, description dict)."""
    files, roots = list_files()
    part = [f for f in files if is_heldout(f[0]) == (split == "heldout")]
    part = _cap(part, None if max_mb is None else int(max_mb * (1 << 20)))
    data = concat(part)
    desc = dict(split=split, roots=[f"{label}:{r}" for label, r in roots], files_total=len(files),
                bytes_total=int(sum(f[2] for f in files)),
                files=len(part), bytes=int(data.size), heldout_rule=f"sha1(key)[:8] % 100 < {HELDOUT_PERCENT}",
                max_mb=max_mb, python=sys.version.split()[0], first_file=part[0][0] if part else None,
                last_file=part[-1][0] if part else None)
    return data, desc


def heldout_windows(data, n, length):
    """n windows of `length` bytes, evenly spaced over the held-out stream (deterministic)."""
    span = data.size - length - 1
    if span < 0:
        raise ValueError(f"held-out stream ({data.size} bytes) shorter than one window ({length})")
    starts = [int(round(i * span / max(n - 1, 1))) for i in range(n)] if n > 1 else [span // 2]
    return starts
