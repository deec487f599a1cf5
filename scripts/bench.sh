#!/usr/bin/env bash
# DistStore single-node benchmark.
#
# Measures, as medians over BENCH_REPS repetitions (the machine is shared and noisy, so one run
# says little):
#   1. PUT and GET throughput (MB/s) for BENCH_TOTAL_MIB of distinct random data, streamed
#      sequentially with curl, one large file after another;
#   2. 4 KiB PUT and GET operations per second at 16 concurrent connections (wrk);
#   3. the node's peak RSS (VmHWM) while the large files stream;
#   4. the machine's own limits on the same bytes: `openssl dgst -sha256` throughput and
#      `dd ... conv=fdatasync` write throughput on the data dir's filesystem; the node's numbers
#      are reported as ratios to them, because absolute MB/s mean nothing across machines.
#
# Every repetition gets a fresh node on an empty data dir, so the same random files can be
# uploaded again without deduplicating against the previous repetition.
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
#
# Units: 1 MB = 10^6 bytes (as dd reports); sizes of files are in MiB.
#
# Structure (for adding e.g. a cluster section): start_node / stop_node manage node processes,
# bench_put_get and bench_small_ops take a node URL and append to the result arrays,
# machine_limits measures the baselines, report prints the table.

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

# Targets the report compares against.
TARGET_PUT_RATIO=0.35   # PUT MB/s / sha256 MB/s
TARGET_GET_RATIO=0.55   # GET MB/s / sha256 MB/s
TARGET_PUT_OPS=3000
TARGET_GET_OPS=15000
TARGET_RSS_MIB=128

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
  for tool in cargo curl wrk openssl dd awk sort split head; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) && return
  for tool in "${missing[@]}"; do
    case "$tool" in
      wrk) hint+=("wrk: apt-get install -y wrk") ;;
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
WORK=""

cleanup() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
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
  "$BIN" --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  NODE_PID=$!
  NODE_PIDS+=("$NODE_PID")
  NODE_URL=""
  local deadline=$((SECONDS + 30))
  while [[ -z "$NODE_URL" ]]; do
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
      cat "$dir/stdout.log" "$dir/stderr.log" >&2 || true
      die "node $name exited during start-up"
    fi
    ((SECONDS < deadline)) || die "node $name printed no 'listening on' line within 30 s"
    NODE_URL="$(sed -n 's/^diststore listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/stdout.log" | head -n 1)"
    [[ -n "$NODE_URL" ]] || sleep 0.05
  done
  log "node $name: pid $NODE_PID at $NODE_URL"
}

# stop_node PID NAME: stops the node and deletes its data, so the disk doesn't fill up over reps.
stop_node() {
  local pid="$1" name="$2"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "${WORK:?}/$name"
}

# Peak resident set size of a process so far, in MiB (VmHWM is the kernel's high-water mark).
peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
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
  local url="$1" prefix="$2" cfg="$WORK/small-upload.curl" i
  : >"$cfg"
  for ((i = 0; i < BENCH_SMALL_FILES; i++)); do
    printf 'upload-file = "%s/small/s%06d"\nurl = "%s/api/v1/files/%s/%d"\noutput = "/dev/null"\n' \
      "$WORK" "$i" "$url" "$prefix" "$i" >>"$cfg"
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
R_PUT_OPS=() R_GET_OPS=() R_PUT_NON2XX=() R_GET_NON2XX=() R_PUT_ERRORS=() R_GET_ERRORS=()
R_PUT_P99_MS=() R_GET_P99_MS=()
R_SHA_MBS=() R_DD_MBS=()

# bench_put_get URL TAG: PUT every large file under TAG/, then GET them all back; each direction
# timed as a whole, sequential, the way one client streams a big upload or download.
bench_put_get() {
  local url="$1" tag="$2" i code t0 t1 resp new_bytes=0 nb size
  log "$tag: PUT $BENCH_FILES x $FILE_MIB MiB"
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    resp="$WORK/put-response.json"
    code="$(curl -sS -T "${LARGE_FILES[i]}" "$url/api/v1/files/$tag/f$i" -o "$resp" -w '%{http_code}')"
    [[ "$code" == 201 ]] || die "PUT $tag/f$i: HTTP $code: $(head -c 300 "$resp")"
    nb="$(grep -o '"new_bytes":[0-9]*' "$resp" | cut -d: -f2)"
    size="$(grep -o '"size":[0-9]*' "$resp" | cut -d: -f2)"
    [[ "$size" == "$FILE_BYTES" ]] || die "PUT $tag/f$i: server says size $size, sent $FILE_BYTES"
    new_bytes=$((new_bytes + ${nb:-0}))
  done
  t1="$(now)"
  R_PUT_MBS+=("$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")")
  # Distinct random data must not deduplicate; if it did, the PUT number is meaningless.
  if ((new_bytes < TOTAL_BYTES * 9 / 10)); then
    warn "$tag: PUT stored only $new_bytes new bytes of $TOTAL_BYTES: unexpected dedup?"
  fi

  log "$tag: GET $BENCH_FILES x $FILE_MIB MiB"
  local out
  t0="$(now)"
  for ((i = 0; i < BENCH_FILES; i++)); do
    out="$(curl -sS "$url/api/v1/files/$tag/f$i" -o /dev/null -w '%{http_code} %{size_download}')"
    [[ "$out" == "200 $FILE_BYTES" ]] || die "GET $tag/f$i: expected '200 $FILE_BYTES', got '$out'"
  done
  t1="$(now)"
  R_GET_MBS+=("$(mbps "$TOTAL_BYTES" "$(calc "$t1 - $t0")")")

  # Outside the timing: one file back byte for byte, so a fast but wrong GET can't pass.
  local got
  got="$(curl -sS "$url/api/v1/files/$tag/f0" | openssl dgst -sha256 -r | cut -d' ' -f1)"
  [[ "$got" == "$FILE0_SHA256" ]] || die "GET $tag/f0 returned different bytes (sha256 $got)"
}

# run_wrk URL ARGS...: runs wrk with the Lua script and sets WRK_* from its WRK_RESULT line.
run_wrk() {
  local url="$1"
  shift
  local out="$WORK/wrk.out"
  wrk -t"$BENCH_WRK_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_DURATION}s" --timeout 10s \
    -s "$WRK_LUA" "$url" -- "$@" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
  local line
  line="$(grep '^WRK_RESULT ' "$out")" || { cat "$out" >&2; die "wrk printed no WRK_RESULT line"; }
  local kv
  for kv in ${line#WRK_RESULT }; do
    printf -v "WRK_${kv%%=*}" '%s' "${kv#*=}"
  done
  # shellcheck disable=SC2154 # set just above through printf -v
  WRK_OPS="$(calc "$WRK_requests / ($WRK_duration_us / 1000000)")"
  WRK_SOCKET_ERRORS=$((WRK_connect + WRK_read + WRK_write + WRK_timeout))
  WRK_P99_MS="$(calc "$WRK_p99_us / 1000")"
}

# bench_small_ops URL TAG: 4 KiB PUTs (a new name each) and 4 KiB GETs over pre-uploaded files.
bench_small_ops() {
  local url="$1" tag="$2"
  log "$tag: wrk PUT 4 KiB, ${BENCH_CONNECTIONS} connections, ${BENCH_DURATION} s"
  run_wrk "$url" put "$tag/small-put"
  R_PUT_OPS+=("$WRK_OPS") R_PUT_NON2XX+=("$WRK_non2xx") R_PUT_ERRORS+=("$WRK_SOCKET_ERRORS")
  R_PUT_P99_MS+=("$WRK_P99_MS")
  ((WRK_non2xx == 0)) || warn "$tag: wrk PUT got $WRK_non2xx non-2xx responses of $WRK_requests"
  ((WRK_SOCKET_ERRORS == 0)) || warn "$tag: wrk PUT had $WRK_SOCKET_ERRORS socket errors/timeouts"

  log "$tag: uploading $BENCH_SMALL_FILES small files for the GET run"
  upload_small_files "$url" "$tag/small-get"
  log "$tag: wrk GET 4 KiB, ${BENCH_CONNECTIONS} connections, ${BENCH_DURATION} s"
  run_wrk "$url" get "$tag/small-get" "$BENCH_SMALL_FILES"
  R_GET_OPS+=("$WRK_OPS") R_GET_NON2XX+=("$WRK_non2xx") R_GET_ERRORS+=("$WRK_SOCKET_ERRORS")
  R_GET_P99_MS+=("$WRK_P99_MS")
  ((WRK_non2xx == 0)) || warn "$tag: wrk GET got $WRK_non2xx non-2xx responses of $WRK_requests"
  ((WRK_SOCKET_ERRORS == 0)) || warn "$tag: wrk GET had $WRK_SOCKET_ERRORS socket errors/timeouts"
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
# Report

# verdict VALUE OP TARGET → "ok" / "MISS"
verdict() {
  if awk "BEGIN { exit !($1 $2 $3) }"; then printf 'ok'; else printf 'MISS'; fi
}

list() { local v out=""; for v in "$@"; do out+="$(printf '%.1f ' "$v")"; done; printf '%s' "${out% }"; }

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
  if ((${#WARNINGS[@]} > 0)); then
    echo
    echo "warnings:"
    printf '  - %s\n' "${WARNINGS[@]}"
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  local knob
  for knob in BENCH_REPS BENCH_TOTAL_MIB BENCH_FILES BENCH_DURATION BENCH_CONNECTIONS \
    BENCH_WRK_THREADS BENCH_SMALL_FILES; do
    require_uint "$knob"
  done
  check_tools
  [[ -f "$WRK_LUA" ]] || die "missing $WRK_LUA"
  mkdir -p "$BENCH_DIR"
  WORK="$(mktemp -d "$BENCH_DIR/diststore-bench.XXXXXX")"
  log "work dir $WORK"

  build
  make_large_files
  make_small_files

  # One fresh node per rep: an empty store each time, so nothing deduplicates against the
  # previous rep, and VmHWM is this rep's peak. The machine limits are sampled in the same rep
  # so that they see the same background load.
  local rep name
  for ((rep = 1; rep <= BENCH_REPS; rep++)); do
    log "--- rep $rep of $BENCH_REPS"
    machine_limits
    name="node-rep$rep"
    start_node "$name"
    bench_put_get "$NODE_URL" "rep$rep"
    R_RSS_MIB+=("$(peak_rss_mib "$NODE_PID")")
    bench_small_ops "$NODE_URL" "rep$rep"
    R_RSS_AFTER_SMALL_MIB+=("$(peak_rss_mib "$NODE_PID")")
    stop_node "$NODE_PID" "$name"
    log "rep $rep: PUT ${R_PUT_MBS[-1]%.*} MB/s, GET ${R_GET_MBS[-1]%.*} MB/s," \
      "PUT ${R_PUT_OPS[-1]%.*} ops/s, GET ${R_GET_OPS[-1]%.*} ops/s, RSS ${R_RSS_MIB[-1]} MiB," \
      "sha256 ${R_SHA_MBS[-1]%.*} MB/s, dd ${R_DD_MBS[-1]%.*} MB/s"
  done

  report
}

main "$@"
