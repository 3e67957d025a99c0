"""Cycle and energy models of the emulated accelerators."""
