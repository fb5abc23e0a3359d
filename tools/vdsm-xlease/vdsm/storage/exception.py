# Stand-in for vdsm's module of this name: only what xlease.py uses.
class NoSuchLease(Exception):
    def __init__(self, lease_id):
        self.value = "lease={}".format(lease_id)
