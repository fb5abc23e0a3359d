# Stand-in for vdsm's module of this name: only what xlease.py uses.
def uninterruptible(f, *a):
    while True:
        try:
            return f(*a)
        except InterruptedError:
            pass
