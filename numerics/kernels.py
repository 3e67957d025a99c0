"""Compiled CPU kernels (``kernels.c``): FlexiSAGA's PE-order GEMM, bfloat16 table lookups, SoftEx's
softmax and its denominator, HASTILY's UCLM softmax, the head and tail of a crossbar Linear, and the bit counts that
find a crossbar product's clipping candidates.

**PE-order GEMM.** The PEs round every product and every partial sum in k order
(``docs/hardware/flexisaga.md`` §2.2), so no reassociation is allowed: in eager torch that is one
elementwise pass over the whole output per k, 12-25x a ``torch.matmul`` of the same shape. The C
kernel runs it in one of two ways, chosen per call from the weight's :class:`PEPlan` (which callers keep
for a weight that comes back): blocks of 4 x 16 accumulators (8 x 16 with AVX-512) held in registers across all the
k steps that any of the block's 16 columns stores (so row-vector sparsity skips whole steps; 2-3x
``torch.matmul`` dense), or one column at a time over 64 rows, each column skipping exactly the weights
it does not store (column-vector sparsity, where a 16-column block stores nearly every k).

**Lookups.** Every elementwise function of one bfloat16 input (expp, the GELU, the softmax's
exponentials) is a gather from a 65,536-entry table. torch's ``index_select`` hands its threads work
per call, and on a busy core a call's share can wait for a whole time slice; small calls avoid that
but pay per call. The C loop hands out 32K codes at a time from a shared counter instead: a thread
that is held back keeps little work from the others. It looks up 16 codes before storing any (a plain
loop stores between every two lookups, since the output might alias the table: twice the time).

**SoftEx's softmax.** With one accumulator, D takes a multiply and an add per beat of every row
(``docs/hardware/softex.md`` §3.2): in torch two small passes per beat, each of which waits for every
thread; here one pass per row (:func:`mul_add_scan`, for ``accumulate``). The whole softmax is dozens
of small torch calls, which cost a small attention's softmax 70x ``torch.softmax``;
:func:`softex_softmax` runs both passes of a row in one loop: (2, 4, 10, 10) 420 -> 17 us,
(16, 12, 128, 128) 16 -> 5 ms.

**UCLM softmax.** Its fixed-point steps (``docs/hardware/hastily.md`` §2.4) are a dozen int64 passes
over every logit in torch; the C loop does them per row in one pass plus the sum and the division.

**Crossbar Linear.** Around its exact integer GEMMs, a crossbar Linear quantizes its input per row
(max, scale, round, clamp: five torch passes) and scales the GEMMs' results (per block, per column, per
row, to float32, plus the bias: four or more); each is one pass here (:func:`input_codes`,
:func:`scale_blocks`), with the same roundings in the same order. A small layer none of whose conversions
can clip, with one scale per column, runs all three in one call (:func:`crossbar_linear`; a 64 -> 64 layer
on 20 tokens 86 -> 47 us, ``nn.Linear`` 9 us). To find the conversions that may clip,
every product counts the set bits of each input bit plane per row block; in torch a gather writes 8
bytes per code, here one pass counts them (:func:`bit_counts`).

**Threads.** The calling thread and helper threads claim pieces of the work from a shared counter, and
the call returns once every piece is done: it never waits for a helper that has not started (on a busy
core that can take a whole time slice), and a helper that starts late finds nothing left. Work under
about a millisecond (:data:`SMALL`, :data:`SMALL_ELEMENTS`) stays on the calling thread.

**Building.** The kernels are compiled at first use with the system's C compiler (``$CC``, else
``cc``) into a cache folder (``$EDGENUM_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgenum``, else
``~/.cache/edgenum``), keyed by the source, the compiler and the CPU. Where nothing compiles, every
kernel function here returns ``None`` and the callers run eager torch, after one warning.
``EDGENUM_KERNELS=eager`` never compiles; ``EDGENUM_KERNELS=compiled`` makes a failed compilation an
error. Both paths give the same bits, as the tests check against the scalar references.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.c")
COLUMN_BLOCK = 16
"""Output columns that share one list of steps (the kernel's tile width, ``NB`` in the C file)."""
PANEL = 64
"""Rows of x the column path runs at once (``PANEL`` in the C file)."""
COLUMN_COST = 1.6
"""How much slower the column path runs one MAC than the block path: 1.4-1.9x measured (``bench/sparse_gemm.py``'s
other/path column on row vectors, where both paths run the same MACs)."""
FLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared")
"""Compiler flags: full optimisation, but every ``+`` and ``*`` rounds once, in source order."""
MODES = ("auto", "eager", "compiled")
SMALL = 1 << 22
"""Below this many multiply-adds a GEMM runs on the calling thread alone (about a millisecond of work)."""
SMALL_ELEMENTS = 1 << 20
"""Below this many elements a lookup, a softmax or a crossbar Linear's head or tail runs on the calling thread
alone: about a millisecond of work, which a helper starting late on a busy core would hold up more than it
helps."""

_lock = threading.Lock()
_state: dict = {}


def mode() -> str:
    """``$EDGENUM_KERNELS``: ``"auto"`` (default), ``"eager"`` or ``"compiled"``."""
    value = os.environ.get("EDGENUM_KERNELS", "auto")
    if value not in MODES:
        raise ValueError(f"EDGENUM_KERNELS must be one of {MODES}, got {value!r}")
    return value


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$EDGENUM_CACHE_DIR``, else the user's cache folder, else (where
    that cannot be written) a folder in the temporary directory."""
    if os.environ.get("EDGENUM_CACHE_DIR"):
        return Path(os.environ["EDGENUM_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgenum"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"edgenum-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _cpu_key() -> str:
    """The CPU's model and instruction set: a kernel built with -march=native runs only there."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _compile(cc: str) -> Path:
    """Build the kernel (or find it built) and return the shared library's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    source = SOURCE.read_bytes()
    folder = cache_dir()
    for arch in (("-march=native",), ()):
        key = hashlib.sha256(b"\0".join([source, cc.encode(), version.encode(), " ".join(FLAGS + arch).encode()]))
        key.update(_cpu_key().encode() + platform.machine().encode())
        target = folder / f"kernels-{key.hexdigest()[:16]}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        done = subprocess.run([cc, *FLAGS, *arch, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode == 0:
            os.replace(tmp, target)  # atomic: concurrent builders each write their own temporary file
            return target
        os.unlink(tmp)
        error = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    raise RuntimeError(f"{cc} failed to compile {SOURCE.name}: {error[0]}")


def _load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None where it cannot be (after one warning)."""
    with _lock:
        if "library" in _state:
            return _state["library"]
        library = None
        cc = os.environ.get("CC") or "cc"
        try:
            if shutil.which(cc) is None:
                raise RuntimeError(f"no C compiler {cc!r} on PATH")
            library = ctypes.CDLL(str(_compile(cc)))
            i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
            library.edgenum_pe_plan.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr]
            library.edgenum_pe_gemm_f32.argtypes = [i64, i64, i64, i64, ptr, ptr, i32, i32, ptr, ptr, ptr, ptr]
            library.edgenum_pe_columns_plan.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr]
            library.edgenum_pe_columns_f32.argtypes = [i64, i64, i64, i64, ptr, i32, ptr, ptr, ptr, ptr, ptr]
            for name in ("pe_plan", "pe_gemm_f32", "pe_columns_plan", "pe_columns_f32"):
                getattr(library, f"edgenum_{name}").restype = None
            library.edgenum_lookup16.argtypes = [ptr, i64, ptr, i32, ptr, ptr]
            library.edgenum_lookup16.restype = None
            f64 = ctypes.c_double
            widths = [i32] * 4  # frac_bits, index_bits, lut_frac_bits, exp_bits
            library.edgenum_uclm_softmax.argtypes = [i64, i64, ptr, f64, ptr, *widths, i64, i32, ptr, ptr, ptr]
            library.edgenum_uclm_softmax.restype = None
            library.edgenum_small_quotients.argtypes = [i64, ptr, ptr, ptr]
            library.edgenum_small_quotients.restype = None
            library.edgenum_bit_counts.argtypes = [i64, i64, i32, ptr, ptr, ptr]
            library.edgenum_bit_counts.restype = None
            library.edgenum_mul_add_scan.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr]
            library.edgenum_mul_add_scan.restype = None
            library.edgenum_softex_softmax.argtypes = [i64, i64, i32, ptr, ptr, ptr, ptr]
            library.edgenum_softex_softmax.restype = None
            library.edgenum_input_codes.argtypes = [i64, i64, ptr, f64, ptr, ptr, ptr, ptr]
            library.edgenum_input_codes.restype = None
            library.edgenum_crossbar_linear.argtypes = [i64, i64, i64, ptr, f64, ptr, ptr, ptr, ptr, ptr, ptr]
            library.edgenum_crossbar_linear.restype = None
            library.edgenum_scale_blocks.argtypes = [i64, i64, i64, ptr, i32, ptr, ptr, ptr, ptr, ptr]
            library.edgenum_scale_blocks.restype = None
            library.edgenum_wait.argtypes = [ptr]
            library.edgenum_wait.restype = None
            library.edgenum_claim_all.argtypes = [i64, i64, ptr]
            library.edgenum_claim_all.restype = None
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            if mode() == "compiled":
                raise RuntimeError(f"EDGENUM_KERNELS=compiled, but the kernels are unavailable: {error}") from error
            warnings.warn(
                f"edgenum: the compiled kernels are unavailable ({error}); FlexiSAGA's sequential GEMM (10-25x "
                "slower), bfloat16 lookups, the SoftEx denominator, the UCLM softmax and the crossbar Linears' head, "
                "tail and clipping candidates run in eager torch. Set CC to a C compiler, or EDGENUM_KERNELS=eager "
                "to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )
            library = None
        _state["library"] = library
        return library


def _library() -> ctypes.CDLL | None:
    """The compiled kernels; None with ``EDGENUM_KERNELS=eager`` or where nothing compiles."""
    return None if mode() == "eager" else _load()


def available() -> bool:
    """Whether the kernels run compiled here (compiles on first call)."""
    return _library() is not None


def _pool() -> ThreadPoolExecutor:
    """Helper threads, one per core beyond the caller's. A helper that starts late (a busy pool, a
    busy core) finds the work taken and returns at once."""
    with _lock:
        pid, pool = _state.get("pool", (None, None))
        if pid != os.getpid():  # none yet, or inherited through fork(), which keeps no threads
            pool = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="edgenum-kernels")
            _state["pool"] = os.getpid(), pool
        return pool


def _helper(function, args: tuple, counter) -> None:
    """One helper's share: ``counter`` is held here so that a helper starting after the call has returned
    still finds it (and claims nothing)."""
    function(*args)


def _run(function, args: tuple, work: int, small: int) -> None:
    """``function(*args, next)`` on this thread and, where ``work`` reaches ``small``, on helpers, one per
    further torch thread: all claim their pieces from ``next``, a fresh shared counter. The call returns
    once every piece is done, without waiting for helpers that claimed none; through Ctrl-C too, since
    pieces being done write into tensors this call owns: the calling thread then claims what is left
    itself (a call after a finished one finds nothing) and waits before the interrupt goes on. Without
    helpers a call that returns has done every piece, and nothing more is asked (small calls come by
    the hundred per pass)."""
    counter = (ctypes.c_int64 * 3)()
    args = (*args, ctypes.addressof(counter))
    helpers = torch.get_num_threads() - 1 if work >= small else 0
    interrupted = None
    try:
        for _ in range(helpers):
            _pool().submit(_helper, function, args, counter)
        function(*args)  # ctypes releases the GIL: the helpers run alongside
        if not helpers:
            return
    except KeyboardInterrupt as error:
        interrupted = error
    while True:
        try:
            function(*args)  # nothing left after a finished call; the rest of an interrupted one
            _state["library"].edgenum_wait(ctypes.addressof(counter))
            break
        except KeyboardInterrupt as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted


@dataclasses.dataclass
class PEPlan:
    """How the PE-order GEMM walks one weight (G, K, N): what it reads of the weight's zeros, computed
    once per weight (:func:`pe_plan`) and valid while the weight is unchanged. Holds no reference to the
    weight."""

    shape: tuple[int, int, int]
    """The weight's (G, K, N)."""
    steps: torch.Tensor
    """int32 (G·ceil(N/16), K): per 16-column block, the k where it stores all its weights, or ~k where
    some; its first ``counts`` entries are used."""
    counts: torch.Tensor
    """int64: the number of steps of each block."""
    packed: torch.Tensor
    """float32 (G·ceil(N/16), K, 16): each block's weights at its steps, in step order (zeros past N)."""
    block_steps: int
    """All blocks' steps together."""
    stored: int
    """Stored weights (bits not those of +0)."""
    partial: int
    """Steps listed as ~k."""
    columns: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    """(offsets, ks, values): each column's stored k and weights, built the first time the column path runs
    (:meth:`column_lists`)."""

    def path(self, rows: int) -> str:
        """``"columns"`` where one column at a time costs less than blocks for ``rows`` rows of x, else
        ``"blocks"``: a block step is 16 MACs per row; the column path pads the rows to 64 and runs a
        stored weight's MACs :data:`COLUMN_COST` times slower (measured)."""
        padded = -(-rows // PANEL) * PANEL
        return "columns" if COLUMN_COST * padded * self.stored < rows * COLUMN_BLOCK * self.block_steps else "blocks"

    def column_lists(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:attr:`columns`, built from ``weight`` (contiguous, the plan's own) by the compiled kernel the first
        time they are asked for."""
        if self.columns is None:
            g, k, n = self.shape
            offsets = torch.empty(g * n + 1, dtype=torch.int64)
            ks, values = torch.empty(self.stored, dtype=torch.int32), torch.empty(self.stored, dtype=torch.float32)
            _library().edgenum_pe_columns_plan(
                g, k, n, weight.data_ptr(), offsets.data_ptr(), ks.data_ptr(), values.data_ptr()
            )
            self.columns = offsets, ks, values
        return self.columns


def pe_plan(weight: torch.Tensor) -> PEPlan | None:
    """The :class:`PEPlan` of a float32 CPU ``weight`` (G, K, N); None where the kernel is unavailable or
    the weight is not of that kind."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 3:
        return None
    library = _library()
    if library is None:
        return None
    g, k, n = weight.shape
    weight = weight.contiguous()
    blocks = g * -(-n // COLUMN_BLOCK)
    steps = torch.empty(blocks, k, dtype=torch.int32)
    counts = torch.empty(blocks, dtype=torch.int64)
    packed = torch.empty(blocks, k, COLUMN_BLOCK, dtype=torch.float32)
    totals = torch.empty(3, dtype=torch.int64)
    args = (steps.data_ptr(), counts.data_ptr(), packed.data_ptr(), totals.data_ptr())
    library.edgenum_pe_plan(g, k, n, weight.data_ptr(), *args)
    return PEPlan((g, k, n), steps, counts, packed, *totals.tolist())


def pe_gemm(
    x: torch.Tensor, weight: torch.Tensor, fused: bool, plan: PEPlan | None = None, path: str | None = None
) -> torch.Tensor | None:
    """``x`` (G, M, K) times ``weight`` (G, K, N), float32 on the CPU, in PE order: per output, acc
    from +0 adds fl(x·w) (``fused``: fl(acc + x·w)) for k = 0..K-1 where the weight is stored (its bits
    are not +0's). ``plan``: the weight's :class:`PEPlan`, if the caller keeps one; ``path``:
    ``"blocks"`` or ``"columns"`` instead of the plan's choice (both give the same bits). None where the
    kernel is unavailable or the tensors are not float32 CPU tensors: the caller then runs its eager loop."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return None
    library = _library()
    if library is None:
        return None
    g, m, k = x.shape
    n = weight.shape[2]
    x, weight = x.contiguous(), weight.contiguous()
    plan = plan or pe_plan(weight)
    if plan.shape != tuple(weight.shape):
        raise ValueError(f"the plan is for a weight of shape {plan.shape}, not {tuple(weight.shape)}")
    y = torch.empty(g, m, n, dtype=torch.float32)
    if y.numel() == 0:
        return y
    path = path or plan.path(m)
    if path == "columns":
        columns = plan.column_lists(weight)
        panels = -(-m // PANEL)
        xp = torch.zeros(g, panels * PANEL, k, dtype=torch.float32)
        xp[:, :m] = x
        xp = xp.view(g, panels, PANEL, k).transpose(2, 3).contiguous()  # (G, P, K, 64): a k's 64 rows adjacent
        args = (g, m, k, n, xp.data_ptr(), int(fused), *(t.data_ptr() for t in columns), y.data_ptr())
        _run(library.edgenum_pe_columns_f32, args, panels * PANEL * plan.stored, SMALL)
    elif path == "blocks":
        masking = plan.partial > 0 and not fused and not bool(torch.isfinite(x).all())
        args = (g, m, k, n, x.data_ptr(), plan.packed.data_ptr(), int(fused), int(masking))
        args += (plan.steps.data_ptr(), plan.counts.data_ptr(), y.data_ptr())
        _run(library.edgenum_pe_gemm_f32, args, m * COLUMN_BLOCK * plan.block_steps, SMALL)
    else:
        raise ValueError(f"path must be 'blocks' or 'columns', got {path!r}")
    return y


def lookup16(table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor | None:
    """``table[codes]``: ``table`` (65536,) of a 2- or 4-byte dtype, ``codes`` a uint16 CPU tensor;
    the result has the codes' shape and the table's dtype. None where the kernel is unavailable or the
    tensors are not of that kind: the caller then gathers with torch."""
    if (
        codes.device.type != "cpu"
        or table.device.type != "cpu"
        or codes.dtype != torch.uint16
        or table.element_size() not in (2, 4)
    ):
        return None
    library = _library()
    if library is None:
        return None
    codes, table = codes.contiguous(), table.contiguous()
    out = torch.empty(codes.shape, dtype=table.dtype)
    args = (codes.data_ptr(), codes.numel(), table.data_ptr(), table.element_size(), out.data_ptr())
    _run(library.edgenum_lookup16, args, codes.numel(), SMALL_ELEMENTS)
    return out


def uclm_softmax_codes(x: torch.Tensor, c: float, lut: torch.Tensor, config) -> torch.Tensor | None:
    """HASTILY's UCLM softmax codes along the last dimension of float64 logits ``x`` (a row of -inf gives
    zeros), ``c`` = scale·log2(e)·2**frac_bits, ``lut`` the int64 table, ``config`` a
    :class:`numerics.uclm.UCLMConfig`. None where the kernel does not apply: not a CPU float64 tensor,
    ``er_mode="linear"``, widths whose int64 products could overflow, or ``x`` holding NaN or +inf (checked
    in the same pass); the caller then computes it in torch, or reports the bad values."""
    if x.device.type != "cpu" or x.dtype != torch.float64 or config.er_mode != "one":
        return None
    if config.out_bits + config.exp_bits + 2 > 62:  # 2·Q·e + S must stay below 2**63
        return None
    library = _library()
    if library is None:
        return None
    x = x.contiguous()
    codes = torch.empty(x.shape, dtype=torch.int64)
    if codes.numel() == 0:
        return codes
    lut = lut.to(torch.int64).contiguous()
    args = (x.numel() // x.shape[-1], x.shape[-1], x.data_ptr(), c, lut.data_ptr(), config.frac_bits)
    args += (config.index_bits, config.lut_frac_bits, config.exp_bits, config.out_max)
    bad = ctypes.c_int64(0)
    args += (int(config.div_rounding == "half_up"), codes.data_ptr(), ctypes.addressof(bad))
    _run(library.edgenum_uclm_softmax, args, x.numel(), SMALL_ELEMENTS)
    return None if bad.value else codes


def bit_counts(u: torch.Tensor, bits: int) -> torch.Tensor | None:
    """How many of the uint8 codes ``u`` (..., rows), rows <= 255, have bit t set, for t < ``bits`` <= 8: int64
    (..., bits), one pass. None where the kernel is unavailable or ``u`` is not such a CPU tensor: the caller
    counts with torch."""
    rows = u.shape[-1] if u.dim() else 0
    if u.device.type != "cpu" or u.dtype != torch.uint8 or not 1 <= bits <= 8 or rows > 255:
        return None
    library = _library()
    if library is None:
        return None
    u = u.contiguous()
    counts = torch.empty(*u.shape[:-1], bits, dtype=torch.int64)
    groups = counts.numel() // bits
    _run(library.edgenum_bit_counts, (groups, rows, bits, u.data_ptr(), counts.data_ptr()), u.numel(), SMALL_ELEMENTS)
    return counts


def mul_add_scan(d: torch.Tensor, factor: torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
    """SoftEx's one-accumulator denominator: per row, ``d = fl(d·f_k)`` then ``d = fl(d + s_k)`` for each
    beat k, from ``d`` (rows,) with ``factor`` and ``s`` (rows, beats), float32 CPU tensors. None where the
    kernel is unavailable or the tensors are not of that kind: the caller runs its loop over the beats."""
    tensors = (d, factor, s)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    library = _library()
    if library is None:
        return None
    d, factor, s = (t.contiguous() for t in tensors)
    out = torch.empty_like(d)
    args = (s.shape[0], s.shape[1], d.data_ptr(), factor.data_ptr(), s.data_ptr(), out.data_ptr())
    _run(library.edgenum_mul_add_scan, args, s.numel(), SMALL_ELEMENTS)
    return out


def softex_softmax(rows: torch.Tensor, lanes: int, table: torch.Tensor) -> torch.Tensor | None:
    """SoftEx's softmax with one accumulator along the last dimension of ``rows`` (rows, L), a bfloat16 CPU
    tensor, with beats of ``lanes`` and ``table`` the float32 expp table: bfloat16, as
    :func:`numerics.softex.softmax` computes it. None where the kernel is unavailable or the tensors are not
    of that kind: the caller runs the torch steps."""
    if rows.device.type != "cpu" or rows.dtype != torch.bfloat16 or rows.dim() != 2 or table.dtype != torch.float32:
        return None
    library = _library()
    if library is None:
        return None
    rows, table = rows.contiguous(), table.contiguous()
    out = torch.empty(rows.shape, dtype=torch.bfloat16)
    if out.numel() == 0:
        return out
    args = (rows.shape[0], rows.shape[1], lanes, rows.data_ptr(), table.data_ptr(), out.data_ptr())
    _run(library.edgenum_softex_softmax, args, rows.numel(), SMALL_ELEMENTS)
    return out


def input_codes(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A crossbar Linear's input codes with one dynamic scale per row, as
    :func:`numerics.quant.quantize_input` computes them (round half to even): float32 codes of ``x``'s
    shape and float64 scales (..., 1). None where the kernel does not apply (not a non-empty float32 CPU
    tensor) or a row holds NaN or Inf: the caller's torch path then reports it."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() == 0 or x.numel() == 0:
        return None
    library = _library()
    if library is None:
        return None
    x = x.detach().contiguous()
    length = x.shape[-1]
    codes = torch.empty(x.shape, dtype=torch.float32)
    scales = torch.empty(*x.shape[:-1], 1, dtype=torch.float64)
    bad = ctypes.c_int64(0)
    args = (x.numel() // length, length, x.data_ptr(), float((1 << (bits - 1)) - 1), codes.data_ptr())
    args += (scales.data_ptr(), ctypes.addressof(bad))
    _run(library.edgenum_input_codes, args, x.numel(), SMALL_ELEMENTS)
    return None if bad.value else (codes, scales)


SMALL_LINEAR = 1 << 18
"""Up to this many multiply-adds (and K <= 1024) a crossbar Linear that cannot clip runs as one compiled call
(:func:`crossbar_linear`): its GEMM is a plain loop, slower than BLAS on large layers, but a small layer's
three calls (codes, GEMM, scaled sum) cost more than its arithmetic."""


def crossbar_linear(x: torch.Tensor, bits: int, w: torch.Tensor, c: torch.Tensor, bias=None) -> torch.Tensor | None:
    """A small crossbar Linear none of whose conversions can clip, with one scale per column, in one pass:
    :func:`input_codes` of ``x`` (M, K), the exact product with the float32 weight codes ``w`` (K, N) and
    :func:`scale_blocks` of that one block with the float64 column scales ``c`` (N,) and a float32 ``bias``.
    None where the kernel does not apply (not such CPU tensors, K over 1024, more than :data:`SMALL_LINEAR`
    multiply-adds) or a row holds NaN or Inf: the caller then takes the general path, which reports it."""
    m, k = x.shape
    n = w.shape[1]
    if x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or c.dtype != torch.float64:
        return None
    if not 0 < k <= 1024 or m * k * n > SMALL_LINEAR or (bias is not None and bias.dtype != torch.float32):
        return None
    library = _library()
    if library is None:
        return None
    x, w, c = x.detach().contiguous(), w.contiguous(), c.contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    bad = ctypes.c_int64(0)
    args = (m, k, n, x.data_ptr(), float((1 << (bits - 1)) - 1), w.data_ptr(), c.data_ptr())
    args += (0 if bias is None else bias.data_ptr(), out.data_ptr(), ctypes.addressof(bad))
    _run(library.edgenum_crossbar_linear, args, m * k * n, SMALL)
    return None if bad.value else out


def scale_blocks(parts, c: torch.Tensor, s: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """float32((Σ_p c[p]·parts[p]) · s) (+ ``bias``) of a crossbar Linear's block results ``parts`` (P
    tensors (M, N), all float32 or all float64), with its scales ``c`` (P, N) and its rows' input scales
    ``s`` (M, 1) or one value, float64: each product and each sum rounded once in float64, the sum in
    increasing p; a float32 ``bias`` (N,) is then added in float32. None where the kernel does not apply
    (not CPU tensors of those dtypes); the caller computes it in torch."""
    dtype = parts[0].dtype
    tensors = (*parts, c, s) + (() if bias is None else (bias,))
    if any(t.device.type != "cpu" for t in tensors) or dtype not in (torch.float32, torch.float64):
        return None
    if any(t.dtype != dtype for t in parts) or c.dtype != torch.float64 or s.dtype != torch.float64:
        return None
    if bias is not None and bias.dtype != torch.float32:
        return None
    library = _library()
    if library is None:
        return None
    rows, n = parts[0].shape
    parts, c = [t.contiguous() for t in parts], c.contiguous()  # kept alive by these names during the call
    bias = None if bias is None else bias.contiguous()
    pointers = (ctypes.c_void_p * len(parts))(*[t.data_ptr() for t in parts])
    s = s.reshape(-1).expand(rows).contiguous()
    out = torch.empty(rows, n, dtype=torch.float32)
    args = (len(parts), rows, n, ctypes.addressof(pointers), int(dtype == torch.float64), c.data_ptr(), s.data_ptr())
    args += (0 if bias is None else bias.data_ptr(), out.data_ptr())
    _run(library.edgenum_scale_blocks, args, len(parts) * rows * n, SMALL_ELEMENTS)
    return out
