"""The texts both embedders see in benches/embed.sh: deterministic, ~12 or ~200 words."""
import random

WORDS = ("postgres replication vector index migration table column query snapshot cutover latency "
         "throughput model embedding search database schema backup restore primary replica shard "
         "the a of to and in for on with by from as at is are was be this that it not").split()


def texts(kind, n):
    """short: ~12 words; long: ~200 words; mixed: one long text in every eight, as in a
    table of notes (where padding to the longest text of a batch costs most)."""
    rng = random.Random({"short": 42, "long": 7, "mixed": 3}[kind])
    out = []
    for i in range(n):
        long = kind == "long" or (kind == "mixed" and i % 8 == 0)
        lo, hi = (170, 230) if long else (8, 16)
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + f" #{i}")
    return out


if __name__ == "__main__":
    import sys
    for t in texts(sys.argv[1], int(sys.argv[2])):
        print(t)
