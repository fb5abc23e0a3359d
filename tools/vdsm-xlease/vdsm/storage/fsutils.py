# Stand-in for vdsm's module of this name: only what xlease.py uses.
import os
def size(path):
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)
