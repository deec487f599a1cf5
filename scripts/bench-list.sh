#!/usr/bin/env bash
# Listing costs at N names (default 100,000): one node filled with names like dirD/subS/fileK
# (100 B – 4 KiB bodies), then the median time of pages in every order, a deep page by cursor,
# and the peak RSS of four concurrent sort=size requests. Give a second binary to compare:
# the data dir filled by the first is copied and opened by the second (which may upgrade its
# schema: the time of that first start is shown too).
#
# Usage: scripts/bench-list.sh BINARY [BINARY_AFTER] [NAMES]
# Needs curl. Uses ports 18771 and 18772 and a temporary directory.
set -euo pipefail
before="$1"
after="${2:-}"
names="${3:-100000}"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

start() { # BINARY DATA_DIR PORT
  local t0
  t0=$(date +%s%N)
  DISTSTORE_SECRET=bench-secret "$1" --listen "127.0.0.1:$3" --data-dir "$2" --scrub-rate 0 --s3-listen 127.0.0.1:0 >>"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$3/health" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$3/health" >/dev/null || { echo "node did not start" >&2; tail "$work/log" >&2; exit 1; }
  echo "start to healthy: $((($(date +%s%N) - t0) / 1000000)) ms"
}

stop() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
}

fill() { # PORT
  for s in 100 700 1500 4000; do head -c "$s" /dev/urandom >"$work/body$s"; done
  local sizes=(100 700 1500 4000) i=0 per=$((names / 1000))
  : >"$work/curl.cfg"
  for d in $(seq 0 99); do
    for s in $(seq 0 9); do
      for k in $(seq 0 $((per - 1))); do
        printf 'url = "http://127.0.0.1:%s/api/v1/files/dir%s/sub%s/file%s"\nupload-file = "%s"\noutput = "/dev/null"\n' \
          "$1" "$d" "$s" "$k" "$work/body${sizes[$((i % 4))]}" >>"$work/curl.cfg"
        i=$((i + 1))
      done
    done
  done
  local t0
  t0=$(date +%s)
  curl -fsS --no-progress-meter --parallel --parallel-max 8 -K "$work/curl.cfg"
  echo "filled $i names in $(($(date +%s) - t0)) s"
}

median_ms() { # URL: median of 5 timings, in ms; also the first answer's status
  local times=() code
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o "$work/out" -w '%{time_total}' "$1")")
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' "$1")
  printf '%s\n' "${times[@]}" | sort -n | sed -n 3p | awk -v c="$code" '{printf "%8.1f ms  (%s)", $1 * 1000, c}'
}

measure() { # PORT
  local base="http://127.0.0.1:$1/api/v1/files"
  local deep="dir90/sub5/file$(((names / 1000) / 2))"
  for q in \
    "limit=100" \
    "limit=100&after=$deep" \
    "limit=100&delimiter=/" \
    "limit=100&prefix=dir7/&delimiter=/" \
    "limit=100&prefix=dir7/sub3/&delimiter=/" \
    "limit=100&sort=size" \
    "limit=100&sort=size&order=desc" \
    "limit=100&sort=modified" \
    "limit=100&sort=modified&order=desc" \
    "limit=100&sort=size&offset=5000" \
    "limit=100&sort=size&after=$deep" \
    "limit=100&sort=modified&order=desc&after=$deep" \
    "limit=100&sort=size&prefix=dir7/sub3/&delimiter=/" \
    "limit=100&sort=modified&order=desc&prefix=dir7/&delimiter=/" \
    "limit=100&order=desc"; do
    printf '%-60s %s\n' "$q" "$(median_ms "$base?$q")"
  done
  local rss hwm
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  local clients=()
  for _ in 1 2 3 4; do
    curl -s -o /dev/null "$base?limit=1000&sort=size&order=desc" &
    clients+=($!)
  done
  wait "${clients[@]}"
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "RSS before four concurrent sort=size&limit=1000: $((rss / 1024)) MiB; peak after: $((hwm / 1024)) MiB"
}

echo "== filling with $before"
start "$before" "$work/data" 18771
fill 18771
stop
cp -r "$work/data" "$work/data-after"
echo "== $before (restarted, so its peak RSS is the listings')"
start "$before" "$work/data" 18771
measure 18771
stop
if [ -n "$after" ]; then
  echo "== $after (on a copy of the same data dir)"
  start "$after" "$work/data-after" 18772
  measure 18772
  stop
fi
