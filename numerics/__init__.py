"""Bit-accurate emulators of edge-accelerator arithmetic, and drop-in PyTorch modules.

Depends on nothing else in edgenum.
"""
