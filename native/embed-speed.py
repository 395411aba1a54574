"""Embedding throughput of MiniLM-L6's shape (6 layers, 384 wide, 12 heads) on a CUDA GPU, for
docs/scaling.md. Weights are random (no model hub on the lent host): speed is the shape's.

    python native/embed-speed.py [--tokens 230] [--batch 256]
"""
import argparse
import time

import torch
from transformers import BertConfig, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("--tokens", type=int, default=230)  # lcdoc's chunks average ~220-230 word pieces
ap.add_argument("--batch", type=int, default=256)  # lcdoc's CUDA batch (lcdoc/index/embed.py)
ap.add_argument("--batches", type=int, default=40)
a = ap.parse_args()
cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
print(torch.__version__, torch.cuda.get_device_name(0))
for dtype in (torch.float32, torch.float16):
    m = BertModel(cfg).cuda().eval().to(dtype)
    ids = torch.randint(1000, 30000, (a.batch, a.tokens), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            m(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.batches):
            h = m(input_ids=ids, attention_mask=mask).last_hidden_state
            (h * mask[..., None]).sum(1)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    print(f"{dtype}: {a.batch * a.batches / dt:,.0f} chunks/s of {a.tokens} tokens (batch {a.batch})")
