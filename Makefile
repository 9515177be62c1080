# Everything a new machine needs is installed by scripts/bootstrap.sh (idempotent):
# `bootstrap` what pgshift and the demo use, `bootstrap-tests` also what only tests use.
.PHONY: bootstrap bootstrap-tests build demo demo-stop test bench

bootstrap:
	./scripts/bootstrap.sh

bootstrap-tests:
	./scripts/bootstrap.sh --tests

build: bootstrap
	cargo build --release --locked

demo: build
	./scripts/demo.sh

demo-stop:
	./scripts/demo.sh stop

test: bootstrap-tests
	./scripts/test.sh

bench: build
	PGSHIFT_BENCH=1 ./scripts/bootstrap.sh
	./benches/side_by_side.sh
	./benches/sqlite_side_by_side.sh
	./benches/catchup.sh
	./benches/cutover.sh
	./benches/embed.sh
	./benches/large_txn.sh
	./benches/workers.sh
	./benches/chunks.sh
	./benches/reembed.sh
	./benches/vectorize.sh
