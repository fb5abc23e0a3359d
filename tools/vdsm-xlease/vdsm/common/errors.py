# Stand-in for vdsm's module of this name: only what xlease.py uses.
class Base(Exception):
    msg = "Base"
    def __str__(self):
        return self.msg.format(self=self)
