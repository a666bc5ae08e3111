#!/usr/bin/env bash
# The small-request profile of issue 20: a kept-alive 1 KiB blob GET with a valid Bearer token
# through the real registry, at 64 connections (wrk), against each binary given and (--nginx)
# an nginx proxying the same registry the way bench/run.sh configures it. Prints per binary:
# the gateway's CPU per request from /proc (user + system, each run and the median), and with
# --strace the syscalls per request (`strace -c -f` over one counted run; strace slows the
# proxy, the counts per request stay), with --perf DIR a `perf record -g` profile of one run.
#
#   bench/profile-small.sh [--seconds S] [--runs N] [--strace] [--nginx] [--perf DIR] BINARY...
#
# Needs docker-registry, wrk, curl, python3 (strace, perf, nginx for their options).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=5 runs=3 do_strace="" do_nginx="" perf_dir=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --strace) do_strace=1; shift ;;
    --nginx) do_nginx=1; shift ;;
    --perf) perf_dir=$2; shift 2 ;;
    -*) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
lua=$root/bench/report.lua
hz=$(getconf CLK_TCK)

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
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
  local per=() n t0 t1 r
  wrk_count "$url" 1 > /dev/null # warm the pools
  for ((r = 0; r < runs; r++)); do
    t0=$(cpu_ticks "$@"); n=$(wrk_count "$url" "$seconds"); t1=$(cpu_ticks "$@")
    per+=("$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$n" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')")
  done
  echo "$name: CPU per request (us), $runs runs of ${seconds}s at 64 conns: ${per[*]}; median $(printf '%s\n' "${per[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
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
  if [ -n "$do_nginx" ]; then
    do_nginx="" # once: the same nginx for every binary
    registry_port=$(awk -F'[:/"]+' '/^upstream:/{print $(NF-1)}' "$work/gateway.yaml")
    nginx_port=$(free_port)
    mkdir -p "$work/nginx"
    user=""; [ "$(id -u)" != 0 ] || user="user root;"
    cat > "$work/nginx/nginx.conf" <<NGINX
$user
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  access_log $work/nginx/access.log;
  upstream registry { server 127.0.0.1:$registry_port; keepalive 32; }
  server {
    listen 127.0.0.1:$nginx_port;
    client_max_body_size 0;
    location /v2/ {
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" > "$work/nginx/stdout.log" 2>&1 &
    nginx_pid=$!; pids+=("$nginx_pid")
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/v2/" && break; sleep 0.1; done
    mapfile -t workers < <(pgrep -P "$nginx_pid")
    measure nginx "http://127.0.0.1:$nginx_port/v2/$repo/blobs/$digest" "$nginx_pid" "${workers[@]}"
  fi
  stack_cleanup; pids=()
  trap - EXIT
done
