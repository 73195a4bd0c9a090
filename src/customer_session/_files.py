"""Writing an output file whole or not at all.

The one way the package (``diagrams.render()``) and its command line write a file
the user named: a write that fails half-way (a full disk, an interrupt) must leave
the file as it was, not truncated, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from os import PathLike

# Collisions of 64 random bits are not expected; a few tries cover a name left over.
_TRIES: Final = 8
# What open(path, "wb") creates a file with; the OS takes the umask off, as for open().
_NEW_FILE_MODE: Final = 0o666


def write_atomically(path: str | PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``: afterwards it holds either what it held before or ``data``.

    The bytes go to a temporary file in ``path``'s directory, which is flushed to
    disk and then renamed over ``path`` (:func:`os.replace`, atomic on POSIX and
    Windows). If anything fails on the way, including an interrupt, the temporary
    file is removed and ``path`` is untouched. Otherwise it behaves as a plain
    ``open(path, "wb")`` would: a new file gets the mode such a write gives it
    (``0o666`` less the umask), an existing one keeps its mode and is refused if
    it is not writable, a symbolic link is written through (its target is
    replaced), and what is not a regular file (a pipe, a terminal) or is under
    ``/dev`` or ``/proc`` (``/dev/stdout``, even redirected to a file) is written
    in place, as a plain write would: it cannot, or must not, be replaced.

    Args:
        path: The file to write.
        data: Its new content.

    Raises:
        OSError: ``path`` cannot be written (a directory, a missing parent, no
            permission, a full disk); its ``filename`` is ``path``, never the
            temporary file's. Writing a new file in a directory also needs the
            right to create files there.
    """
    given = Path(path)
    try:
        mode: int | None = given.stat().st_mode  # through symbolic links, as open() goes
    except OSError:
        mode = None  # no file yet, or no way to reach it: creating one says which
    if (mode is not None and not stat.S_ISREG(mode)) or _names_a_descriptor(given):
        # A directory is refused here as open() refuses it; a device or pipe is written.
        with given.open("wb") as stream:
            stream.write(data)
        return
    target = given.resolve()  # replace the file a link points to, not the link
    if mode is not None and not os.access(target, os.W_OK):
        # A plain write would be refused; replacing the file must not get around that.
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
    try:
        temporary, descriptor = _create_beside(target)
    except OSError as error:
        error.filename = os.fspath(path)
        raise
    try:
        try:
            if mode is not None:
                temporary.chmod(stat.S_IMODE(mode))
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            # On disk before the rename: after a crash, the name holds old or new bytes.
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            error.filename, error.filename2 = os.fspath(path), None
        raise


def _names_a_descriptor(path: Path) -> bool:
    """Whether ``path`` is under ``/dev`` or ``/proc``, as ``/dev/stdout`` is.

    Such a path names a descriptor some process holds (a shell's redirection, maybe
    one that appends): even when it leads to a regular file, that file is the
    caller's to write, not to replace behind the descriptor's back.
    """
    return path.absolute().parts[:2] in {("/", "dev"), ("/", "proc")}


def _create_beside(target: Path) -> tuple[Path, int]:
    """Create a new, empty temporary file next to ``target``: its path and open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_TRIES - 1):
        temporary = target.with_name(f".{target.name}.{os.urandom(8).hex()}.tmp")
        with contextlib.suppress(FileExistsError):
            return temporary, os.open(temporary, flags, _NEW_FILE_MODE)
    temporary = target.with_name(f".{target.name}.{os.urandom(8).hex()}.tmp")
    return temporary, os.open(temporary, flags, _NEW_FILE_MODE)
