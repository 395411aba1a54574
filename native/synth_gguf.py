"""Write a random-weight GGUF of a real llama-architecture shape, for speed and memory benchmarks only.

Usage: python synth_gguf.py OUT.gguf --shape llama3-8b --vocab ggml-vocab-llama-bpe.gguf
The tokenizer is copied from a vocab-only GGUF (the llama-cpp-python sdist carries
vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf). Weights are random bytes: the text it
writes is noise, but its speed and memory are those of the real shape (GQA, 128K context).
llama3-8b at Q8_0 is 8.5 GB and takes about 30 s to write on 16 cores.
A copy of ../shared/tools/synth_gguf.py with a llama3-70b shape (for the multi-GPU planner):
every layer's matrices of one shape share one random buffer, so a 75 GB file is written at disk
speed and the writer holds only one layer's worth of memory.
Needs: pip install gguf numpy
"""
import argparse
import numpy as np
import gguf

SHAPES = {
    # name: (layers, d_model, heads, kv_heads, ffn, ctx, rope_base)
    "llama3-70b": (80, 8192, 64, 8, 28672, 131072, 500000.0),
    "llama3-8b": (32, 4096, 32, 8, 14336, 131072, 500000.0),
    "llama3-1b": (16, 2048, 32, 8, 8192, 131072, 500000.0),
    "tiny": (2, 256, 4, 2, 512, 8192, 10000.0),
}


def copy_tokenizer(writer: gguf.GGUFWriter, vocab_path: str) -> int:
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
            else:
                vals = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(name, vals)
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(vals)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode())
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], vtype)
    return n_vocab


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--qtype", default="Q8_0", choices=["Q8_0", "F16"])
    a = ap.parse_args()
    L, d, H, Hkv, ffn, ctx, base = SHAPES[a.shape]
    hd = d // H
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"synthetic-{a.shape}")
    w.add_block_count(L)
    w.add_context_length(ctx)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ffn)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if a.qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = copy_tokenizer(w, a.vocab)
    w.add_vocab_size(n_vocab)
    rng = np.random.default_rng(0)
    qt = gguf.GGMLQuantizationType.Q8_0 if a.qtype == "Q8_0" else gguf.GGMLQuantizationType.F16

    shared = {}

    def mat(name, rows, cols):
        if (rows, cols) in shared:  # the same bytes for every layer: speed and memory are the shape's
            w.add_tensor(name, shared[rows, cols], raw_dtype=qt if a.qtype == "Q8_0" else None)
            return
        if a.qtype == "Q8_0":  # blocks of 32 int8 values behind one fp16 scale, built directly
            blocks = np.empty((rows, cols // 32, 34), dtype=np.uint8)
            blocks[:, :, :2] = np.frombuffer(np.float16(0.0005).tobytes(), dtype=np.uint8)
            blocks[:, :, 2:] = rng.integers(0, 256, (rows, cols // 32, 32), dtype=np.uint8)
            shared[rows, cols] = blocks.reshape(rows, -1)
            w.add_tensor(name, shared[rows, cols], raw_dtype=qt)
        else:
            shared[rows, cols] = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)
            w.add_tensor(name, shared[rows, cols])

    def vec(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    mat("token_embd.weight", n_vocab, d)
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", d)
        mat(p + "attn_q.weight", d, d)
        mat(p + "attn_k.weight", Hkv * hd, d)
        mat(p + "attn_v.weight", Hkv * hd, d)
        mat(p + "attn_output.weight", d, d)
        vec(p + "ffn_norm.weight", d)
        mat(p + "ffn_gate.weight", ffn, d)
        mat(p + "ffn_up.weight", ffn, d)
        mat(p + "ffn_down.weight", d, ffn)
    vec("output_norm.weight", d)
    mat("output.weight", n_vocab, d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()
