"""The texts both embedders see in benches/embed.sh: deterministic, ~12 or ~200 words."""
import random

WORDS = ("postgres replication vector index migration table column query snapshot cutover latency "
         "throughput model embedding search database schema backup restore primary replica shard "
         "the a of to and in for on with by from as at is are was be this that it not").split()


def texts(kind, n):
    rng = random.Random(42 if kind == "short" else 7)
    lo, hi = (8, 16) if kind == "short" else (170, 230)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + f" #{i}" for i in range(n)]


if __name__ == "__main__":
    import sys
    for t in texts(sys.argv[1], int(sys.argv[2])):
        print(t)
