#!/bin/sh
# Runs every benchmark (each prints its own table) and merges their JSON fragments into
# bench/results.json with the machine they ran on. Root: they load programs and rules.
# BENCH_QUICK=1 shortens the long ones (for a smoke run; the figures are then rough).
set -eu
cd "$(dirname "$0")/.."
DENO=${DENO:-node_modules/.bin/deno}
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (it loads BPF programs and firewall rules): sudo make bench" >&2
  exit 1
fi
export STB_NETACCT_BIN="${STB_NETACCT_BIN:-$(pwd)/stb-netacct}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
quick=${BENCH_QUICK:-}

echo "== per-packet cost of the BPF programs (BPF_PROG_TEST_RUN) =="
"$DENO" run -A bench/bpf_bench.ts "$tmp/bpf.json" ${quick:+--repeat 1000000 --rounds 3}
echo "== cost of one counter read per backend =="
"$DENO" run -A bench/read_cost.ts "$tmp/read.json" ${quick:+--reads 50 --min-ms 500}
echo "== TCP throughput through veth, with and without accounting =="
"$DENO" run -A bench/throughput.ts "$tmp/throughput.json" --backends ebpf,nft,iptables ${quick:+--runs 2 --seconds 2}
echo "== CPU and memory of run =="
"$DENO" run -A bench/footprint.ts "$tmp/footprint.json" ${quick:+--seconds 10}

"$DENO" run -A scripts/merge_bench.ts bench/results.json "$tmp"/*.json
echo "bench: wrote bench/results.json"
