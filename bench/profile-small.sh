#!/usr/bin/env bash
# The small-request profile of issue 20: a kept-alive 1 KiB blob GET with a valid Bearer token
# through the real registry, at 64 connections (wrk), against each binary given and (--nginx)
# an nginx proxying the same registry the way bench/run.sh configures it. Prints per binary:
# the gateway's CPU per request from /proc (user + system, each run and the median), and with
# --strace the syscalls per request (`strace -c -f` over one counted run; strace slows the
# proxy, the counts per request stay), with --perf DIR a `perf record -g` profile of one run.
#
# With --static, the same GET through a second gateway (and nginx) in front of a static nginx
# serving the blob: what the proxy itself costs, without the registry. Each run also prints the
# write syscalls (write + writev) per request from /proc/PID/io, which needs no strace.
#
#   bench/profile-small.sh [--seconds S] [--runs N] [--strace] [--nginx] [--static] [--perf DIR] BINARY...
#
# Needs docker-registry, wrk, curl, python3 (strace, perf, nginx for their options).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=5 runs=3 do_strace="" do_nginx="" do_static="" perf_dir=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --strace) do_strace=1; shift ;;
    --nginx) do_nginx=1; shift ;;
    --static) do_static=1; shift ;;
    --perf) perf_dir=$2; shift 2 ;;
    -*) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
lua=$root/bench/report.lua
hz=$(getconf CLK_TCK)

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh" # nginx_head
write_calls() { local p t=0; for p in "$@"; do t=$((t + $(awk '/^syscw/{print $2}' "/proc/$p/io"))); done; echo "$t"; }
cpu_ticks() { local p t=0 f; for p in "$@"; do read -ra f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
# wrk_count URL SECONDS -> the number of requests answered (fails on any non-2xx answer)
wrk_count() {
  local out
  out=$(wrk -t2 -c64 -d"$2s" -s "$lua" -H "Authorization: Bearer $bearer" "$1")
  line=$(grep '^BENCH ' <<< "$out") || { echo "$out" >&2; return 1; }
  [[ $line == *" non2xx=0 "* ]] || { echo "bench/profile-small.sh: refused answers: $line" >&2; return 1; }
  sed 's/.*requests=\([0-9]*\).*/\1/' <<< "$line"
}
# measure NAME URL PID...: CPU per request over `runs` runs, then strace and perf if asked.
measure() {
  local name=$1 url=$2; shift 2
  local per=() writes=() n t0 t1 w0 w1 r
  wrk_count "$url" 1 > /dev/null # warm the pools
  for ((r = 0; r < runs; r++)); do
    t0=$(cpu_ticks "$@"); w0=$(write_calls "$@"); n=$(wrk_count "$url" "$seconds"); t1=$(cpu_ticks "$@"); w1=$(write_calls "$@")
    per+=("$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')")
    writes+=("$(awk -v w=$((w1 - w0)) -v n="$n" 'BEGIN{printf "%.2f", w / n}')")
  done
  echo "$name: CPU per request (us), $runs runs of ${seconds}s at 64 conns: ${per[*]}; median $(printf '%s\n' "${per[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
  echo "$name: write syscalls per request (/proc/PID/io syscw): ${writes[*]}"
  if [ -n "$do_strace" ]; then
    local attach=() p
    for p in "$@"; do attach+=(-p "$p"); done
    strace -c -f -o "$work/strace.txt" "${attach[@]}" & local strace_pid=$!
    sleep 1
    n=$(wrk_count "$url" "$seconds")
    kill -INT "$strace_pid"; wait "$strace_pid" || true
    echo "$name: syscalls per request over $n requests (strace -c -f):"
    awk -v n="$n" '$4 ~ /^[0-9]+$/ && $NF ~ /^[a-z_0-9]+$/ && $1 ~ /^[0-9.]+$/ {
        if ($NF == "total" || $4 / n >= 0.01) printf "  %-16s %6.2f\n", $NF, $4 / n }' "$work/strace.txt"
  fi
  if [ -n "$perf_dir" ]; then
    perf record -F 999 -g -o "$perf_dir/$name.perf.data" "${@/#/--pid=}" > "$perf_dir/$name.perf.log" 2>&1 & local perf_pid=$!
    sleep 0.5
    n=$(wrk_count "$url" "$seconds")
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    echo "$name: perf profile of $n requests in $perf_dir/$name.perf.data"
  fi
}

for bin in "$@"; do
  bin=$(realpath "$bin")
  stack_up
  repo=mygroup/myproject/bench
  bearer=$(stack_token "repository:$repo:pull,push")
  blob=$work/blob; head -c 1024 /dev/urandom > "$blob"
  digest=sha256:$(sha256sum "$blob" | cut -d' ' -f1)
  location=$(curl -sf -X POST -D - -o /dev/null -H "Authorization: Bearer $bearer" "$public/v2/$repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  curl -sf -X PUT -H "Authorization: Bearer $bearer" -H 'Content-Type: application/octet-stream' --data-binary "@$blob" "$location&digest=$digest" > /dev/null
  measure "$(basename "$bin")" "$public/v2/$repo/blobs/$digest" "$gateway_pid"
  nginx_here=$do_nginx
  if [ -n "$do_nginx" ]; then
    do_nginx="" # once: the same nginx for every binary
    registry_port=$(awk -F'[:/"]+' '/^upstream:/{print $(NF-1)}' "$work/gateway.yaml")
    nginx_port=$(free_port)
    mkdir -p "$work/nginx"
    cat > "$work/nginx/nginx.conf" <<NGINX
$(nginx_head "$work/nginx" auto)
  access_log $work/nginx/access.log;
  upstream registry { server 127.0.0.1:$registry_port; keepalive 32; }
$(nginx_proxy_server "$nginx_port" registry)
}
NGINX
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" > "$work/nginx/stdout.log" 2>&1 &
    nginx_pid=$!; pids+=("$nginx_pid")
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/v2/" && break; sleep 0.1; done
    mapfile -t workers < <(pgrep -P "$nginx_pid")
    measure nginx "http://127.0.0.1:$nginx_port/v2/$repo/blobs/$digest" "$nginx_pid" "${workers[@]}"
  fi
  if [ -n "$do_static" ]; then
    # A static nginx serving the blob at its registry path, and a second gateway in front of it
    # (the same keys and directory; nothing else changes).
    static_port=$(free_port); static_gateway_port=$(free_port)
    mkdir -p "$work/static/root/v2/$repo/blobs"
    cp "$blob" "$work/static/root/v2/$repo/blobs/$digest"
    cat > "$work/static/nginx.conf" <<NGINX
$(nginx_head "$work/static")
  access_log off;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$static_port; root $work/static/root; }
}
NGINX
    nginx -p "$work/static" -c "$work/static/nginx.conf" -e "$work/static/error.log" > "$work/static/stdout.log" 2>&1 &
    pids+=("$!")
    sed -e "s|^listen: .*|listen: \"127.0.0.1:$static_gateway_port\"|" \
      -e "s|^upstream: .*|upstream: { url: \"http://127.0.0.1:$static_port\" }|" "$work/gateway.yaml" > "$work/static-gateway.yaml"
    (cd "$work" && exec "$bin" serve --config "$work/static-gateway.yaml" > "$work/static-gateway.log" 2>&1) &
    static_gateway_pid=$!; pids+=("$static_gateway_pid")
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$static_gateway_port/v2/" && break; sleep 0.1; done
    measure "$(basename "$bin")-static" "http://127.0.0.1:$static_gateway_port/v2/$repo/blobs/$digest" "$static_gateway_pid"
    if [ -n "$nginx_here" ]; then
      static_nginx_port=$(free_port)
      sed -e "s|server 127.0.0.1:$registry_port;|server 127.0.0.1:$static_port;|" \
        -e "s|listen 127.0.0.1:$nginx_port;|listen 127.0.0.1:$static_nginx_port;|" \
        -e "s|$work/nginx/|$work/static-nginx/|g" "$work/nginx/nginx.conf" > "$work/static-nginx.conf"
      mkdir -p "$work/static-nginx"
      nginx -p "$work/static-nginx" -c "$work/static-nginx.conf" -e "$work/static-nginx/error.log" > "$work/static-nginx/stdout.log" 2>&1 &
      static_nginx_pid=$!; pids+=("$static_nginx_pid")
      for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$static_nginx_port/v2/" && break; sleep 0.1; done
      mapfile -t workers < <(pgrep -P "$static_nginx_pid")
      measure nginx-static "http://127.0.0.1:$static_nginx_port/v2/$repo/blobs/$digest" "$static_nginx_pid" "${workers[@]}"
    fi
  fi
  stack_cleanup; pids=()
  trap - EXIT
done
