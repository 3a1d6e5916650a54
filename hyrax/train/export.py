"""`verb=export`: a checkpoint's model as an ONNX file, checked against torch in onnxruntime.

Only `forward` is exported, fed exactly what it receives in training (see `forward_args`): the
tensors `to_tensor` made from dict items, so `to_tensor` itself stays out of the graph, as Hyrax's
documentation requires (whoever runs the file packs their data the same way first). The batch axis
of every input is dynamic unless the model fixes it, and the file holds its weights (one file).

The exporter is torch's `torch.export`-based one (`dynamo=True`, torch's default since 2.9). It
takes ~3 s where the TorchScript exporter takes ~0.2 s, but that one is deprecated (it warns that it
will be removed) and it silently bakes Python values into the graph: a `forward` that branches on
`.item()` or goes through `.numpy()` is traced along one path and exported as a constant, a file that
is wrong for other inputs. `torch.export` refuses such code instead, and names the line, which
`unexportable` turns into one message naming the submodule.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from hyrax.errors import HyraxError
from hyrax.models import contract
from hyrax.train import checkpoint

log = logging.getLogger("hyrax")
FORMATS = ("onnx",)
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
EXTERNAL_DATA_BYTES = 1_800_000_000  # a protobuf file holds at most 2 GB: larger weights go beside it
_TORCH_DIR = str(Path(torch.__file__).parent)
NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")  # progress at INFO, internals


@dataclass(frozen=True)
class ExportResult:
    """What `verb=export` wrote and how closely onnxruntime reproduced torch on it."""

    path: Path
    opset: int
    max_difference: float  # the largest absolute difference between onnxruntime's and torch's outputs
    batch_sizes: tuple[int, ...]  # the batches compared
    dynamic_batch: bool  # whether the file takes any batch size

    def summary(self) -> str:
        """The line `hyrax-run verb=export` prints."""
        sizes = " and ".join(str(n) for n in self.batch_sizes)
        fixed = "" if self.dynamic_batch else f"; the model fixes the batch size at {self.batch_sizes[0]}"
        return (
            f"Wrote {self.path.resolve()} (opset {self.opset}); onnxruntime matches torch within "
            f"{self.max_difference:.2g} on {sum(self.batch_sizes)} samples (batches of {sizes}){fixed}"
        )


def export_model(model: Any, sample_batch: Any, settings: Mapping[str, Any], source: Path) -> ExportResult:
    """Export a trained model (the weights of checkpoint `source`) as `settings["format"]`, next to the
    checkpoint unless `settings["path"]` says where, and check the file against torch."""
    path = output_path(settings, source)
    model = model.cpu().eval()
    args = forward_args(model, to_cpu(sample_batch))
    write_onnx(model, args, path, settings["opset"])
    result = check_onnx(path, model, args, settings["tolerance"])
    if settings["opset"] and result.opset != settings["opset"]:
        log.warning(
            "export.opset=%s: the exporter could not write that opset and wrote %s",
            settings["opset"],
            result.opset,
        )
    return result


def export_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `export` section, checked: a known format and a tolerance >= 0."""
    settings = {
        "format": "onnx",
        "path": None,
        "opset": None,
        "tolerance": 1e-4,
        **(config.get("export") or {}),
    }
    if settings["format"] not in FORMATS:
        raise HyraxError(
            f"unknown export format '{settings['format']}'",
            key="export.format",
            fix=f"use one of: {', '.join(FORMATS)}",
        )
    if not settings["tolerance"] >= 0:
        raise HyraxError(
            f"export.tolerance must be a difference >= 0, not {settings['tolerance']}",
            key="export.tolerance",
            fix="set export.tolerance=1e-4 (the default) or another small positive number",
        )
    return settings


def require_onnx() -> None:
    """Fail with the install command when a package the exporter needs is missing."""
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError as err:
            raise HyraxError(
                f"exporting to ONNX needs the '{name}' package, which is not installed ({err})",
                key="export.format",
                fix="pip install 'hyrax-runner[onnx]' (onnx, onnxruntime and onnxscript)",
            ) from err


def output_path(settings: Mapping[str, Any], source: Path) -> Path:
    """`export.path`, or `model.onnx` in the run directory the checkpoint belongs to."""
    if settings.get("path"):
        return Path(settings["path"]).expanduser()
    return checkpoint.run_dir_of(source) / "model.onnx"


def to_cpu(batch: Any) -> Any:
    """A batch with every tensor on the CPU (structure kept)."""
    return pytree.tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, batch)


def forward_args(model: nn.Module, batch: Any) -> tuple[Any, ...]:
    """The positional arguments `forward` receives for a model-ready batch, as training passes them.

    That is `to_tensor`'s output: the inputs of an `(inputs, labels)` batch, or the whole batch for a
    model with its own step whose `forward` takes it (see `hyrax.models.contract.forward`).
    """
    captured: list[tuple[Any, ...]] = []
    handle = model.register_forward_pre_hook(lambda _module, args: captured.append(args))
    try:
        with torch.no_grad():
            contract.learn_forward(model, batch)  # teaches contract.forward what this forward takes
            captured.clear()
            contract.forward(model, batch)
    finally:
        handle.remove()
    return captured[0]


def tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) structure, in the order the exporter flattens it."""
    return [v for v in pytree.tree_leaves(tree) if isinstance(v, torch.Tensor)]


def io_names(prefix: str, count: int) -> list[str]:
    """`input` for a single tensor, else `input_0`, `input_1`, ... (likewise `output`)."""
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def batch_axis_dynamic(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`dynamic_shapes` for `torch.onnx.export`: axis 0 of every tensor is dynamic where the model
    allows it (`Dim.AUTO` leaves it fixed, instead of failing, when the model fixes it)."""
    auto = torch.export.Dim.AUTO
    return tuple(
        pytree.tree_map(lambda v: {0: auto} if isinstance(v, torch.Tensor) and v.dim() else None, a)
        for a in args
    )


def write_onnx(model: nn.Module, args: tuple[Any, ...], path: Path, opset: int | None) -> None:
    """Export `model.forward` on `args` to `path` (one file unless the weights pass ~2 GB)."""
    with torch.no_grad():
        outputs = model(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    try:
        with quiet_exporter():
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=io_names("input", len(tensors(args))),
                output_names=io_names("output", len(tensors(outputs))),
                opset_version=opset,
                dynamo=True,
                external_data=weight_bytes > EXTERNAL_DATA_BYTES,
                dynamic_shapes=batch_axis_dynamic(args),
                verbose=False,
            )
    except Exception as err:
        raise unexportable(err, model, opset) from err


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress lines, graph dumps and warnings about torch internals out of the
    user's output; they go to the debug log."""
    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            with contextlib.redirect_stderr(err):
                yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        said = out.getvalue() + err.getvalue() + "".join(f"{w.message}\n" for w in caught)
        if said.strip():
            log.debug("the ONNX exporter said:\n%s", said)


def unexportable(err: BaseException, model: nn.Module, opset: int | None) -> HyraxError:
    """One message for an export that failed: the submodule, op and line the exporter stumbled on."""
    chain = exception_chain(err)
    name = type(model).__qualname__
    where, line = module_at_fault(chain, model)
    op = op_at_fault(chain)
    reason = first_line(chain[-1])
    if opset is not None and "opset" in reason.lower() and op is None:
        return HyraxError(
            f"{name} could not be exported with opset {opset}: {reason}",
            key="export.opset",
            fix="leave export.opset unset (the exporter's default, 18 or newer) or choose a newer one",
        )
    place = " ".join(p for p in (f"op {op}" if op else "", f"in {where}" if where else "") if p)
    at = f" at {line}" if line else ""
    message = f"{name} cannot be exported to ONNX: {place or 'its forward'}{at}: {reason}"
    return HyraxError(message, key="model", fix=fix_for(chain, where or "forward", op))


def fix_for(chain: list[BaseException], where: str, op: str | None) -> str:
    """What to change, by the kind of failure."""
    text = " ".join(f"{type(e).__name__} {e}" for e in chain)
    if "DataDependent" in text or "data-dependent" in text:
        return (
            f"in {where}, do not decide in Python on tensor values (.item(), .tolist(), `if tensor:`): "
            "use tensor ops such as torch.where or torch.cond, or move that step out of forward "
            "(into to_tensor, or after the model)"
        )
    if op:
        return (
            f"replace {op} in {where} with operations that have an ONNX translation, or move that "
            "step out of forward (into to_tensor, or after the model)"
        )
    return (
        f"make {where} traceable by torch.export (https://pytorch.org/docs/stable/export.html): no "
        "Python decisions on tensor values and no code torch cannot follow; or move that step out of "
        "forward"
    )


def exception_chain(err: BaseException) -> list[BaseException]:
    """`err` and its causes, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def module_at_fault(chain: list[BaseException], model: nn.Module) -> tuple[str | None, str | None]:
    """The innermost submodule of `model` the failure happened in, as `path (Class)`, and the user's
    source line there: from the frames the tracer ran (`self`), else the graph node it translated."""
    names = {id(m): n for n, m in model.named_modules()}
    where = line = None
    for err in chain:
        tb = err.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            owner = frame.f_locals.get("self")
            if id(owner) in names and names[id(owner)]:
                where = f"{names[id(owner)]} ({type(owner).__qualname__})"
            if id(owner) in names and not frame.f_code.co_filename.startswith(_TORCH_DIR):
                line = source_line(frame.f_code.co_filename, tb.tb_lineno)
            node = frame.f_locals.get("node")
            if isinstance(node, torch.fx.Node) and node.meta.get("nn_module_stack"):
                path, kind = list(node.meta["nn_module_stack"].values())[-1]
                where = f"{path} ({str(getattr(kind, '__qualname__', kind)).rsplit('.', 1)[-1]})"
                line = _last_user_line(node.meta.get("stack_trace") or "") or line
            tb = tb.tb_next
    return where, line


def _last_user_line(stack_trace: str) -> str | None:
    found = [
        (f, n)
        for f, n in re.findall(r'File "([^"]+)", line (\d+)', stack_trace)
        if not f.startswith(_TORCH_DIR)
    ]
    return source_line(found[-1][0], int(found[-1][1])) if found else None


def source_line(filename: str, lineno: int) -> str:
    """`file:line` with the code on that line."""
    code = linecache.getline(filename, lineno).strip()
    return f"{filename}:{lineno}" + (f" `{code}`" if code else "")


def op_at_fault(chain: list[BaseException]) -> str | None:
    """The operator the exporter could not translate (`aten.histc`, `prims.zeta`), if it says."""
    text = "\n".join(str(e) for e in chain)
    patterns = (r"OpOverload\(op='([\w.]+)'", r"target=torch\.ops\.(\w+\.\w+)", r"operator '([\w:]+)'")
    found = [m.group(1) for m in (re.search(p, text) for p in patterns) if m]
    return found[0] if found else None


def first_line(err: BaseException) -> str:
    """An exception's first line, without terminal colour codes, cut to a readable length."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 240 else line[:237] + "..."


def check_onnx(path: Path, model: nn.Module, args: tuple[Any, ...], tolerance: float) -> ExportResult:
    """Run the file in onnxruntime on the sample batch (and on half of it when the batch axis is
    dynamic), compare with torch, and fail when they differ by more than `tolerance`."""
    import onnx
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise _not_runnable(path, err) from err
    dynamic = all(not isinstance(i.shape[0], int) for i in session.get_inputs() if i.shape)
    batches = [args]
    size = contract.batch_length(args[0]) if args else 1
    if dynamic and size >= 2:
        batches.append(_head(args, size, size // 2))
    worst = max(_difference(session, model, b, path) for b in batches)
    opsets = {
        o.domain or "ai.onnx": o.version for o in onnx.load(path, load_external_data=False).opset_import
    }
    sizes = tuple(contract.batch_length(b[0]) for b in batches)
    result = ExportResult(path, opsets.get("ai.onnx", 0), worst, sizes, dynamic)
    if not worst <= tolerance:
        raise HyraxError(
            f"onnxruntime's outputs differ from torch's by up to {worst:.3g}, more than "
            f"export.tolerance={tolerance:g} (the file is at {path})",
            key="export.tolerance",
            fix="raise export.tolerance if that difference is acceptable, or find the op that computes "
            "differently in ONNX (compare the outputs of the model's submodules)",
        )
    return result


def _head(args: tuple[Any, ...], size: int, n: int) -> tuple[Any, ...]:
    """The first `n` items of a batch: every tensor whose first axis is the batch's is cut."""
    return pytree.tree_map(
        lambda v: v[:n] if isinstance(v, torch.Tensor) and v.dim() and len(v) == size else v, args
    )


def _difference(session: Any, model: nn.Module, args: tuple[Any, ...], path: Path) -> float:
    """The largest absolute difference between onnxruntime's and torch's outputs on one batch."""
    with torch.no_grad():
        expected = [t.numpy() for t in tensors(model(*args))]
    fed = dict(zip(io_names("input", len(tensors(args))), (t.numpy() for t in tensors(args)), strict=True))
    wanted = {i.name for i in session.get_inputs()}
    try:
        got = session.run(None, {k: v for k, v in fed.items() if k in wanted})
    except Exception as err:
        raise _not_runnable(path, err) from err
    worst = 0.0
    for want, have in zip(expected, got, strict=True):
        if want.shape != have.shape:
            raise HyraxError(
                f"onnxruntime gives an output shaped {have.shape} where torch gives {want.shape} "
                f"(the file is at {path})",
                key="model",
                fix="check the model's forward for shapes computed from a fixed batch size",
            )
        worst = max(worst, _largest(want.astype(np.float64), have.astype(np.float64)))
    return worst


def _largest(want: np.ndarray, have: np.ndarray) -> float:
    """The largest absolute difference, where NaN against NaN (and equal infinities) count as equal."""
    same = (want == have) | (np.isnan(want) & np.isnan(have))
    diff = np.where(same, 0.0, np.abs(want - have))
    return float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0


def _not_runnable(path: Path, err: BaseException) -> HyraxError:
    return HyraxError(
        f"onnxruntime cannot run the exported file {path}: {first_line(err)}",
        key="export.opset",
        fix="try another export.opset (onnxruntime may lack a kernel for an op at this opset)",
    )
