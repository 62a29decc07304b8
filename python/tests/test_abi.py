"""The ctypes mirrors against the C header: a C program compiled with the system's compiler prints
every struct's size, every field's offset and size, and every constant; they must equal Python's."""
import ctypes as C
import os
import pathlib
import shutil
import subprocess

import pytest

from sampleattn import _abi

from conftest import REPO

INCLUDE = pathlib.Path(os.environ.get("SAMPLEATTN_INCLUDE_DIR", REPO / "include"))


def _c_program():
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "sampleattn/sampleattn.h"', "int main(void) {"]
    for struct in _abi.STRUCTS:
        t = struct.c_name
        lines.append(f'  printf("sizeof {t} %zu\\n", sizeof({t}));')
        for name, _ in struct._fields_:
            lines.append(f'  printf("offsetof {t}.{name} %zu\\n", offsetof({t}, {name}));')
            lines.append(f'  printf("sizeof {t}.{name} %zu\\n", sizeof((({t}*)0)->{name}));')
    for name in _abi.CONSTANTS:
        lines.append(f'  printf("const {name} %lld\\n", (long long)({name}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _python_values():
    values = {}
    for struct in _abi.STRUCTS:
        t = struct.c_name
        values[f"sizeof {t}"] = C.sizeof(struct)
        for name, ctype in struct._fields_:
            values[f"offsetof {t}.{name}"] = getattr(struct, name).offset
            values[f"sizeof {t}.{name}"] = C.sizeof(ctype)
    for name, value in _abi.CONSTANTS.items():
        values[f"const {name}"] = value
    return values


@pytest.fixture(scope="module")
def c_values(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler (cc) to compile the header's layout probe")
    if not (INCLUDE / "sampleattn" / "sampleattn.h").is_file():
        pytest.skip(f"header not found under {INCLUDE} (set SAMPLEATTN_INCLUDE_DIR)")
    work = tmp_path_factory.mktemp("abi")
    (work / "probe.c").write_text(_c_program())
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-I", str(INCLUDE), "probe.c", "-o", "probe"],
                   cwd=work, check=True)
    output = subprocess.run([str(work / "probe")], check=True, capture_output=True, text=True).stdout
    values = {}
    for line in output.splitlines():
        key, value = line.rsplit(" ", 1)
        values[key] = int(value)
    return values


def test_struct_layouts_and_constants_match_the_header(c_values):
    python = _python_values()
    assert python.keys() == c_values.keys()
    differences = {key: (python[key], c_values[key]) for key in python if python[key] != c_values[key]}
    assert not differences, f"(python, C) differ: {differences}"


def test_context_info_first_layout_ends_after_note(c_values):
    # The revision 1.0 size this package falls back to (sampleattn/_abi.py) is the end of `note`.
    end = c_values["offsetof sampleattn_context_info.note"] + c_values["sizeof sampleattn_context_info.note"]
    assert _abi.CONTEXT_INFO_1_0_SIZE == end


def test_library_accepts_every_struct_size():
    # Loading checks this already; here it is explicit, per struct.
    from sampleattn._library import library
    lib = library()
    for struct in _abi.INIT_FUNCTIONS:
        probe = lib.init(struct())
        assert probe.struct_size == C.sizeof(struct), struct.c_name
