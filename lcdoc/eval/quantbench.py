"""Which MatMuls of the embedding model to quantise: speed and closeness to fp32, side by side.

    python -m lcdoc.eval.quantbench /usr/share/doc/r-doc-pdf/manual/R-intro.pdf [--chunks 200]

Each variant is quantised (dynamic int8, per channel) from the cached fp32 export, then all embed
the same chunks of the document, alternating, twice; the table gives the better rate of each and
its cosine to the fp32 vectors. The row marked (shipped) is what `lcdoc index` uses.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def variants(fp32: Path, out: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lcdoc.index.onnx_export import down_projections

    logging.getLogger().setLevel(logging.ERROR)
    graph = onnx.load(str(fp32), load_external_data=False)
    matmuls = [n.name for n in graph.graph.node if n.op_type == "MatMul"]
    down = down_projections(graph)
    edges = [n for n in matmuls if "layer.0/" in n or f"layer.{_last_layer(matmuls)}/" in n]
    plan = {"every MatMul and Gather": ([], ["MatMul", "Gather"]),
            "down projections fp32 (shipped)": (down, ["MatMul", "Gather"]),
            "first and last layers fp32": (edges, ["MatMul", "Gather"])}
    paths = {}
    for name, (exclude, ops) in plan.items():
        dst = out / f"{len(paths)}.onnx"
        quantize_dynamic(str(fp32), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=ops, nodes_to_exclude=exclude)
        paths[name] = dst
    return paths


def _last_layer(names: list[str]) -> int:
    layers = [int(n.split("layer.")[1].split("/")[0]) for n in names if "layer." in n]
    return max(layers, default=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("document")
    ap.add_argument("--chunks", type=int, default=200)
    a = ap.parse_args()
    import onnxruntime as ort

    from lcdoc.index.embed import OnnxEmbedder, resolve_embedding_model
    from lcdoc.index.onnx_export import ensure_export
    from lcdoc.ingest import chunk_document, load_path

    texts = [c.text for c in chunk_document(load_path(a.document))][: a.chunks]
    export = ensure_export(resolve_embedding_model(None))
    emb = OnnxEmbedder(None, "fp32")  # its tokenizer and pooling; each variant's session swapped in
    tmp = Path(tempfile.mkdtemp(prefix="lcdoc-quant-"))
    models = {"fp32": export / "fp32.onnx", **variants(export / "fp32.onnx", tmp)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                for k, p in models.items()}
    best: dict[str, float] = {}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(2):
        for name, sess in sessions.items():
            emb.session = sess
            emb.embed(texts[:32])
            t0 = time.perf_counter()
            vecs[name] = emb.embed(texts)
            best[name] = max(best.get(name, 0.0), len(texts) / (time.perf_counter() - t0))
    print(f"machine: {platform.processor() or platform.machine()}, {len(texts)} chunks of {a.document}\n")
    print("| variant | chunks/s | x fp32 | cosine to fp32, mean | min |\n|---|---:|---:|---:|---:|")
    for name in models:
        cos = (vecs[name] * vecs["fp32"]).sum(axis=1)
        print(f"| {name} | {best[name]:.1f} | {best[name] / best['fp32']:.2f} | "
              f"{cos.mean():.4f} | {cos.min():.4f} |")


if __name__ == "__main__":
    main()
