"""Python onnxruntime on the same model.onnx and tokenizer.json as pgshift: the
baseline of benches/embed.sh. Prints one line per configuration: kind batch threads texts/s.
Batches are taken in input order, as a plain Python loader does; '+sorted' sorts by
length first (what pgshift does)."""
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model_dir, kind, n, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from embed_texts import texts  # noqa: E402

tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tok.enable_truncation(256)
tok.enable_padding(pad_id=0, pad_token="[PAD]")
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
session = ort.InferenceSession(f"{model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])


def embed(batch_texts):
    enc = tok.encode_batch(batch_texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    out = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    m = mask[..., None].astype(np.float32)
    v = (out * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


for label, data in (("", texts(kind, n)), ("+sorted", sorted(texts(kind, n), key=len))):
    embed(data[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        embed(data[i : i + batch])
    print(f"python{label} {kind} {batch} {threads} {n / (time.perf_counter() - start):.2f}")
