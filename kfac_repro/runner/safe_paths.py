"""Creating and opening paths under a trusted root (a results root `--out`, or a run directory) without following
symlinks: every writer of the results layout goes through here.

The root itself is the user's choice and is used as given. Below it, each directory is opened relative to its parent
with O_NOFOLLOW (created first where asked), files are opened with O_NOFOLLOW, and a temporary file is created
exclusively (O_CREAT | O_EXCL) before it is renamed over its target; so a symlink planted anywhere below the root
(an arm directory, a `.lock`, a `run.json.tmp`, a `metrics.csv`) is refused with UnsafePath naming it, and its target
is never opened. A stale temporary file that is a regular file (left by a crash) is replaced; anything else there is
refused.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MODES = {  # text mode → open flags (O_NONBLOCK: a FIFO planted there fails at once instead of blocking)
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}


class UnsafePath(ValueError):
    """A path below the root cannot be used: a symlink, something that is not a directory (or not a regular file)
    where one is needed, or the system refused it (permissions, a read-only or full file system)."""


def _parts(root: Path, relative: Path | str) -> tuple[str, ...]:
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        raise UnsafePath(f"{relative}: not a path inside {root}")
    return tuple(p for p in parts if p != ".")


def _refusal(root: Path, parts: tuple[str, ...], dir_fd: int, name: str, error: OSError, what: str) -> UnsafePath:
    """UnsafePath for `name` in the directory `dir_fd` (root/parts), saying why it cannot be opened as `what`."""
    path = root.joinpath(*parts, name)
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        return UnsafePath(f"{path} is a symlink (to {os.readlink(name, dir_fd=dir_fd)}): refused, nothing is "
                          f"written through links below {root}; remove it")
    wrong_kind = mode is not None and not (stat.S_ISDIR(mode) if what == "a directory" else stat.S_ISREG(mode))
    if wrong_kind or error.errno in (errno.ENOTDIR, errno.ENXIO):
        return UnsafePath(f"{path} is not {what}: remove or rename it")
    return UnsafePath(f"cannot use {path} as {what}: {error.strerror or error}")


def _open_root(root: Path, create: bool) -> int:
    try:
        if create:
            root.mkdir(parents=True, exist_ok=True)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        blocking = next((p for p in (*reversed(root.parents), root) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UnsafePath(f"{blocking} is not a directory: give a directory (or a new path) there") from None
        raise UnsafePath(f"cannot use {root} as a directory: {error.strerror or error}") from None


@contextmanager
def _directory(root: Path, relative: Path | str = ".", create: bool = False) -> Iterator[int]:
    """A file descriptor of root/relative, reached one component at a time without following symlinks (each
    missing component created when `create`); closed on exit."""
    parts = _parts(root, relative)
    fd = _open_root(root, create)
    try:
        for depth, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as error:
                    raise _refusal(root, parts[:depth], fd, part, error, "a directory") from None
            try:
                child = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as error:
                raise _refusal(root, parts[:depth], fd, part, error, "a directory") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def make_dirs(root: Path, relative: Path | str) -> Path:
    """root/relative, every component below the root created if missing and refused if it is a symlink or not a
    directory."""
    with _directory(root, relative, create=True):
        return root / relative


def check_dirs(root: Path, relative: Path | str) -> Path:
    """root/relative when every component below the root is a directory and none is a symlink, else UnsafePath."""
    with _directory(root, relative):
        return root / relative


def make_dir_exclusively(root: Path, relative: Path | str) -> Path:
    """Create root/relative, which must not exist (FileExistsError if it does), its parents as make_dirs does."""
    path = Path(relative)
    with _directory(root, path.parent, create=True) as parent:
        try:
            os.mkdir(path.name, dir_fd=parent)
        except FileExistsError:
            raise
        except OSError as error:
            raise _refusal(root, _parts(root, path.parent), parent, path.name, error, "a directory") from None
    return root / relative


def open_file(root: Path, relative: Path | str, mode: str = "r", newline: str | None = None) -> IO[str]:
    """root/relative opened in text mode `mode` ('r', 'w', 'a'; '+' for reading too), its directories reached
    as `_directory` does and the file itself opened with O_NOFOLLOW: a symlink, a directory or a device there is
    refused (UnsafePath naming it)."""
    path = Path(relative)
    flags = _MODES[mode.rstrip("+")] | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if mode.endswith("+"):
        flags = (flags & ~os.O_WRONLY) | os.O_RDWR
    with _directory(root, path.parent) as parent:
        try:
            fd = os.open(path.name, flags, 0o644, dir_fd=parent)
        except OSError as error:
            if mode == "r" and error.errno == errno.ENOENT:
                raise
            raise _refusal(root, _parts(root, path.parent), parent, path.name, error, "a regular file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{root / relative} is not a regular file: remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode, newline=newline, encoding="utf-8")


def read_text(root: Path, relative: Path | str) -> str:
    """The UTF-8 text of root/relative, opened as `open_file` does."""
    with open_file(root, relative) as handle:
        return handle.read()


def write_atomic(root: Path, relative: Path | str, text: str, newline: str | None = None) -> None:
    """Replace root/relative with `text` at once (readers see the old or the new content, never half): written to
    <name>.tmp, created exclusively, synced, then renamed over the target. A symlink at the target or at the
    temporary name is refused (UnsafePath); a stale regular <name>.tmp is removed first."""
    path = Path(relative)
    temporary = path.name + ".tmp"
    with _directory(root, path.parent) as parent:
        where = root / path.parent
        handle = _exclusive(where, parent, temporary, newline)
        try:
            with handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            _refuse_link(where, parent, path.name)
            os.replace(temporary, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            os.unlink(temporary, dir_fd=parent)
            raise


def _exclusive(where: Path, parent: int, name: str, newline: str | None, stale_removed: bool = False) -> IO[str]:
    """`name` in the directory `parent`, created exclusively for writing; a stale regular file there is removed
    once, anything else refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.fdopen(os.open(name, flags, 0o644, dir_fd=parent), "w", newline=newline, encoding="utf-8")
    except FileExistsError:
        if stale_removed or not stat.S_ISREG(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise _refusal(where, (), parent, name, OSError(errno.EEXIST, "exists"), "a temporary file") from None
    except OSError as error:
        raise _refusal(where, (), parent, name, error, "a temporary file") from None
    os.unlink(name, dir_fd=parent)
    return _exclusive(where, parent, name, newline, stale_removed=True)


def _refuse_link(where: Path, parent: int, name: str) -> None:
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
        raise _refusal(where, (), parent, name, OSError(errno.EEXIST, "exists"), "a regular file")


def rename(root: Path, source: Path | str, target: Path | str) -> None:
    """Rename root/source to root/target (replacing a regular file there), both directories reached as
    `_directory` does; a symlink or directory at the target is refused (UnsafePath)."""
    source, target = Path(source), Path(target)
    with _directory(root, source.parent) as origin, _directory(root, target.parent) as destination:
        where = root / target.parent
        _refuse_link(where, destination, target.name)
        try:
            os.replace(source.name, target.name, src_dir_fd=origin, dst_dir_fd=destination)
        except OSError as error:
            raise _refusal(root, _parts(root, source.parent), origin, source.name, error, "a regular file") from None


def remove(root: Path, relative: Path | str) -> None:
    """Remove root/relative (a file or a link, never what a link points to; a directory with all it holds), its
    parents reached as `_directory` does; nothing there is no error."""
    path = Path(relative)
    with _directory(root, path.parent) as parent:
        try:
            mode = os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path.name, dir_fd=parent)  # the fd-based walk: links inside are removed, not followed
        else:
            os.unlink(path.name, dir_fd=parent)


def refuse_links(root: Path, relative: Path | str) -> None:
    """UnsafePath naming the first symlink found in the tree root/relative (itself included): for directories
    that other code (TensorFlow's checkpoints and summaries) writes by path."""
    check_dirs(root, relative)
    for folder, directories, files in os.walk(root / relative):
        for link in (Path(folder) / name for name in (*directories, *files)):
            if link.is_symlink():
                raise UnsafePath(f"{link} is a symlink (to {os.readlink(link)}): refused, nothing is written "
                                 f"through links below {root}; remove it")
