"""The embedding model exported once to ONNX, so queries (and CPU indexing) run without torch.

The export is made where torch is loaded anyway (the first `lcdoc index`, or the first query when
it is missing) and cached per model under the user's cache folder, keyed by the model folder and
its weights file's size and mtime. A folder holds `fp32.onnx` (the PyTorch model's numbers, within
float noise), `int8.onnx` (per-channel int8 weights, the down projections kept at fp32: 1.5-1.7x
the fp32 export's speed on a CPU, and the default there, docs/benchmarks.md), the model's
`tokenizer.json` and `export.json` (pooling, length, dimension).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from lcdoc.errors import ModelMissingError

EXPORT_VERSION = 4


def model_identity(folder: Path) -> str:
    """A model's name as an index records it: its folder's name (the package's for a 'model'
    folder). Computed without loading the model, so a mismatch is caught before any work."""
    folder = Path(folder)
    return folder.parent.name if folder.name == "model" else folder.name


class ExportError(ModelMissingError):
    """This model cannot be run without PyTorch (no tokenizer.json, unknown pooling)."""

PRECISIONS = ("int8", "fp32")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc" / "onnx"


def export_key(folder: Path) -> str:
    """Identity of a model folder from stat calls only (no hashing: this runs on every query)."""
    folder = Path(folder).resolve()
    parts = [str(folder), f"v{EXPORT_VERSION}"]
    for name in WEIGHT_FILES + ("tokenizer.json", "1_Pooling/config.json"):
        p = folder / name
        if p.exists():
            st = p.stat()
            parts.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def export_dir(folder: Path) -> Path:

    return cache_root() / f"{model_identity(folder)}-{export_key(folder)}"


FILES = ("export.json", "tokenizer.json", "fp32.onnx", "fp32.onnx.data", "int8.onnx", "int8.onnx.data")


def is_complete(out: Path) -> bool:
    return all((out / f).is_file() for f in FILES)


def ensure_export(folder: Path) -> Path:
    """The export folder for this model, made now (with torch) when it is missing or partial."""
    out = export_dir(folder)
    if is_complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _export(Path(folder), tmp)
        try:
            os.replace(tmp, out)  # atomic: a reader sees no folder or a whole one
        except OSError:
            if not is_complete(out):  # a partial folder from an older crash: replace it
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _drop_stale(out)
    return out


def _drop_stale(current: Path) -> None:
    """Earlier exports of the same model folder (its files changed, or an older export format)."""
    source = json.loads((current / "export.json").read_text())["source"]
    for other in current.parent.glob(current.name.rsplit("-", 1)[0] + "-*"):
        try:
            if other != current and json.loads((other / "export.json").read_text())["source"] == source:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError, KeyError):
            continue


def _pooling(folder: Path) -> str:
    cfg = folder / "1_Pooling" / "config.json"
    if not cfg.exists():
        return "mean"
    c = json.loads(cfg.read_text())
    for mode in ("cls_token", "max_tokens", "mean_tokens"):
        if c.get(f"pooling_mode_{mode}"):
            return mode.split("_")[0]
    raise ExportError(f"{folder}: pooling {c} is not one lcdoc can export (mean, cls, max)")


def _export(folder: Path, out: Path) -> None:
    """Trace the transformer to ONNX with torch (eager attention: a plain graph that ONNX Runtime
    fuses), then quantise a copy's MatMul weights to int8 per channel."""
    import inspect

    import torch
    from sentence_transformers import SentenceTransformer

    if not (folder / "tokenizer.json").exists():
        raise ExportError(f"{folder}: no tokenizer.json, so it cannot run without PyTorch")
    pooling = _pooling(folder)
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                             model_kwargs={"attn_implementation": "eager"})
    hf = st[0].auto_model.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in inspect.signature(hf.forward).parameters]

    class Tokens(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.m(**dict(zip(names, args))).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {n: {0: "batch", 1: "tokens"} for n in names + ["tokens_out"]}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tokens(hf), tuple(ids for _ in names), str(out / "traced.onnx"),
                          input_names=names, output_names=["tokens_out"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    _quantise(out / "traced.onnx", out / "quantised.onnx")
    _weights_apart(out / "traced.onnx", out / "fp32.onnx")
    _weights_apart(out / "quantised.onnx", out / "int8.onnx")
    shutil.copyfile(folder / "tokenizer.json", out / "tokenizer.json")
    dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else \
        st.get_sentence_embedding_dimension()
    (out / "export.json").write_text(json.dumps({
        "source": str(folder.resolve()), "inputs": names, "pooling": pooling,
        "max_tokens": int(st.max_seq_length or 512), "dim": int(dim), "version": EXPORT_VERSION,
    }, indent=1))


def _weights_apart(src: Path, dst: Path) -> None:
    """The graph in dst, its weights in dst.data: ONNX Runtime then parses a 100 KB protobuf
    instead of 90 MB, and opens the model in 0.04 s instead of 0.11 s (a query's start-up)."""
    import onnx

    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=1024)
    src.unlink()


def down_projections(model) -> list[str]:
    """MatMul nodes whose constant weight is taller than wide (the feed-forward output): their
    input is the activation's long-tailed output, which dynamic per-tensor u8 quantisation of
    activations distorts most."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type == "MatMul" and len(n.input) == 2:
            dims = weights.get(n.input[1])
            if dims and len(dims) == 2 and dims[0] > dims[1]:
                out.append(n.name)
    return out


def _quantise(src: Path, dst: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice
    # Per channel (per tensor: MiniLM's cosine to fp32 0.937). The down projections stay fp32:
    # with them, cosine 0.997 (min 0.994) instead of 0.993 (min 0.984) over R-intro's chunks, at
    # 1.5x fp32's speed instead of 1.8x (python -m lcdoc.eval.quantbench, docs/benchmarks.md).
    # The embedding table (Gather) too: a smaller file, which ONNX Runtime opens in half the time.
    keep = down_projections(onnx.load(str(src), load_external_data=False))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=keep)
