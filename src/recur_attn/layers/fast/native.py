"""The C++ pointwise kernels of the fused paths (``csrc/pointwise.cpp``), built on first use.

On a CPU the elementwise part of a recurrent step (sigmoids, tanh, the cell
update, peepholes) costs about as much as the recurrent GEMM when it runs as
ten separate torch ops. The C++ kernels do it in one pass per row, and
:func:`lstm_forward_loop` / :func:`lstm_backward_loop` / :func:`gru_before_forward_loop` and the others run
the kernels' whole step loops without Python's per-step overhead (in float32/float64 with the recurrent GEMMs
fused with the elementwise step). The
extension is compiled with the machine's C++ compiler the first time a CPU
tensor needs it (about a minute; cached afterwards under
``$RECUR_ATTN_NATIVE_DIR`` or ``~/.cache/recur_attn/native``) and is used only
for CPU tensors; CUDA tensors run the torch-op kernels (:mod:`.lstm`).

``RECUR_ATTN_NATIVE`` chooses:

* ``auto`` (default): build and use it; if the build fails (no compiler), warn
  once with the compiler's message and run the torch-op kernels.
* ``1`` / ``on``: use it, and raise if it cannot be built.
* ``0`` / ``off``: never use it (the torch-op kernels everywhere).

:func:`set_mode` overrides the variable at run time (tests use it to compare
both paths); :func:`status` says which one runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

MODES = ("auto", "on", "off")
_ALIASES = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off", "": "auto"}
_SOURCE = Path(__file__).with_name("csrc") / "pointwise.cpp"

_state: dict = {"mode": None, "loaded": None, "error": None}

# bits of the LSTM kernels' flags (csrc/pointwise.cpp)
INPUT_GATE, FORGET_GATE, OUTPUT_GATE, INPUT_ACTIVATION, OUTPUT_ACTIVATION, COUPLED = 1, 2, 4, 8, 16, 32


def _parse(value: str) -> str:
    v = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if v not in MODES:
        raise ValueError(f"RECUR_ATTN_NATIVE={value!r}: valid values are auto, on (1), off (0)")
    return v


def mode() -> str:
    if _state["mode"] is None:
        _state["mode"] = _parse(os.environ.get("RECUR_ATTN_NATIVE", "auto"))
    return _state["mode"]


def set_mode(value: str) -> None:
    """Set the mode for this process ("auto", "on", "off"), overriding RECUR_ATTN_NATIVE."""
    _state["mode"] = _parse(value)


@contextlib.contextmanager
def using(value: str) -> Iterator[None]:
    """Run a block with another mode (tests compare the native and the torch-op kernels)."""
    old = mode()
    set_mode(value)
    try:
        yield
    finally:
        _state["mode"] = old


def _cflags() -> list[str]:
    """-fopenmp: ATen's parallel_for is an inline OpenMP region, serial in code compiled without it
    (the extension then shares torch's libgomp: same soname, loaded once)."""
    flags = ["-O3", "-ffast-math", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def _cpu_tag() -> str:
    """Builds use -march=native: key the cache by the CPU's flags, the compiler flags, torch and the source."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    h = hashlib.sha1()
    for part in (flags, platform.machine(), " ".join(_cflags()), torch.__version__, _SOURCE.read_bytes().decode()):
        h.update(part.encode())
    return h.hexdigest()[:12]


def build_dir() -> Path:
    root = os.environ.get("RECUR_ATTN_NATIVE_DIR") or Path.home() / ".cache" / "recur_attn" / "native"
    return Path(root) / _cpu_tag()


#: build folders of other sources / torch versions / CPUs unused this long are removed
STALE_DAYS = 14
_STAMP = "last_used"


def prune_stale_builds(current: Path, days: float = STALE_DAYS) -> list[Path]:
    """Stamp ``current`` as used now and remove its sibling build folders not used for ``days``
    (each change of the source builds into a new folder; another torch or CPU keeps its own
    folder alive by using it). Returns the removed folders."""
    current.mkdir(parents=True, exist_ok=True)
    (current / _STAMP).touch()
    cutoff = time.time() - days * 86400
    removed = []
    for d in current.parent.iterdir():
        if d == current or not d.is_dir() or not (d / "build.ninja").exists():  # only our build folders
            continue
        stamp = d / _STAMP
        used = (stamp if stamp.exists() else d).stat().st_mtime
        if used < cutoff:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _ninja_on_path() -> None:
    """torch builds with the ``ninja`` on PATH; the ``ninja`` dependency installs it next to this
    interpreter, which is not on PATH when a virtualenv's python runs without activation."""
    if shutil.which("ninja") is None:
        here = str(Path(sys.executable).parent)
        if Path(here, "ninja").exists():
            os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def _import_cpp_extension_load():
    """``torch.utils.cpp_extension.load``. Importing that module warns "No CUDA runtime is found" on every
    machine without a GPU that has a CUDA toolkit folder (it looks for CUDA_HOME at import), in every
    process that loads these CPU-only kernels: that one warning is silenced, the module's others are kept."""
    import logging

    class _NoCudaHomeWarning(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("No CUDA runtime is found")

    log = logging.getLogger("torch.utils.cpp_extension")
    quiet = _NoCudaHomeWarning()
    log.addFilter(quiet)
    try:
        from torch.utils.cpp_extension import load
    finally:
        log.removeFilter(quiet)
    return load


def _load() -> bool:
    if _state["loaded"] is not None:
        return _state["loaded"]
    try:
        load = _import_cpp_extension_load()
        _ninja_on_path()
        d = build_dir()
        d.mkdir(parents=True, exist_ok=True)
        load(name="recur_attn_native", sources=[str(_SOURCE)], extra_cflags=_cflags(), extra_ldflags=["-fopenmp"],
             build_directory=str(d), is_python_module=False, verbose=False)
        _state["loaded"] = True
        with contextlib.suppress(OSError):
            prune_stale_builds(d)
    except Exception as e:  # noqa: BLE001 -- any build failure: report it (auto) or raise (on)
        _state["loaded"], _state["error"] = False, f"{type(e).__name__}: {e}"
    return _state["loaded"]


def available() -> bool:
    """Whether the extension is (or can be) built on this machine."""
    return _load()


def fused_loops_for(x: Tensor) -> bool:
    """Whether the C++ loops that fuse the recurrent GEMM with the step (float32/float64 only) run for x."""
    return x.dtype in (torch.float32, torch.float64) and enabled_for(x)


def enabled_for(x: Tensor) -> bool:
    """Whether the kernels use the native pointwise step for tensors like x."""
    if x.device.type != "cpu":
        return False
    m = mode()
    if m == "off":
        return False
    if _load():
        return True
    if m == "on":
        raise RuntimeError(f"RECUR_ATTN_NATIVE=on but the C++ kernels could not be built: {_state['error']}")
    if not _state.get("warned"):
        _state["warned"] = True
        warnings.warn(
            "recur_attn: the C++ pointwise kernels could not be built, the fused CPU kernels run on torch ops "
            f"(slower; set RECUR_ATTN_NATIVE=off to silence). Reason: {_state['error']}", RuntimeWarning,
            stacklevel=3)
    return False


def state() -> str:
    """"on", "off" (RECUR_ATTN_NATIVE=off) or "unavailable" (the build failed)."""
    if mode() == "off":
        return "off"
    return "on" if _load() else "unavailable"


def status() -> str:
    """One line for logs and benchmark tables."""
    st = state()
    if st == "off":
        return "off (RECUR_ATTN_NATIVE=off): torch-op kernels"
    if st == "on":
        return f"on: C++ pointwise kernels ({build_dir()})"
    return f"unavailable ({_state['error']}): torch-op kernels"


def lstm_flags(cfg) -> int:
    """The flags argument of the LSTM kernels for an :class:`..lstm.LSTMConfig`."""
    return sum(bit for bit, on in (
        (INPUT_GATE, cfg.input_gate), (FORGET_GATE, cfg.forget_gate), (OUTPUT_GATE, cfg.output_gate),
        (INPUT_ACTIVATION, cfg.input_activation), (OUTPUT_ACTIVATION, cfg.output_activation),
        (COUPLED, cfg.coupled)) if on)


def lstm_forward_loop(P: Tensor, x2: Tensor, wih: Tensor, bias: Tensor, tc: int, whh_t: Tensor, wgh_t: Tensor | None,
                      a0: Tensor | None, C: Tensor, keep_c: bool, TC: Tensor | None, save_tc: bool, Hout: Tensor,
                      h0: Tensor, p_if: Tensor | None, p_o: Tensor | None, below: Tensor | None,
                      w_cd: Tensor | None, w_ld: Tensor | None, bs: list[int], GH: int, flags: int) -> None:
    """The whole forward loop of :func:`..lstm.lstm_forward` in C++ (see csrc/pointwise.cpp): in float32
    and float64 the recurrent GEMMs (fgr's gate recurrence included) are fused with the elementwise step
    (a register-blocked micro-kernel, the weights packed once per call). Weights in the kernel's gate
    order (:func:`lstm_infer` reads the cell's own through block maps)."""
    torch.ops.recur_attn_native.lstm_forward_loop(P, x2, wih, bias, tc, whh_t, wgh_t, a0, C, keep_c, TC, save_tc,
                                                  Hout, h0, p_if, p_o, below, w_cd, w_ld, bs, GH, flags, [])


def lstm_infer(x: Tensor, wih: Tensor, bias_ih: Tensor, bias_hh: Tensor, whh: Tensor, wgh: Tensor | None,
               wph: Tensor | None, w_cd: Tensor | None, w_ld: Tensor | None, below: Tensor | None, h0: Tensor,
               c0: Tensor, a0: Tensor | None, tc: int, flags: int, blocks: list[int], bs: list[int],
               want_cseq: bool) -> list[Tensor]:
    """One LSTM-family layer-direction's whole inference call (float32/float64) in one op:
    the biases summed and put in the kernel's gate order, fgr's gates mapped in and out, the buffers, the
    loop of :func:`lstm_forward_loop` and the final states (see csrc/pointwise.cpp). Weights, peepholes
    ``wph`` and fgr's ``a0`` in the cell's own layout; ``blocks``: for each internal gate block its block in
    the cell's layout, then with fgr each internal gated block's block of ``wgh``'s rows and columns; ``bs``
    the batch sizes of a length-sorted padded batch (empty: no padding). Returns [out, h_T, c_T, a_T (fgr;
    else empty), the cell sequence (want_cseq; else empty)], the final states at each row's end."""
    return torch.ops.recur_attn_native.lstm_infer(x, wih, bias_ih, bias_hh, whh, wgh, wph, w_cd, w_ld, below, h0,
                                                  c0, a0, tc, flags, blocks, bs, want_cseq)


def gru_before_forward_loop(A: Tensor, w1_t: Tensor, wz_t: Tensor | None, wn_t: Tensor, RH: Tensor, save: bool,
                            TH: Tensor | None, Hout: Tensor, h0: Tensor, bs: list[int], keep_z: bool) -> None:
    """The forward loop of :func:`..gru.gru_before_forward` in C++ (see csrc/pointwise.cpp)."""
    torch.ops.recur_attn_native.gru_before_forward_loop(A, w1_t, wz_t, wn_t, RH, save, TH, Hout, h0, bs, keep_z)


def gru_after_forward_loop(A: Tensor, GN: Tensor | None, whh_t: Tensor, bhn: Tensor, Hout: Tensor, h0: Tensor,
                           bs: list[int]) -> None:
    """The forward loop of :func:`..gru.gru_after_forward` (nn.GRU's form) in C++, float32/float64: A (T, B, 3H),
    the input projection, becomes r, z, n; GN (T, B, H; saved for the backward, else None) receives gh_n + b_hn;
    the recurrent GEMM fused with the step (see csrc/pointwise.cpp)."""
    torch.ops.recur_attn_native.gru_after_forward_loop(A, GN, whh_t, bhn, Hout, h0, bs)


def gru_after_infer(x: Tensor, wih: Tensor, bias_ih: Tensor, bias_hh: Tensor, whh: Tensor, h0: Tensor, tc: int,
                    bs: list[int]) -> list[Tensor]:
    """One `gru` layer-direction's whole inference call (float32/float64) in one op: the input projection in
    chunks of ``tc`` steps, W_hh packed once, the loop of :func:`gru_after_forward_loop`, h_T at each row's end
    (``bs`` as for :func:`lstm_infer`). The cell's own weights and biases. Returns [out, h_T]."""
    return torch.ops.recur_attn_native.gru_after_infer(x, wih, bias_ih, bias_hh, whh, h0, tc, bs)


def gru_before_infer(x: Tensor, proj, w1: Tensor, wz: Tensor | None, wn: Tensor, h0: Tensor, tc: int,
                     bs: list[int], keep_z: bool) -> list[Tensor]:
    """One `gru_cho`/MUT layer-direction's whole inference call (float32/float64) in one op: ``proj``'s input
    projection (a :class:`..gru.GRUBeforeProjection`) in chunks of ``tc`` steps, the weights packed once, the
    loop of :func:`gru_before_forward_loop`, h_T at each row's end. Returns [out, h_T]."""
    ident = {None: -1, "r": 0, "n": 2}[proj.identity]
    return torch.ops.recur_attn_native.gru_before_infer(x, proj.weight, proj.bias, ident, proj.projected,
                                                        proj.tanh_identity, proj.post_bias, w1, wz, wn, h0, tc,
                                                        bs, keep_z)


def gru_after_backward_loop(A: Tensor, GN: Tensor, DH: Tensor, dh0: Tensor, Hout: Tensor, h0: Tensor, whh: Tensor,
                            bs: list[int]) -> None:
    """The backward step loop of :class:`..gru.GRUAfterSequence` in C++, float32/float64: A becomes the
    pre-activation gradients [da_r, da_z, da_n], GN (gh_n in) da_n r (W_hn's gradient rows), DH is overwritten,
    dh0 receives step 0's direct gradient (the caller adds its GEMM terms)."""
    torch.ops.recur_attn_native.gru_after_backward_loop(A, GN, DH, dh0, Hout, h0, whh, bs)


def lstm_backward_loop(A: Tensor, C: Tensor, TC: Tensor | None, DH: Tensor, dc_a: Tensor, dc_b: Tensor,
                       dcseq: Tensor | None, whh: Tensor, wgh: Tensor | None, a0: Tensor | None, E: Tensor | None,
                       dwgh: Tensor | None, p_if: Tensor | None, p_o: Tensor | None, D: Tensor | None,
                       below: Tensor | None, dbelow: Tensor | None, w_cd: Tensor | None, w_ld: Tensor | None,
                       bs: list[int], flags: int, chunk: int = 0) -> None:
    """The step loop of :func:`..lstm.lstm_backward` in C++ (see csrc/pointwise.cpp). ``chunk``: steps per
    GEMM of fgr's gate-recurrence weight gradient."""
    torch.ops.recur_attn_native.lstm_backward_loop(A, C, TC, DH, dc_a, dc_b, dcseq, whh, wgh, a0, E, dwgh, p_if,
                                                   p_o, D, below, dbelow, w_cd, w_ld, bs, flags, chunk)


def elman_forward_loop(Hout: Tensor, whh_t: Tensor, h0: Tensor, units: list[int], bs: list[int], relu: bool) -> None:
    """The forward loop of :func:`..rnn.elman_forward` in C++ (float32/float64; see csrc/pointwise.cpp): Hout
    (T, B, H) holds the input projection and receives the outputs; the recurrent GEMM is fused with the
    step; clockwork (``units``: ticking units per step) skips the modules that do not tick."""
    torch.ops.recur_attn_native.elman_forward_loop(Hout, whh_t, h0, units, bs, relu)


def elman_infer(x: Tensor, wih: Tensor, bias_ih: Tensor, bias_hh: Tensor, whh: Tensor, h0: Tensor,
                units: list[int], bs: list[int], relu: bool) -> list[Tensor]:
    """One Elman/clockwork layer-direction's whole inference call (float32/float64) in one op: the input
    projection with both biases, the loop of :func:`elman_forward_loop`, h_T at each row's end (see
    csrc/pointwise.cpp). ``whh``: clockwork's already masked; ``bs`` as for :func:`lstm_infer`. Returns
    [out, h_T]."""
    return torch.ops.recur_attn_native.elman_infer(x, wih, bias_ih, bias_hh, whh, h0, units, bs, relu)


def elman_backward_loop(DH: Tensor, dh0: Tensor, Hout: Tensor, whh: Tensor, units: list[int], bs: list[int],
                        relu: bool) -> None:
    """The backward step loop of :class:`..rnn.ElmanSequence` in C++: DH (T, B, H), the outputs' gradients, is
    overwritten with the pre-activation gradients; dh0 receives the gradient that passes from step 0's
    non-ticking units (the GEMM term of step 0 is left to the caller)."""
    torch.ops.recur_attn_native.elman_backward_loop(DH, dh0, Hout, whh, units, bs, relu)


def gru_before_backward_loop(A: Tensor, DH: Tensor, dh0: Tensor, Hout: Tensor, h0: Tensor, w1: Tensor,
                             wz: Tensor | None, TH: Tensor | None, wn: Tensor, bs: list[int], keep_z: bool) -> None:
    """The backward step loop of :class:`..gru.GRUBeforeSequence` in C++ (see csrc/pointwise.cpp): A becomes the
    pre-activation gradients, DH is overwritten, dh0 receives step 0's direct gradient."""
    torch.ops.recur_attn_native.gru_before_backward_loop(A, DH, dh0, Hout, h0, w1, wz, TH, wn, bs, keep_z)
