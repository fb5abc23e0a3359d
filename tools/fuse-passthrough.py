#!/usr/bin/python3
"""A FUSE pass-through of one directory, for freezing a host's storage in
tests: SIGSTOP this process and every I/O through the mount hangs, as with
a hung NFS server, while other processes still reach the backing files.

With FAIL_FLAG given, every read and write through the mount fails with
EIO while the file FAIL_FLAG exists (a dead disk path): tests create it to
make renewals fail at once, and remove it to heal the path.

With --delay-file DELAY_FILE, every read and write through the mount first
sleeps for the number of seconds written in DELAY_FILE (a missing or empty
file: no delay): slow storage, for tests of the daemon's early warnings.

usage: fuse-passthrough.py BACKING_DIR MOUNTPOINT [FAIL_FLAG] [--delay-file DELAY_FILE]
       (runs in the foreground)

Files are opened with direct_io, so every read and write (O_DIRECT lease
I/O included) reaches this process and, through pread/pwrite, the backing
file; nothing is cached in the mount's page cache.
"""
import errno
import os
import sys
import time

import fusepy


class Passthrough(fusepy.Operations):
    def __init__(self, root, fail_flag=None, delay_file=None):
        self.root = os.path.realpath(root)
        self.fail_flag = fail_flag
        self.delay_file = delay_file

    def _check(self):
        # One stat per I/O: cheap next to the fsync every write does.
        if self.fail_flag and os.path.exists(self.fail_flag):
            raise fusepy.FuseOSError(errno.EIO)
        if self.delay_file:
            try:
                with open(self.delay_file) as f:
                    delay = float(f.read().strip() or 0)
            except (OSError, ValueError):
                delay = 0
            if delay > 0:
                time.sleep(delay)

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        return {k: getattr(st, k) for k in (
            "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
            "st_nlink", "st_size", "st_uid")}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def open(self, path, fi):
        # O_DIRECT is the daemon's business; the backing file is read and
        # written with pread/pwrite, which O_DIRECT readers elsewhere see.
        flags = fi.flags & ~os.O_DIRECT
        fi.fh = os.open(self._p(path), flags)
        fi.direct_io = True
        return 0

    def create(self, path, mode, fi=None):
        fd = os.open(self._p(path), os.O_WRONLY | os.O_CREAT, mode)
        if fi is not None:
            fi.fh = fd
            fi.direct_io = True
            return 0
        return fd

    def read(self, path, size, offset, fi):
        self._check()
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
        self._check()
        n = os.pwrite(fi.fh, data, offset)
        os.fsync(fi.fh)
        return n

    def truncate(self, path, length, fh=None):
        os.truncate(self._p(path), length)

    def flush(self, path, fi):
        return 0

    def fsync(self, path, datasync, fi):
        os.fsync(fi.fh)
        return 0

    def release(self, path, fi):
        os.close(fi.fh)
        return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    delay_file = None
    if "--delay-file" in args:
        i = args.index("--delay-file")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        delay_file = args[i + 1]
        del args[i:i + 2]
    if len(args) not in (2, 3):
        sys.exit(__doc__)
    flag = args[2] if len(args) == 3 else None
    fusepy.FUSE(Passthrough(args[0], flag, delay_file), args[1], foreground=True,
                nothreads=False, raw_fi=True, allow_other=True)
