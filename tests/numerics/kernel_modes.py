"""Run a block with the compiled kernels on or off (``EDGENUM_KERNELS``), to test both paths."""

import contextlib
import os


@contextlib.contextmanager
def kernel_mode(value: str):
    old = os.environ.get("EDGENUM_KERNELS")
    os.environ["EDGENUM_KERNELS"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["EDGENUM_KERNELS"]
        else:
            os.environ["EDGENUM_KERNELS"] = old
