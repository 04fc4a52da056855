"""Delete a directory tree that an untrusted program may have built: any depth, any path
length, any permissions. Iterative and relative to directory descriptors, so neither
Python's recursion limit nor PATH_MAX can stop it; it never raises. Standard library only.
"""

import os
import stat

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def remove_tree(path):
    """True when `path` is gone afterwards."""
    try:
        _remove(path)
    except OSError:
        pass
    return not os.path.lexists(path)


def _remove(path):
    try:
        os.chmod(path, stat.S_IRWXU)
        top = os.open(path, _DIRECTORY)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    stack = [(top, None)]  # (descriptor, name in the parent)
    try:
        while stack:
            fd, _ = stack[-1]
            child = _first_subdirectory_after_unlinking_files(fd)
            if child is not None:
                os.chmod(child, stat.S_IRWXU, dir_fd=fd)
                stack.append((os.open(child, _DIRECTORY, dir_fd=fd), child))
                continue
            _, name = stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            os.close(fd)
    os.rmdir(path)


def _first_subdirectory_after_unlinking_files(fd):
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            os.unlink(entry.name, dir_fd=fd)
    return None
