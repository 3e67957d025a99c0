"""Emulation targets for ``numerics.nn.emulate``: one module per accelerator."""
