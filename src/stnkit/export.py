"""Export a model to ONNX or TorchScript with a dynamic batch dimension, checked against PyTorch.

:func:`export_model` works on any ``nn.Module`` (stnkit's classifiers, a
:class:`~stnkit.nn.SpatialTransformer` alone or in front of another net). It
exports the model in eval mode, writes the file atomically (a ``PATH.part``
beside the target, renamed over it only once the export has been checked, see
:mod:`stnkit._io`), then runs the exported file on random inputs of several
batch sizes, at least one of them not the example's, and compares with eager
PyTorch: onnxruntime for ONNX, ``torch.jit.load`` for TorchScript.

ONNX goes through the ``torch.export``-based exporter (``dynamo=True``).
stnkit's sampler is ``F.grid_sample``, exported as ONNX ``GridSample``, which
exists from opset 16 on: every family (translation ... tps) with every
``mode`` and ``padding_mode`` exports and matches PyTorch at opsets 16 to 23
(checked with torch 2.13, onnx 1.23, onnxruntime 1.32). Below opset 16 there is
no GridSample; the exporter then silently keeps opset 18, so
:func:`export_model` refuses such an ``opset`` for a model that samples.

Volumes: a 3-D :class:`~stnkit.nn.SpatialTransformer` samples a 5-D input, exported
as a 5-D ``GridSample``. The ONNX standard has N-D GridSample from opset 20 (opsets 16
to 19 define it on 4-D input only), and 20 is the exporter's default. onnxruntime's
CPU build runs it (torch 2.13, onnxruntime 1.32: the affine and projective 3-D
transformers match PyTorch to ~5e-7, dynamic batch); it also runs the 5-D node in
files of opsets 16 to 19, which other runtimes need not accept, so keep the default
(or ``opset >= 20``) for a volume model meant to run elsewhere.

Only torch is needed for TorchScript; ONNX needs ``onnx`` and ``onnxscript``
(and ``onnxruntime`` when ``check=True``), imported when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ._io import atomic_path

FORMATS = ("onnx", "torchscript")
# ONNX GridSample (what F.grid_sample exports to) exists from this opset on
MIN_GRID_SAMPLE_OPSET = 16
DEFAULT_ATOL = 1e-4


def export_model(
    model: nn.Module,
    example: Tensor | tuple[Tensor, ...],
    path: str | os.PathLike,
    format: str = "onnx",
    check: bool = True,
    opset: int | None = None,
    *,
    batch_sizes: tuple[int, ...] | None = None,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> dict:
    """Export ``model`` with a dynamic batch dimension to ``path``, checked against PyTorch.

    The model runs in eval mode while exporting and checking (its training mode
    is restored afterwards), without gradients. The first dimension of every
    input is exported as dynamic; an example batch of 1 is repeated to 2 first
    (``torch.export`` would otherwise fix the batch at 1).

    With ``check=True`` the exported file (still at ``PATH.part``) is run on
    random inputs of ``batch_sizes`` (default: three sizes, two of them other
    than the example's), drawn uniformly in ``[example.min(), example.max()]``
    with ``seed``, and every output is compared with the model's; the file only
    replaces ``path`` when the largest absolute difference is at most ``atol``.

    Args:
        model: any ``nn.Module`` whose ``forward`` takes the example's tensors.
        example: an input batch ``(B, ...)`` or a tuple of them (same ``B``).
        path: the file to write (its parent is created); must not be a directory.
        format: ``"onnx"`` or ``"torchscript"`` (``torch.jit.trace``).
        check: run the exported file and compare with PyTorch.
        opset: ONNX opset; ``None`` is the exporter's default. Only with ``format="onnx"``.
        batch_sizes: the batch sizes of the check (positive ints).
        atol: the largest absolute difference the check accepts.
        seed: seed of the check's random inputs.

    Returns:
        ``{"format", "path", "opset", "export_batch_size", "batch_sizes_checked",
        "max_abs_diff", "atol"}``; ``opset`` is the one in the written file
        (``None`` for TorchScript), ``max_abs_diff`` is ``None`` and
        ``batch_sizes_checked`` empty when ``check=False``.

    Raises:
        TypeError, ValueError: bad arguments (one line naming the argument).
        ImportError: onnx, onnxscript or onnxruntime missing for an ONNX export or check.
        RuntimeError: the export failed, could not reach ``opset``, or differs
            from PyTorch by more than ``atol`` (then ``path`` is left untouched).

    Example:
        >>> import tempfile
        >>> from stnkit.models import create
        >>> with tempfile.TemporaryDirectory() as d:
        ...     info = export_model(create("cnn"), torch.rand(2, 1, 28, 28), Path(d) / "cnn.pt", "torchscript")
        >>> info["batch_sizes_checked"], info["max_abs_diff"] < 1e-4
        ([1, 3, 7], True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    inputs = _check_example(example)
    path = Path(os.fspath(path))
    if path.is_dir():
        raise ValueError(f"path must be a file to write, got the directory {str(path)!r}")
    if opset is not None:
        if format != "onnx":
            raise ValueError(f"opset only applies to format='onnx', got opset={opset!r} with format={format!r}")
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < 1:
            raise ValueError(f"opset must be a positive int or None, got {opset!r}")
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {type(check).__name__}")
    if not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    b = inputs[0].shape[0]
    if batch_sizes is None:
        batch_sizes = (1, b + 1, 2 * b + 3)
    elif not (
        isinstance(batch_sizes, (tuple, list))
        and batch_sizes
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in batch_sizes)
    ):
        raise ValueError(f"batch_sizes must be a non-empty sequence of positive ints, got {batch_sizes!r}")
    if format == "onnx":
        _require("onnx", "ONNX export")
        _require("onnxscript", "ONNX export")
        if check:
            _require("onnxruntime", "the ONNX check (or pass check=False)")
    if b == 1:  # torch.export specialises a batch of 1: export with 2
        inputs = tuple(torch.cat([x, x]) for x in inputs)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), atomic_path(path) as tmp:
            if format == "onnx":
                program = _onnx_program(model, inputs, opset)
                with _quiet():
                    program.save(str(tmp), external_data=False)  # one self-contained file (models under 2 GB)
                written_opset = _check_onnx_file(model, tmp, opset)
            else:
                with _quiet():
                    torch.jit.save(_trace(model, inputs), str(tmp))
                written_opset = None
            diff, checked = None, []
            if check:
                diff, checked = _check(model, inputs, tmp, format, list(batch_sizes), seed)
                if not diff <= atol:
                    raise RuntimeError(
                        f"the exported {format} model differs from PyTorch by {diff:.3g} > atol={atol:g} "
                        f"on batch sizes {checked}; {str(path)!r} was not written"
                    )
    finally:
        model.train(was_training)
    return {
        "format": format,
        "path": str(path),
        "opset": written_opset,
        "export_batch_size": int(inputs[0].shape[0]),
        "batch_sizes_checked": checked,
        "max_abs_diff": diff,
        "atol": float(atol),
    }


def _check_example(example: object) -> tuple[Tensor, ...]:
    inputs = (example,) if isinstance(example, Tensor) else example
    if not isinstance(inputs, (tuple, list)) or not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise TypeError(f"example must be a torch.Tensor or a tuple of them, got {type(example).__name__}")
    for i, x in enumerate(inputs):
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"example[{i}] must have a non-empty batch dimension first, got shape {tuple(x.shape)}")
    sizes = [x.shape[0] for x in inputs]
    if len(set(sizes)) > 1:
        raise ValueError(f"example tensors must share the batch size (dimension 0), got {sizes}")
    return tuple(inputs)


def _require(module: str, purpose: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ImportError(
            f"{purpose} needs the {module!r} package, which is not installed (pip install {module})"
        ) from None


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' chatter (deprecations, tracer notes, progress lines)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _onnx_program(model: nn.Module, inputs: tuple[Tensor, ...], opset: int | None):
    """The exporter's ONNX program of ``model`` with a dynamic batch (saved by the caller, atomically)."""
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in inputs)
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                inputs,
                None,
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic,
                input_names=names,
                verbose=False,
            )
    except Exception as err:
        raise RuntimeError(
            f"ONNX export of {type(model).__name__} with a dynamic batch failed: {_first_line(err)}"
        ) from err
    return program


def _check_onnx_file(model: nn.Module, tmp: Path, opset: int | None) -> int:
    """The opset of the ONNX file ``tmp``, once its batch is known to be dynamic and its opset the one asked for."""
    import onnx

    proto = onnx.load(str(tmp))
    fixed = [i.name for i in proto.graph.input if not i.type.tensor_type.shape.dim[0].dim_param]
    if fixed:
        raise RuntimeError(
            f"ONNX export of {type(model).__name__} kept a fixed batch size for input {fixed[0]!r}: forward fixes "
            "the batch dimension somewhere (a Python int of x.shape[0], a constant reshape)"
        )
    written = {o.domain: o.version for o in proto.opset_import}.get("", 0)
    if opset is not None and written != opset:
        samples = any(n.op_type == "GridSample" for n in _all_nodes(proto.graph))
        if samples and opset < MIN_GRID_SAMPLE_OPSET:
            raise ValueError(
                f"opset must be >= {MIN_GRID_SAMPLE_OPSET} for a model that samples (grid_sample exports to "
                f"ONNX GridSample, new in opset {MIN_GRID_SAMPLE_OPSET}), got opset={opset}"
            )
        raise RuntimeError(f"the ONNX exporter could not convert the model to opset {opset} (it stayed at {written})")
    return written


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def _trace(model: nn.Module, inputs: tuple[Tensor, ...]):
    """``model`` traced by TorchScript (saved by the caller, atomically)."""
    try:
        with _quiet():
            return torch.jit.trace(model, inputs, check_trace=False)
    except Exception as err:
        raise RuntimeError(f"TorchScript tracing of {type(model).__name__} failed: {_first_line(err)}") from err


def _flatten(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    raise TypeError(f"model outputs must be tensors (or tuples, lists, dicts of them), got {type(out).__name__}")


def _random_like(x: Tensor, n: int, gen: torch.Generator) -> Tensor:
    shape = (n, *x.shape[1:])
    if not x.is_floating_point():
        lo, hi = int(x.min()), int(x.max())
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=x.dtype).to(x.device)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        lo, hi = 0.0, 1.0
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device=x.device, dtype=x.dtype)


def _check(model, inputs, tmp: Path, format: str, batch_sizes: list[int], seed: int) -> tuple[float, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        feed_names = [i.name for i in session.get_inputs()]

        def run(xs):
            return [
                torch.from_numpy(o) for o in session.run(None, dict(zip(feed_names, (x.cpu().numpy() for x in xs))))
            ]
    else:
        with _quiet():
            loaded = torch.jit.load(str(tmp), map_location=inputs[0].device)

        def run(xs):
            return _flatten(loaded(*xs))

    worst = 0.0
    for n in batch_sizes:
        xs = tuple(_random_like(x, n, gen) for x in inputs)
        try:
            ref = _flatten(model(*xs))
        except Exception as err:
            raise RuntimeError(f"the PyTorch model itself failed at batch size {n}: {_first_line(err)}") from err
        try:
            got = run(xs)
        except Exception as err:
            raise RuntimeError(
                f"the exported {format} model failed at batch size {n} (is the batch dimension fixed "
                f"somewhere in forward?): {_first_line(err)}"
            ) from err
        if len(got) != len(ref):
            raise RuntimeError(f"the exported {format} model returns {len(got)} outputs, PyTorch {len(ref)}")
        for r, g in zip(ref, got):
            if tuple(r.shape) != tuple(g.shape):
                raise RuntimeError(
                    f"the exported {format} model returns shape {tuple(g.shape)} at batch size {n}, "
                    f"PyTorch {tuple(r.shape)}"
                )
            d = (r.detach().cpu().double() - g.detach().cpu().double()).abs()
            worst = max(worst, float(d.max()) if d.numel() else 0.0)
    return worst, list(batch_sizes)
