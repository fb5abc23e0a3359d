# Stand-in for vdsm's module of this name: only what xlease.py uses.
BLOCK_SIZE_512 = 512
BLOCK_SIZE_4K = 4096
ALIGNMENT_1M = 1 << 20
ALIGNMENT_8M = 8 << 20
