"""Kernel isolation for the program fork server and for each program it forks.

Linux only, through ctypes; standard library only (it runs in the fork server, which is
started from a bare `python -I`). Two steps:

- `enter_server_namespaces` + `pivot_into_view`, once, in the fork server: new
  mount/network/IPC/UTS namespaces (plus a user namespace when not root), and a root
  file system that holds only the interpreter, its libraries and a few device nodes,
  read-only. The server makes itself non-dumpable: nothing without CAP_SYS_PTRACE over
  it can read or write its memory.
- `fork_in_new_pid_namespace` + `confine_program`, per program, in the forked child
  before any untrusted byte runs: it is PID 1 of a fresh PID namespace (so it sees no
  other process and everything it leaves dies with it), has its own mount and IPC
  namespaces (no /proc, size- and inode-capped tmpfs at /tmp and /dev/shm that
  vanish with it, System V IPC that vanishes with it), drops every capability and changes
  to an unprivileged uid when there is one to change to (the server runs as real root),
  sets no_new_privs, and loads a seccomp filter (where libseccomp is installed): an
  allow-list of the system calls a Python program needs, sockets of the local families
  only, and every other call refused (process creation, exec, ptrace, namespace and
  mount calls with EPERM, anything unlisted or newer than the list with ENOSYS).
"""

import ctypes
import ctypes.util
import errno
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
# statvfs f_flag bit -> the mount flag a read-only remount must keep (the kernel refuses
# to clear flags that are locked on a mount inherited from a more privileged namespace).
_KEPT_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME,
               2048: MS_NODIRATIME, 4096: MS_RELATIME}

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
SECCOMP_MODE_FILTER = 2
# Syscalls without a glibc wrapper.
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capget": 125, "capset": 126},
             "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91}}

_libc = ctypes.CDLL(None, use_errno=True)
SANDBOX_HOSTNAME = b"sandbox"
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.syscall.restype = ctypes.c_long


class ConfineError(OSError):
    """A step of the isolation failed: the program must not run."""


def _check(result, what):
    if result == -1:
        code = ctypes.get_errno()
        raise ConfineError(code, f"{what}: {os.strerror(code)}")
    return result


def _syscall(name, *args):
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise ConfineError(errno.ENOSYS, f"{name}: unsupported architecture {platform.machine()}")
    return _check(_libc.syscall(ctypes.c_long(numbers[name]), *args), name)


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd, nstype):
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _prctl(option, arg=0):
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl {option}")


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------- the fork server, once


def enter_server_namespaces():
    """Move the calling (single-threaded) process into new mount, network, IPC, UTS and
    PID namespaces, as a non-root user inside a new user namespace where it is root.
    Returns in a forked child, PID 1 of the new PID namespace; the original process
    waits for it and exits with its status. (A server whose own PID namespace belongs
    to its user namespace may return there after creating each program's: setns into
    the host's would need capabilities over the host's user namespace.)"""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
    unshare(flags if uid == 0 else flags | CLONE_NEWUSER)
    if uid != 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount reaches the host
    # The new UTS namespace starts with a copy of the host's name: replace it.
    _check(_libc.sethostname(SANDBOX_HOSTNAME, ctypes.c_size_t(len(SANDBOX_HOSTNAME))), "sethostname")
    _check(_libc.setdomainname(SANDBOX_HOSTNAME, ctypes.c_size_t(len(SANDBOX_HOSTNAME))), "setdomainname")


def _bind_read_only(source, target):
    mount(source, target, None, MS_BIND | MS_REC)
    # Every mount under the bind becomes read-only, not only the top one.
    for mount_point in _mount_points_under(target):
        kept = sum(flag for bit, flag in _KEPT_FLAGS.items() if os.statvfs(mount_point).f_flag & bit)
        mount(None, mount_point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _mount_points_under(path):
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes
            if point == path or point.startswith(path.rstrip("/") + "/"):
                points.append(point)
    return points


def _under_tmp(read_only):
    """(path, where the view keeps a copy of its bind) for `read_only` paths under /tmp
    (a virtualenv there, say), which each program's own /tmp covers."""
    return [(path, f"/.under-tmp/{index}")
            for index, path in enumerate(p for p in read_only if p.startswith("/tmp/"))]


def pivot_into_view(new_root, read_only, hidden, devices=("null", "zero", "full", "random", "urandom")):
    """Make `new_root` (an empty directory) the root of this mount namespace: a small
    tmpfs holding `read_only` host paths bound read-only at their own paths, empty
    read-only directories over `hidden` paths, the `devices` of /dev, empty /tmp and
    /dev/shm mount points for each program, and an empty /proc. The old root is detached."""
    mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for path in read_only:
        if os.path.islink(path):
            os.makedirs(new_root + os.path.dirname(path), exist_ok=True)
            os.symlink(os.readlink(path), new_root + path)
        elif os.path.isdir(path):
            os.makedirs(new_root + path, exist_ok=True)
            _bind_read_only(path, new_root + path)
        elif os.path.isfile(path):
            os.makedirs(new_root + os.path.dirname(path), exist_ok=True)
            open(new_root + path, "w").close()
            _bind_read_only(path, new_root + path)
    for path in hidden:
        if os.path.isdir(new_root + path):
            mount("tmpfs", new_root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
    for path, stash in _under_tmp(read_only):  # each program's /tmp covers these: keep their view
        view = new_root + path
        os.makedirs(new_root + os.path.dirname(stash), exist_ok=True)
        if os.path.islink(view):
            os.symlink(os.readlink(view), new_root + stash)
            continue
        if os.path.isdir(view):
            os.makedirs(new_root + stash)
        elif os.path.isfile(view):
            open(new_root + stash, "w").close()
        else:
            continue
        # The view's own mount tree: read-only, with the hidden directories' overlays in it.
        mount(view, new_root + stash, None, MS_BIND | MS_REC)
    os.makedirs(new_root + "/dev", exist_ok=True)
    for name in devices:
        target = new_root + "/dev/" + name
        open(target, "w").close()
        _bind_read_only("/dev/" + name, target)
    os.makedirs(new_root + "/tmp", exist_ok=True)
    os.makedirs(new_root + "/dev/shm", exist_ok=True)  # POSIX semaphores (multiprocessing.Lock)
    # An empty /proc: a proc file system would show the host kernel's command line and,
    # in every thread's mountinfo, the host's file system sources and options (overlay
    # lower and upper directories, say). Python's own calls do not need one.
    os.makedirs(new_root + "/proc", exist_ok=True)
    os.chdir(new_root)
    _syscall("pivot_root", b".", b".")  # stack the new root on the old one...
    _check(_libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "umount old root")  # ...and drop the old
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _prctl(PR_SET_DUMPABLE, 0)


# ---------------------------------------------------------------- each program


def fork_in_new_pid_namespace(own_pid_namespace_fd):
    """os.fork(), the child being PID 1 of a new PID namespace. The caller keeps its own
    namespace for later children (setns back), so it can do this once per program."""
    unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid:
        setns(own_pid_namespace_fd, CLONE_NEWPID)
    return pid


def confine_program(*, tmp_mb, tmp_inodes, uid, read_only=(), seccomp=None):
    """Runs in the child of `fork_in_new_pid_namespace`, before any untrusted code.
    `read_only` paths of the view that lie under /tmp (a virtualenv there, say) are
    bound again on top of the program's own /tmp."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC)
    owner = f",uid={uid},gid={uid}" if uid else ""
    for path, mode in (("/tmp", "0700"), ("/dev/shm", "1777")):  # each its own, same caps
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={tmp_mb}m,nr_inodes={tmp_inodes},mode={mode}{owner}")
    for path, stash in _under_tmp(read_only):
        if os.path.islink(stash):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(os.readlink(stash), path)
            continue
        if not os.path.exists(stash):
            continue
        if os.path.isdir(stash):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
        mount(stash, path, None, MS_BIND | MS_REC)  # keeps its read-only flags and hidden overlays
    os.chdir("/tmp")
    _drop_privileges(uid)
    # Dies if the fork server dies. Set after the uid change, which clears it; seccomp
    # keeps the program from clearing it.
    _prctl(PR_SET_PDEATHSIG, 9)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if seccomp is not None:
        seccomp.load()


def _drop_privileges(uid):
    """No capabilities left in any set that matters. (The bounding set is left alone: it
    only limits what exec could grant, and no_new_privs plus seccomp rule out exec.)"""
    if uid:  # the server is real root: become a user of our own, with no capabilities
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    else:  # root of the server's user namespace only: keep the uid, drop every capability
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        data = (ctypes.c_uint32 * 6)()
        _syscall("capset", header, data)
    if (uid and os.getuid() == 0) or _has_capabilities():
        raise ConfineError(errno.EPERM, "privileges were not dropped")


def _has_capabilities():
    """Whether any effective or permitted capability is left (capget: there is no /proc)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    _syscall("capget", header, data)
    return any(data[word] for word in (0, 1, 3, 4))


# ---------------------------------------------------------------- seccomp

# What a Python program (threads, numpy, asyncio, files under /tmp, local sockets) needs.
# Everything else answers ENOSYS, as on a kernel too old to have it: a new system call
# reaches no program until it is listed here. Names unknown to the architecture are skipped.
_ALLOWED = (
    # memory
    # (no memfd_create: its pages are neither address space nor a file of a capped tmpfs,
    # so without a cgroup no limit would hold them; libffi falls back to a file)
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "membarrier",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
    # files and descriptors
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "dup",
    "dup2", "dup3", "fcntl", "flock", "ioctl", "pipe", "pipe2", "stat", "fstat", "lstat",
    "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir",
    "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link",
    "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "umask", "truncate",
    "ftruncate", "fallocate", "fsync", "fdatasync", "sync_file_range", "fadvise64", "readahead",
    "utime", "utimes", "utimensat", "futimesat", "sendfile", "copy_file_range", "getxattr",
    "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "setxattr", "lsetxattr",
    "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "chown", "fchown", "fchownat", "lchown",
    "mknod", "mknodat", "sync", "syncfs", "inotify_init", "inotify_init1", "inotify_add_watch",
    "inotify_rm_watch",
    # System V IPC: a namespace of the program's own, gone with it
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd",
    "msgrcv", "msgctl",
    # waiting
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "signalfd", "signalfd4", "futex", "futex_waitv",
    "nanosleep", "clock_nanosleep", "pause", "sched_yield",
    # threads (clone: below), signals, time
    "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "arch_prctl",
    "set_thread_area", "get_thread_area", "exit", "exit_group", "wait4", "waitid",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "kill", "tkill",
    "tgkill", "alarm", "getitimer", "setitimer", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "times", "restart_syscall",
    # who and where am I
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgid", "getpgrp", "getsid", "setsid", "setpgid", "uname",
    "sysinfo", "getrusage", "getrlimit", "setrlimit", "prlimit64", "getcpu", "getrandom",
    "getpriority", "setpriority", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_getscheduler", "sched_getattr", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "ioprio_get", "capget",
    # sockets (socket and socketpair: below); no sendmsg: descriptors in flight in a Unix
    # socket outlive the program, pinning its memory
    "bind", "listen", "accept", "accept4", "connect", "shutdown", "getsockname", "getpeername",
    "getsockopt", "setsockopt", "sendto", "recvfrom", "recvmsg", "recvmmsg",
)
# Refused with EPERM (a clear "Operation not permitted" where a program tries them).
_DENIED = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "kcmp", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "unshare", "setns", "mount",
    "umount2", "pivot_root", "chroot", "prctl", "personality", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "setgroups", "capset", "seccomp", "sendmsg", "sendmmsg",
)
_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6: not vsock, netlink, packet...


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Seccomp:
    """A filter built and compiled to BPF once (in the fork server), and installed in
    each program by one prctl: libseccomp's own seccomp_load compiles the rules again
    in every process, ~2 ms of each program's CPU."""

    _ALLOW, _ERRNO, _EQ, _MASKED_EQ = 0x7FFF0000, 0x00050000, 4, 7

    def __init__(self, library):
        self._lib = library
        library.seccomp_init.restype = ctypes.c_void_p
        library.seccomp_init.argtypes = [ctypes.c_uint32]
        library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        library.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        library.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        library.seccomp_release.argtypes = [ctypes.c_void_p]
        self._ctx = library.seccomp_init(self._ERRNO | errno.ENOSYS)
        if not self._ctx:
            raise ConfineError(errno.ENOMEM, "seccomp_init")
        for name in _ALLOWED:
            self._rule(name, self._ALLOW)
        for name in _DENIED:
            self._rule(name, self._ERRNO | errno.EPERM)
        # Threads, not processes: clone only with CLONE_THREAD. clone3 hides its flags in
        # memory, so it answers ENOSYS (the default) and the C library falls back to clone.
        self._rule("clone", self._ALLOW, _ArgCmp(0, self._MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
        self._rule("clone", self._ERRNO | errno.EPERM, _ArgCmp(0, self._MASKED_EQ, CLONE_THREAD, 0))
        for family in _SOCKET_FAMILIES:
            self._rule("socket", self._ALLOW, _ArgCmp(0, self._EQ, family, 0))
        self._rule("socketpair", self._ALLOW, _ArgCmp(0, self._EQ, 1, 0))
        self._program = self._compile()
        library.seccomp_release(self._ctx)

    def _compile(self):
        """The filter as BPF (what seccomp_load would install): an array of 8-byte
        instructions, with the sock_fprog that points at it."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            result = self._lib.seccomp_export_bpf(self._ctx, fd)
            if result < 0:
                raise ConfineError(-result, "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            code = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        if not code or len(code) % 8:
            raise ConfineError(errno.EINVAL, f"seccomp_export_bpf gave {len(code)} bytes")
        self._code = ctypes.create_string_buffer(code, len(code))
        return _SockFprog(len(code) // 8, ctypes.addressof(self._code))

    def _rule(self, name, action, *conditions):
        number = self._lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return
        array = (_ArgCmp * max(1, len(conditions)))(*conditions)
        result = self._lib.seccomp_rule_add_array(self._ctx, action, number, len(conditions), array)
        if result < 0:
            raise ConfineError(-result, f"seccomp rule for {name}")

    def load(self):
        """Install the filter in this process (no_new_privs must be set)."""
        _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                           ctypes.byref(self._program), ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp filter")


def load_seccomp():
    """The filter, or None where libseccomp is not installed."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        library = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    return Seccomp(library)
