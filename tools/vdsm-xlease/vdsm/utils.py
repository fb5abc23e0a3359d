# Stand-in for vdsm's module of this name: only what xlease.py uses.
from contextlib import contextmanager
@contextmanager
def closing(obj):
    try:
        yield obj
    finally:
        obj.close()
