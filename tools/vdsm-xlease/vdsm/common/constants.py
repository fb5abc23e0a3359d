# Stand-in for vdsm's module of this name: only what xlease.py uses.
EXT_DD='/bin/dd'
