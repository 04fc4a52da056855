"""No program's compilation or warnings touch another program or a fork server
(issue 17, item 1): compile warnings used to go to a fork-server pipe nobody read, so a
program that filled it stalled the next innocent one on that worker; compiling before
the fork ran a program's compile-time cost outside its deadline and memory limit."""

from __future__ import annotations

import time

import pytest
from sandbox_helpers import LEVELS

from lm_eval_noise.execution import Isolation, Program, run_programs

# One SyntaxWarning each: `is` with a literal ("did you mean ==?").
INNOCENT = "def check_zero(x):\n    if x is 0:\n        return True\n    return x == 0\n"
INNOCENT_TESTS = "def check(f):\n    assert f(0) and not f(3)\n"
# ~900 warnings while compiling, over 100 KB of text: more than a pipe holds.
WARNING_FLOOD = "def check_zero(x):\n" + "".join(f"    y{i} = x is {i}\n" for i in range(900)) + "    return y0\n"
# try/finally nested in the finally blocks: the compiler copies each finally body for
# the normal and the exceptional path, 2**19 copies here (~5 s and ~1.5 GB to compile).
COMPILE_BOMB = "def check_zero(x):\n" + "".join(
    "    " * (depth + 1) + f"try:\n{'    ' * (depth + 2)}x = x + 1\n{'    ' * (depth + 1)}finally:\n"
    for depth in range(19)) + "    " * 20 + "x = x - 1\n    return x == 0\n"

def _program(source: str) -> Program:
    return Program(source, tests=INNOCENT_TESTS, entry_point="check_zero")


@pytest.mark.parametrize("level", LEVELS)
def test_a_warning_flood_does_not_stall_the_next_program(level):
    programs = [_program(WARNING_FLOOD)] + [_program(INNOCENT)] * 3
    start = time.monotonic()
    results = run_programs(programs, timeout=3.0, workers=1, isolation=Isolation(level))
    assert [r.status for r in results[1:]] == ["passed"] * 3, [r.detail for r in results]
    assert time.monotonic() - start < 10


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_hundreds_of_honest_programs_that_warn_all_pass(level):
    source = "def check_zero(x):\n    a = x is not ''\n    b = x is not ''\n    c = x is not ''\n    return x == 0\n"
    results = run_programs([_program(source)] * 400, timeout=3.0, workers=1, isolation=Isolation(level))
    assert {r.status for r in results} == {"passed"}


@pytest.mark.parametrize("level", LEVELS)
def test_a_compile_bomb_is_bounded_by_its_own_deadline(level):
    start = time.monotonic()
    results = run_programs([_program(COMPILE_BOMB), _program(INNOCENT)], timeout=2.0, workers=1,
                           isolation=Isolation(level))
    assert not results[0].passed
    assert results[1].status == "passed"
    assert time.monotonic() - start < 2.0 + 10


# Reads its own memory around the heap, the C heap, the mmap area and the interpreter's
# data, looking for another program's words. It has no /proc to list its mappings: a
# write to a pipe from an unmapped page fails with EFAULT, which finds them. It must
# find its own marker, or the scan proves nothing.
MEMORY_SCAN = """
def check_zero(x):
    return x == 0

import ctypes, errno, os, re
PAGE, REACH = 4096, 256 << 20
marker = ('SECRET_' + 'OUTPUT_0') * 3
anchors = [id(marker), id(object()), ctypes.CDLL(None).malloc, ctypes.addressof(ctypes.create_string_buffer(1 << 20)),
           ctypes.addressof(ctypes.c_int.in_dll(ctypes.pythonapi, 'Py_OptimizeFlag'))]
anchors[2].restype = ctypes.c_void_p
anchors[2] = anchors[2](64)
read_end, write_end = os.pipe()
def mapped(page):
    try:
        os.write(write_end, (ctypes.c_char * PAGE).from_address(page))
    except OSError as error:
        assert error.errno == errno.EFAULT
        return False
    os.read(read_end, PAGE)
    return True
pages = set()
for anchor in anchors:
    start = max(PAGE, (anchor - REACH) // PAGE * PAGE)
    pages.update(page for page in range(start, anchor + REACH, PAGE) if page not in pages and mapped(page))
found = set()
for page in sorted(pages):
    found.update(re.findall(rb'SECRET_(?:SOURCE|OUTPUT)_[0-9]+', ctypes.string_at(page, PAGE + 32 if page + PAGE in pages else PAGE)))
print(b'SECRET_OUTPUT_0' in found, len(pages) * PAGE >> 20, sorted(found - {b'SECRET_SOURCE_0', b'SECRET_OUTPUT_0'}))
"""


@pytest.mark.parametrize("level", LEVELS)
def test_nothing_of_one_program_is_in_the_memory_the_next_one_inherits(level):
    """The program server used to parse each request's source and decode each output in
    its own heap, which every later program inherits by fork."""
    earlier = [_program(INNOCENT + f"# SECRET_SOURCE_{7 * i + 1}\nprint('SECRET_OUTPUT_{7 * i + 1}' * 50)\n")
               for i in range(20)]
    results = run_programs([*earlier, Program(MEMORY_SCAN)], timeout=10.0, workers=1,
                           isolation=Isolation(level))
    assert {r.status for r in results[:-1]} == {"passed"}
    assert "SECRET_OUTPUT_1" in results[0].output  # the output was seen, and kept for the host
    assert results[-1].status == "passed", results[-1]
    found_own, megabytes, others = results[-1].output.split(" ", 2)
    assert found_own == "True" and int(megabytes) > 8, results[-1].output[:300]
    assert others.strip() == "[]", results[-1].output[:300]
