#!/usr/bin/python3
"""A FUSE pass-through of one directory, for freezing a host's storage in
tests: SIGSTOP this process and every I/O through the mount hangs, as with
a hung NFS server, while other processes still reach the backing files.

usage: fuse-passthrough.py BACKING_DIR MOUNTPOINT   (runs in the foreground)

Files are opened with direct_io, so every read and write (O_DIRECT lease
I/O included) reaches this process and, through pread/pwrite, the backing
file; nothing is cached in the mount's page cache.
"""
import errno
import os
import sys

import fusepy


class Passthrough(fusepy.Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)

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
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    fusepy.FUSE(Passthrough(sys.argv[1]), sys.argv[2], foreground=True,
                nothreads=False, raw_fi=True, allow_other=True)
