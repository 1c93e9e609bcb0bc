# stb-netacct. `make help` lists the targets.
DENO ?= node_modules/.bin/deno
BPF_OBJECTS = bpf/netacct.bpf.o bench/trivial.bpf.o

.PHONY: help deps build bpf check-bpf check test test-unit test-e2e bench clean

help:
	@echo "make deps       install Debian packages and node_modules (idempotent, needs root for apt)"
	@echo "make build      build ./stb-netacct (deno compile, else a launcher of a bundle)"
	@echo "make bpf        recompile the committed BPF objects (needs clang)"
	@echo "make check      deno fmt/lint/check + stale BPF object check"
	@echo "make test       deps, build, check and the whole test suite (root: real kernel)"
	@echo "make bench      benchmarks, printed and written to bench/results.json"

deps:
	sh scripts/deps.sh

build: deps
	sh scripts/build.sh

bpf/netacct.bpf.o: bpf/netacct.bpf.c bpf/netacct.h
	sh bpf/build.sh bpf/netacct.bpf.c $@

bench/trivial.bpf.o: bench/trivial.bpf.c
	sh bpf/build.sh bench/trivial.bpf.c $@

bpf/netacct_object.ts: bpf/netacct.bpf.o
	sh bpf/embed.sh $< $@

bpf: $(BPF_OBJECTS) bpf/netacct_object.ts

check-bpf:
	sh bpf/check_object.sh

check: deps check-bpf
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts '**/*.ts'

test: build
	sh scripts/test.sh

bench: build
	sh scripts/bench.sh

clean:
	rm -rf dist stb-netacct
