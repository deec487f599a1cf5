#!/usr/bin/env bash
# DistStore scale benchmark (issue 14): what listing, counting, restarts and background work cost
# as the number of stored names grows, on one node and on a three-node cluster (R = 2).
#
# One node with SCALE_NAMES names (names like dNNN/sNNN/fNNNNNNN, 100 B to 4 KiB, one body in
# ten from a shared pool): ingest rate at 100k and at the end (and of a tenth more on top); restart
# to the first GET; median latency of the first page, a folder's page, a deep page by cursor, a
# prefix page, sort=size and sort=modified pages (whole store and a folder); /api/list's time;
# peak RSS under four concurrent sort=size pages; a delete then a put; idle CPU over
# SCALE_IDLE_SECS once start-up work is done; database bytes per name.
# Three nodes with SCALE_CLUSTER_NAMES names: ingest through one node; idle CPU per node; chunks
# copied when a node is down 60 s (inside --down-out-after) and back (target: none); a wiped node's
# time to list every name and to hold its share; a fourth node: chunks moved over distinct chunks
# (target ≤ 1.2 × R/N).
#
# Usage:   scripts/bench-scale.sh
# Knobs (environment):
#   SCALE_NAMES          names on the single node         (default 1000000; 0 skips it)
#   SCALE_CLUSTER_NAMES  names on the cluster             (default 200000; 0 skips it)
#   SCALE_CLIENTS        concurrent uploading connections (default 16)
#   SCALE_IDLE_SECS      idle-CPU window, seconds         (default 60)
#   SCALE_REPS           repetitions per latency figure; the median is reported (default 7)
#   SCALE_DIR            where the nodes' data dirs go    (default /tmp)
#   SCALE_BIN            this diststore binary instead of building target/release/diststore
#   SCALE_CSV            where the raw figures go         (default ./bench-scale-<date>.csv)
# Takes long at the defaults (about half an hour to fill a million names on a 2-core machine).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v python3 >/dev/null || { echo "bench-scale: needs python3" >&2; exit 1; }
if [[ -z "${SCALE_BIN:-}" ]]; then
  (cd "$REPO_ROOT" && cargo build --release --locked --quiet)
  SCALE_BIN="$REPO_ROOT/target/release/diststore"
fi
export SCALE_BIN
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
exec python3 "$REPO_ROOT/scripts/bench/scale.py"
