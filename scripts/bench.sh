#!/bin/sh
# Runs every benchmark (each prints its own table), merges their JSON fragments into
# bench/results.json with the machine they ran on, prints every target with PASS/MISS and
# writes docs/benchmarks.md. Root: they load programs and rules and make netns and cgroups
# (each bench removes what it made, also on failure).
# BENCH_QUICK=1: a smoke form in under 10 minutes (short runs, 30 s footprint; rough figures).
# BENCH_FOOTPRINT_S=N: the footprint window (default 600 s, the 10 minutes of the target),
# after a 300 s warm-up.
set -eu
cd "$(dirname "$0")/.."
DENO=${DENO:-node_modules/.bin/deno}
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (it loads BPF programs and firewall rules): sudo make bench" >&2
  exit 1
fi
export STB_NETACCT_BIN="${STB_NETACCT_BIN:-$(pwd)/stb-netacct}"
export BENCH_COMMAND="sudo ${BENCH_QUICK:+BENCH_QUICK=1 }make bench"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A signal stops the whole bench (each bench cleans up after itself), not just one step.
trap 'exit 130' INT TERM
quick=${BENCH_QUICK:-}
if [ -n "$quick" ]; then
  footprint_s=${BENCH_FOOTPRINT_S:-25} warmup_s=5 tp_runs="--runs 1 --seconds 2" bursts=6 graph_s=5
  paired="--pairs 8 --seconds 2"
  graph_mem="--memory-seconds 30 --memory-warmup 5"
else
  footprint_s=${BENCH_FOOTPRINT_S:-600} warmup_s=300 tp_runs="--runs 4 --seconds 4" bursts=40 graph_s=20
  paired="--pairs 30 --seconds 3"
  graph_mem="--memory-seconds 600 --memory-warmup 120"
fi
t0=$(date +%s)
step() { echo; echo "== $1 ($(($(date +%s) - t0)) s) =="; }

step "per-packet cost of the BPF programs (BPF_PROG_TEST_RUN)"
"$DENO" run -A bench/bpf_bench.ts "$tmp/bpf.json" ${quick:+--repeat 1000000 --rounds 5}
step "per-sample cost of following exclude_interfaces and internal_onlink"
"$DENO" run -A bench/exclusion_cost.ts "$tmp/exclusion_cost.json" ${quick:+--samples 2000}
step "real-traffic cost of the BPF programs (BPF_ENABLE_STATS) and CPU per GB"
"$DENO" run -A bench/real_cost.ts "$tmp/real_cost.json" ${quick:+--rounds 1 --seconds 2}
step "cost to other traffic: an outsider cgroup's ~1 GB and connects (BPF run counters)"
"$DENO" run -A bench/outsider_cost.ts "$tmp/outsider.json" ${quick:+--rounds 1}
step "bytes lost per fault: SIGKILL, restart, upgrade under steady traffic"
"$DENO" run -A bench/fault_loss.ts "$tmp/fault_loss.json" ${quick:+--quick}
step "cost of one counter read per backend"
"$DENO" run -A bench/read_cost.ts "$tmp/read.json" ${quick:+--reads 50 --min-ms 500}
step "throughput and CPU: none, floor, ebpf, nft, iptables, nethogs, iftop (highest rate and 1 Gbit/s)"
"$DENO" run -A bench/throughput.ts "$tmp/throughput.json" --backends ebpf,ebpf@1,nft,iptables \
  --monitors nethogs,iftop --rates max,1G --floor $tp_runs
step "ebpf throughput, paired: service vs outsider cgroup under one run"
# shellcheck disable=SC2086 # $paired is a list of flags
"$DENO" run -A bench/paired_throughput.ts "$tmp/paired_throughput.json" $paired
step "accuracy: counted vs wire bytes"
"$DENO" run -A bench/accuracy.ts "$tmp/accuracy.json" ${quick:+--rounds 1 --mb 30 --requests 60}
step "latency: burst to counters.json and to graph"
"$DENO" run -A bench/latency.ts "$tmp/latency.json" --bursts "$bursts"
step "scale: services and exclusion prefixes"
"$DENO" run -A bench/scale.ts "$tmp/scale.json" ${quick:+--quick}
step "graph CPU with three services on a terminal, a pipe and with --host; its memory over 10 min"
# shellcheck disable=SC2086 # $graph_mem is a list of flags
"$DENO" run -A bench/graph_cpu.ts --seconds "$graph_s" $graph_mem --json "$tmp/graph_cpu.json" || true
step "history: run's CPU for it, a year's size, report --days over a year (bench/history.ts)"
"$DENO" run -A bench/history.ts "$tmp/history.json" ${quick:+--quick}
step "names: DNS parsing cost per answer (bench/dns_parse.ts)"
"$DENO" run -A bench/dns_parse.ts "$tmp/dns_parse.json" ${quick:+--answers 20000}
"$DENO" run -A bench/dns_capture_cost.ts "$tmp/dns_capture_cost.json" ${quick:+--repeat 500000 --rounds 3}
step "CPU and memory of run and graph over ${footprint_s} s after ${warmup_s} s warm-up"
"$DENO" run -A bench/footprint.ts "$tmp/footprint.json" --seconds "$footprint_s" --warmup "$warmup_s"

step "merge"
"$DENO" run -A scripts/merge_bench.ts bench/results.json "$tmp"/*.json
"$DENO" run -A bench/report.ts bench/results.json docs/benchmarks.md
echo "bench: wrote bench/results.json and docs/benchmarks.md in $(($(date +%s) - t0)) s"
