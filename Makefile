# stb-netacct. `make help` lists the targets.
DENO ?= node_modules/.bin/deno
BPF_OBJECTS = bpf/netacct.bpf.o bpf/events.bpf.o bpf/dns.bpf.o bpf/calibrate.bpf.o bench/trivial.bpf.o \
  bpf/testdata/refused.bpf.o

.PHONY: help deps test-deps build bpf check-bpf check test test-kernel61 bench soak clean

help:
	@echo "make deps       what building and running need: Debian packages, node_modules (npm ci)"
	@echo "make test-deps  what only the tests and benchmarks need (promtool, nspawn, qemu, ...)"
	@echo "make build      deps, then build ./stb-netacct (deno compile, else a launcher of a bundle)"
	@echo "make bpf        recompile the committed BPF objects (needs clang)"
	@echo "make check      deno fmt/lint/check + stale BPF object check"
	@echo "make test       deps, test-deps, build, check and the whole test suite (root: real kernel)"
	@echo "make test-kernel61  only the kernel-facing tests, inside Debian 12's kernel 6.1 (qemu)"
	@echo "make bench      benchmarks, printed and written to bench/results.json"
	@echo "make soak       load + faults for SOAK_DURATION_S (60) per backend, reader for SOAK_READER_S (600)"

deps:
	sh scripts/deps.sh build

test-deps:
	sh scripts/deps.sh test

build: deps
	sh scripts/build.sh

bpf/netacct.bpf.o: bpf/netacct.bpf.c bpf/netacct.h bpf/targets.h
	sh bpf/build.sh bpf/netacct.bpf.c $@

bpf/events.bpf.o: bpf/events.bpf.c bpf/events.h bpf/netacct.h bpf/targets.h
	sh bpf/build.sh bpf/events.bpf.c $@

bpf/dns.bpf.o: bpf/dns.bpf.c bpf/dns.h bpf/netacct.h
	sh bpf/build.sh bpf/dns.bpf.c $@

bpf/calibrate.bpf.o: bpf/calibrate.bpf.c
	sh bpf/build.sh bpf/calibrate.bpf.c $@

bench/trivial.bpf.o: bench/trivial.bpf.c
	sh bpf/build.sh bench/trivial.bpf.c $@

bpf/testdata/refused.bpf.o: bpf/testdata/refused.bpf.c
	sh bpf/build.sh bpf/testdata/refused.bpf.c $@

bpf/netacct_object.ts: bpf/netacct.bpf.o
	sh bpf/embed.sh $< $@

bpf/events_object.ts: bpf/events.bpf.o
	sh bpf/embed.sh $< $@

bpf/dns_object.ts: bpf/dns.bpf.o
	sh bpf/embed.sh $< $@

bpf/calibrate_object.ts: bpf/calibrate.bpf.o
	sh bpf/embed.sh $< $@

bpf: $(BPF_OBJECTS) bpf/netacct_object.ts bpf/events_object.ts bpf/dns_object.ts bpf/calibrate_object.ts

check-bpf:
	sh bpf/check_object.sh

check: deps check-bpf
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts '**/*.ts'

test: build test-deps
	sh scripts/test.sh

test-kernel61: build test-deps
	sh scripts/kernel61.sh

bench: build test-deps
	sh scripts/bench.sh

# The long form of tests/soak_test.ts (the suite runs a ~20 s ebpf-only short form).
SOAK_DURATION_S ?= 60
SOAK_READER_S ?= 600
SOAK_BACKENDS ?= ebpf,nft,iptables
soak: build test-deps
	SOAK_DURATION_S=$(SOAK_DURATION_S) SOAK_READER_S=$(SOAK_READER_S) SOAK_BACKENDS=$(SOAK_BACKENDS) \
	  STB_NETACCT_BIN=$(CURDIR)/stb-netacct $(DENO) test --allow-all --no-prompt tests/soak_test.ts

clean:
	rm -rf dist stb-netacct
