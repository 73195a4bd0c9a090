import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from customer_session import _files
from customer_session._files import write_atomically

from .conftest import unwritable

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes, links and FIFOs")


@pytest.fixture
def umask_027():
    """Run the test under umask 027, whatever the process had."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def leftovers(directory):
    """The temporary files a write left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class TestWriteAtomically:
    def test_writes_a_new_file(self, tmp_path):
        """A new file holds exactly the bytes given, and nothing else is left beside it."""
        target = tmp_path / "states.mmd"
        write_atomically(target, b"stateDiagram-v2\n")
        assert target.read_bytes() == b"stateDiagram-v2\n"
        assert [p.name for p in tmp_path.iterdir()] == ["states.mmd"]

    def test_replaces_an_existing_file(self, tmp_path):
        """An existing file is replaced by the new bytes, a longer one not left with a tail."""
        target = tmp_path / "states.mmd"
        target.write_bytes(b"an older, longer diagram\n")
        write_atomically(str(target), b"new\n")
        assert target.read_bytes() == b"new\n"

    @POSIX
    @pytest.mark.usefixtures("umask_027")
    def test_a_new_file_gets_the_mode_a_plain_write_gives(self, tmp_path):
        """A new file's mode is 0o666 less the umask, as open(path, "wb") makes it."""
        target = tmp_path / "states.svg"
        write_atomically(target, b"<svg/>")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640

    @POSIX
    def test_an_existing_file_keeps_its_mode(self, tmp_path):
        """A replaced file keeps the permissions it had."""
        target = tmp_path / "states.svg"
        target.write_bytes(b"old")
        target.chmod(0o604)
        write_atomically(target, b"new")
        assert stat.S_IMODE(target.stat().st_mode) == 0o604

    @POSIX
    def test_a_read_only_file_is_refused_as_a_plain_write_refuses_it(self, tmp_path):
        """A file this process may not write is not replaced: PermissionError, old bytes kept."""
        target = tmp_path / "states.svg"
        target.write_bytes(b"old")
        with unwritable(target), pytest.raises(PermissionError) as caught:
            write_atomically(target, b"new")
        assert caught.value.filename == str(target)
        assert target.read_bytes() == b"old"

    def test_a_write_failing_half_way_keeps_the_old_file(self, tmp_path, full_disk):
        """A disk that fills up during the write leaves the old file whole and no temporary file."""
        target = tmp_path / "states.mmd"
        target.write_bytes(b"old diagram\n")
        with full_disk(16), pytest.raises(OSError) as caught:
            write_atomically(target, b"x" * 4096)
        assert caught.value.errno == errno.EFBIG
        assert caught.value.filename == str(target)
        assert target.read_bytes() == b"old diagram\n"
        assert leftovers(tmp_path) == []

    def test_an_interrupt_half_way_keeps_the_old_file(self, tmp_path, monkeypatch):
        """An interrupt after part of the bytes leaves the old file whole and no temporary file."""
        target = tmp_path / "states.mmd"
        target.write_bytes(b"old diagram\n")
        real_write = os.write

        def interrupted(descriptor, data):
            real_write(descriptor, bytes(data[:10]))
            raise KeyboardInterrupt

        monkeypatch.setattr(_files.os, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            write_atomically(target, b"x" * 4096)
        monkeypatch.undo()
        assert target.read_bytes() == b"old diagram\n"
        assert leftovers(tmp_path) == []

    def test_a_failing_rename_keeps_the_old_file(self, tmp_path, monkeypatch):
        """When the final rename fails, the old file stays and the temporary file is removed."""
        target = tmp_path / "states.mmd"
        target.write_bytes(b"old diagram\n")

        def refuse(source, destination):
            raise OSError(errno.EXDEV, "Invalid cross-device link", source, destination)

        monkeypatch.setattr(_files.os, "replace", refuse)
        with pytest.raises(OSError, match="Invalid cross-device link") as caught:
            write_atomically(target, b"new")
        assert (caught.value.filename, caught.value.filename2) == (str(target), None)
        assert target.read_bytes() == b"old diagram\n"
        assert leftovers(tmp_path) == []

    def test_a_missing_directory_names_the_path(self, tmp_path):
        """A path in a missing directory is a FileNotFoundError naming it, not a temporary file."""
        target = tmp_path / "missing" / "states.mmd"
        with pytest.raises(FileNotFoundError) as caught:
            write_atomically(target, b"new")
        assert caught.value.filename == str(target)

    def test_a_directory_is_refused(self, tmp_path):
        """A directory is not replaced: the OSError a plain write gives, the directory kept."""
        with pytest.raises(IsADirectoryError):
            write_atomically(tmp_path, b"new")
        assert tmp_path.is_dir()

    @POSIX
    def test_a_symbolic_link_is_written_through(self, tmp_path):
        """A link stays a link; the file it points to gets the bytes."""
        real = tmp_path / "real.mmd"
        real.write_bytes(b"old")
        link = tmp_path / "link.mmd"
        link.symlink_to(real)
        write_atomically(link, b"new")
        assert link.is_symlink()
        assert real.read_bytes() == b"new"

    @POSIX
    def test_a_fifo_is_written_in_place(self, tmp_path):
        """What is not a regular file (here a FIFO) is written to, not replaced."""
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            write_atomically(fifo, b"through the pipe")
            assert os.read(reader, 100) == b"through the pipe"
        finally:
            os.close(reader)
        assert stat.S_ISFIFO(fifo.stat().st_mode)

    @pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="needs /dev/stdout")
    @pytest.mark.parametrize("redirect", ["pipe", "file"])
    def test_dev_stdout_is_written_in_place(self, tmp_path, redirect):
        """/dev/stdout is written to, whether standard output is a pipe or a file."""
        script = (
            "from customer_session._files import write_atomically; "
            "write_atomically('/dev/stdout', b'the diagram')"
        )
        command = [sys.executable, "-c", script]
        if redirect == "pipe":
            done = subprocess.run(command, capture_output=True, check=True)
            assert done.stdout == b"the diagram"
        else:
            output = tmp_path / "out.txt"
            with output.open("wb") as stream:
                subprocess.run(command, stdout=stream, check=True)
            assert output.read_bytes() == b"the diagram"
        assert leftovers(tmp_path) == []
