#!/usr/bin/env bash
# HTTP/2 against HTTP/1.1 through the TLS gateway, in front of the static file server (what
# bench/run.sh's "HTTP/2, static upstream" and "TLS 1.3, static upstream ... 64 conns" rows set
# up, without the registry and without nginx/haproxy): the gateway's CPU per request from
# /proc for each, the median of N runs, the upstream connections the gateway opened, and on
# request a perf profile or the syscalls per request.
#
#   bench/profile-h2.sh [--runs N] [--duration S] [--header MODE] [--registry] [--peers] [--perf DIR] [--strace DIR] [BIN...]
#
#   --runs N      runs of each load (default 3); the table gives min / median / max
#   --duration S  seconds per run (default 5)
#   --perf DIR    also `perf record -g` the gateway under one more h2load run: DIR/BIN.h2.perf.data
#   --strace DIR  also `strace -c -f` the gateway under one short h2load and one wrk run
#   --callgrind DIR  instead of the above, count instructions per request under callgrind:
#                 h2load -n 9600 over HTTP/2 (4 x 16) and over HTTP/1.1 (h2load --h1, 64
#                 connections); DIR/BIN.{h2,h1}.callgrind for callgrind_annotate; with --blob
#                 also instructions per MiB of one MIB-MiB GET over HTTP/2 (DIR/BIN.blob.callgrind)
#   --blob MIB    instead of the loads, GET a MIB-MiB file over TLS with curl (HTTP/2 by ALPN, as
#                 bench/run.sh's TLS blob row): the gateway's CPU ms per GiB and MiB/s, its
#                 write system calls and TLS records per GiB; with --strace all its system
#                 calls per GiB under strace -c -f for one more GET
#   --header MODE token.header of the gateway: x5c (the default), jwks or kid; the Bearer token
#                 (pull,push on one repository, as bench/run.sh's) is printed with its size
#   --registry    the upstream is Debian's docker-registry (distribution 2.8) trusting the
#                 gateway's certificate, as bench/run.sh's "1 KiB blob GET" rows, instead of the
#                 static nginx: the 1 KiB blob is pushed through the gateway first, and the
#                 registry's CPU per request is printed too (it verifies every token again)
#   --frames      print the frames of two requests on one connection (nghttp -nv) and stop
#   --peers       after the gateways, the same loads through nginx (`worker_processes auto`,
#                 `ssl http2`, keep-alive upstream, access log on) and haproxy (a thread per
#                 core, `alpn h2,http/1.1`, `http-reuse safe`, httplog on), configured as
#                 bench/run.sh's, in front of the same static server: their CPU per request
#                 (all of nginx's processes), the same table's rows; static upstream only
#   BIN...        gateways to compare, each measured in turn (default target/perf/portcullis)
#
# h2load: 4 connections x 16 streams (bench/run.sh's row); wrk: 64 connections, 2 threads.
# TOKEN_HEADER=MODE is --header MODE.
# Needs nginx, h2load, wrk, openssl, curl, python3 (perf and strace for those options;
# docker-registry for --registry).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh" # nginx_head, haproxy_head
runs=3 duration=5 perf_dir="" strace_dir="" callgrind_dir="" frames=0 blob_mib=0 bins=() registry=0 peers=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --perf) perf_dir=$(realpath -m "$2"); shift 2 ;;
    --strace) strace_dir=$(realpath -m "$2"); shift 2 ;;
    --frames) frames=1; shift ;;
    --header) TOKEN_HEADER=$2; shift 2 ;;
    --registry) registry=1; shift ;;
    --peers) peers=1; shift ;;
    --blob) blob_mib=$2; shift 2 ;;
    --callgrind) callgrind_dir=$(realpath -m "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) bins+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || bins=("$root/target/perf/portcullis")
case "${TOKEN_HEADER:-x5c}" in x5c | jwks | kid) ;; *) echo "bench/profile-h2.sh: --header x5c, jwks or kid" >&2; exit 2 ;; esac
[ "$registry" = 0 ] || [ "$blob_mib" = 0 ] || { echo "bench/profile-h2.sh: --blob is for the static upstream" >&2; exit 2; }
[ "$peers" = 0 ] || { [ "$registry" = 0 ] && [ "$blob_mib" = 0 ] && [ -z "$callgrind_dir" ]; } \
  || { echo "bench/profile-h2.sh: --peers is for the loads on the static upstream" >&2; exit 2; }
helper=$root/bench/helper.py
lua=$root/bench/report.lua
work=$(mktemp -d /tmp/portcullis-h2prof.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "bench/profile-h2.sh: $*" >&2; exit 1; }
port() { python3 "$helper" port; }
# write (and read) system calls so far (/proc/PID/io: no tracer, so no perturbation; syscr
# counts read(2), not the recvfrom the gateway's sockets use)
wchar() { awk '$1=="wchar:"{print $2}' "/proc/$1/io"; }
syscalls() { local p; for p in "$@"; do cat "/proc/$p/io"; done | awk '$1=="syscw:"{w+=$2} $1=="syscr:"{r+=$2} END{print w, r}'; }
per_req() { awk -v d="$(($2 - $1))" -v n="$3" 'BEGIN{printf "%.2f", d / n}'; }
cpu_ticks() { # PID...: user + system ticks of them all
  local f p t=0
  for p in "$@"; do read -ra f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done
  echo "$t"
}
per_request_us() { awk -v d="$(($2 - $1))" -v hz="$(getconf CLK_TCK)" -v n="$3" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}'; }
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END{printf "%s / %s / %s", v[1], v[int((NR + 1) / 2)], v[NR]}'; }

# The static server: nginx serving the 1 KiB file (its CPU is not the gateway's).
repo=mygroup/myproject/bench
static_port=$(port) gw_port=$(port)
mkdir -p "$work/static/root/v2/$repo/blobs" "$work/gw"
head -c 1024 /dev/urandom > "$work/small.bin"
small=sha256:$(sha256sum "$work/small.bin" | cut -d' ' -f1)
cp "$work/small.bin" "$work/static/root/v2/$repo/blobs/$small"
big=""
if [ "$blob_mib" != 0 ]; then
  head -c "$((blob_mib << 20))" /dev/zero > "$work/big.bin"
  big=sha256:$(sha256sum "$work/big.bin" | cut -d' ' -f1)
  mv "$work/big.bin" "$work/static/root/v2/$repo/blobs/$big"
fi
cat > "$work/static/nginx.conf" <<NGINX
$(nginx_head "$work/static")
  access_log off;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$static_port; root $work/static/root; }
}
NGINX
nginx -p "$work/static" -c "$work/static/nginx.conf" -e "$work/static/error.log" > "$work/static/stdout.log" 2>&1 &
pids+=("$!")
upstream_port=$static_port registry_pid=""
if [ "$registry" = 1 ]; then
  . "$root/scripts/lib.sh" # registry_yml
  upstream_port=$(port)
fi

# The gateway's keys, a PAT for alice, the TLS certificate (ECDSA P-256, as run.sh).
"${bins[0]}" init --dir "$work/gw" --upstream "http://127.0.0.1:$upstream_port" --public-url "https://127.0.0.1:$gw_port" > /dev/null
read -r _ pat < <("${bins[0]}" token generate | grep '^token:')
pat_sha=$(printf %s "$pat" | sha256sum | cut -d' ' -f1)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/gw/tls.key" -out "$work/gw/tls.crt" 2> /dev/null
export CURL_CA_BUNDLE=$work/gw/tls.crt
cat > "$work/gw/gateway.yaml" <<YAML
listen: "127.0.0.1:$gw_port"
public_url: "https://127.0.0.1:$gw_port"
upstream: { url: "http://127.0.0.1:$upstream_port" }
token: { issuer: portcullis, service: container_registry, expiry: 1h, signing_key: token.key, certificate: token.crt${TOKEN_HEADER:+, header: $TOKEN_HEADER} }
users:
  - username: alice
    personal_access_tokens:
      - { name: bench, token_sha256: "$pat_sha", scopes: [read_registry, write_registry] }
projects:
  - path: mygroup/myproject
    visibility: private
    members: { alice: developer }
tls: { cert: tls.crt, key: tls.key }
YAML

if [ "$registry" = 1 ]; then
  registry_yml "$work/registry.yml" "$upstream_port" "$work/gw/token.crt"
  docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
  registry_pid=$!; pids+=("$registry_pid")
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$upstream_port/v2/" && break; sleep 0.1; done
fi
url=https://127.0.0.1:$gw_port/v2/$repo/blobs/$small
# Upstream connections the gateway holds open (to the static server or the registry), now.
upstream_conns() { ss -Htn state established "( dport = :$upstream_port )" | wc -l; }
# The Bearer token of bench/run.sh (pull,push on the repository), its size on stderr.
get_token() {
  bearer=$(curl -sf -u "alice:$pat" "https://127.0.0.1:$gw_port/jwt/auth?service=container_registry&scope=repository:$repo:pull,push" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || die "no token"
  auth="Authorization: Bearer $bearer"
  echo "token.header ${TOKEN_HEADER:-x5c}: the Bearer token is ${#bearer} bytes (header $(echo "$bearer" | cut -d. -f1 | wc -c), claims $(echo "$bearer" | cut -d. -f2 | wc -c), signature $(echo "$bearer" | cut -d. -f3 | wc -c), with their newlines)" >&2
  [ "$registry" = 0 ] || seed_registry
}
# --registry: push the 1 KiB blob through the gateway (monolithic: POST, then PUT), once.
seed_registry() {
  [ -e "$work/seeded" ] && return 0
  local loc
  loc=$(curl -sf -X POST -H "$auth" -D - -o /dev/null "https://127.0.0.1:$gw_port/v2/$repo/blobs/uploads/" \
    | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}') || die "POST upload through the gateway failed"
  case "$loc" in /*) loc=https://127.0.0.1:$gw_port$loc ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$small" ;; *) loc="$loc?digest=$small" ;; esac
  curl -sf -X PUT -H "$auth" -H 'Content-Type: application/octet-stream' --data-binary "@$work/small.bin" -o /dev/null "$loc" \
    || die "PUT of the 1 KiB blob through the gateway failed"
  touch "$work/seeded"
}
h2() { # SECONDS -> h2_done
  h2load -c 4 -m 16 -t 1 -D "$1" -H "$auth" "$url" > "$work/h2load.out" 2>&1 || { cat "$work/h2load.out" >&2; die "h2load failed"; }
  grep -q '^Application protocol: h2' "$work/h2load.out" || { cat "$work/h2load.out" >&2; die "h2load did not speak h2"; }
  read -r h2_done h2_bad < <(awk '/^requests:/{d = $6; f = $10 + $12} /^status codes:/{s = $7 + $9} END{print d, f + s}' "$work/h2load.out")
  h2_rps=$(awk '/^finished in/{gsub(",", "", $4); print $4}' "$work/h2load.out")
  [ "$h2_bad" = 0 ] || { cat "$work/h2load.out" >&2; die "h2load: $h2_bad failed"; }
}
h1() { # SECONDS -> h1_done
  wrk -t2 -c64 -d"$1s" -s "$lua" -H "$auth" "$url" > "$work/wrk.out" 2>&1 || { cat "$work/wrk.out" >&2; die "wrk failed"; }
  line=$(grep '^BENCH ' "$work/wrk.out") || { cat "$work/wrk.out" >&2; die "wrk printed no result"; }
  h1_done=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
  h1_rps=$(echo "$line" | sed 's/.*rps=\([0-9.]*\).*/\1/')
  [ "$(echo "$line" | sed 's/.*non2xx=\([0-9]*\) sockerr=\([0-9]*\).*/\1\2/')" = 00 ] || { cat "$work/wrk.out" >&2; die "wrk: errors"; }
}

reg_ticks() { if [ -n "$registry_pid" ]; then cpu_ticks "$registry_pid"; else echo 0; fi; }

# one_load N PID...: one run of the load hN (h2 or h1) against $url: the CPU of the processes
# PID... (a proxy's) and of the registry per request, its write and read system calls per
# request, the upstream connections a second in, appended to load N's lists (cN, rN, swN, srN,
# rcN; uN the most connections).
one_load() {
  local n=$1; shift
  local -n cpu=c$n rate=r$n writes=sw$n reads=sr$n reg=rc$n conns=u$n
  local count=h${n}_done rps=h${n}_rps w0 s0 w1 s1 p0 p1 q0 q1 sp u
  read -r w0 s0 < <(syscalls "$@")
  (sleep 1; upstream_conns > "$work/conns") & sp=$!
  q0=$(reg_ticks); p0=$(cpu_ticks "$@"); "h$n" "$duration"; p1=$(cpu_ticks "$@"); q1=$(reg_ticks)
  wait "$sp"; u=$(cat "$work/conns"); [ "$u" -gt "$conns" ] && conns=$u
  read -r w1 s1 < <(syscalls "$@")
  cpu+=("$(per_request_us "$p0" "$p1" "${!count}")") rate+=("${!rps}")
  reg+=("$(per_request_us "$q0" "$q1" "${!count}")")
  writes+=("$(per_req "$w0" "$w1" "${!count}")") reads+=("$(per_req "$s0" "$s1" "${!count}")")
}

# loads NAME PID...: the h2load and wrk runs against $url, with the CPU of the processes
# PID... (a proxy's) per request; one row of the table and its syscall line.
loads() {
  local name=$1; shift
  h2 1; h1 1 # warm-up
  c2=() c1=() r2=() r1=() sw2=() sr2=() sw1=() sr1=() u2=0 u1=0 rc2=() rc1=()
  for _ in $(seq "$runs"); do
    one_load 2 "$@"
    one_load 1 "$@"
  done
  printf '%-40s %-28s %-28s %-24s %-24s %s\n' "$name" "$(echo "${c2[*]}" | median)" "$(echo "${c1[*]}" | median)" \
    "$(echo "${r2[*]}" | median)" "$(echo "${r1[*]}" | median)" "$u2/$u1"
  echo "  write system calls per request, median (syscw: write/writev; recvfrom is not counted there): h2 $(echo "${sw2[*]}" | median | awk '{print $3}'), h1 $(echo "${sw1[*]}" | median | awk '{print $3}')"
  [ -z "$registry_pid" ] || echo "  registry CPU per request, min / median / max: h2 $(echo "${rc2[*]}" | median), h1 $(echo "${rc1[*]}" | median)"
}

if [ -n "$callgrind_dir" ]; then
  mkdir -p "$callgrind_dir"; cg_requests=9600
  echo "| binary | HTTP/2 4 x 16: instructions per request | HTTP/1.1 64 conns: instructions per request |"
  echo "|---|---|---|"
  for bin in "${bins[@]}"; do
    name=$(basename "$bin") cg=$work/cg.out
    read -r gw_pid _ < <(python3 "$helper" spawn "$gw_port" "$work/gateway.log" valgrind --tool=callgrind "--callgrind-out-file=$cg" "$bin" serve --config "$work/gw/gateway.yaml")
    pids+=("$gw_pid")
    for _ in $(seq 600); do curl -s -o /dev/null "https://127.0.0.1:$gw_port/v2/" && break; sleep 0.1; done
    get_token; row="| $name |"
    for kind in h2 h1; do
      flags=(-c 4 -m 16); [ "$kind" = h2 ] || flags=(--h1 -c 64)
      h2load "${flags[@]}" -t 1 -n 640 -H "$auth" "$url" > /dev/null 2>&1 || die "warm-up failed"
      callgrind_control -z "$gw_pid" > /dev/null 2>&1
      h2load "${flags[@]}" -t 1 -n "$cg_requests" -H "$auth" "$url" > "$work/h2load.out" 2>&1 || die "h2load failed"
      grep -q "$cg_requests succeeded" "$work/h2load.out" || { cat "$work/h2load.out" >&2; die "not every request succeeded"; }
      rm -f "$cg".*; callgrind_control -d "$gw_pid" > /dev/null 2>&1; sleep 1
      total=$(cat "$cg".* | awk '/^summary:/{t += $2} END{print t}')
      cat "$cg".* > "$callgrind_dir/$name.$kind.callgrind"
      row="$row $(awk -v t="$total" -v n="$cg_requests" 'BEGIN{printf "%.0f", t / n}') |"
    done
    if [ "$blob_mib" != 0 ]; then # with --blob: instructions per MiB of one GET over HTTP/2
      curl -s --tlsv1.3 -o /dev/null -H "$auth" "${url%/*}/$big" || die "blob warm-up failed"
      callgrind_control -z "$gw_pid" > /dev/null 2>&1
      size=$(curl -s --tlsv1.3 -o /dev/null -w '%{size_download}' -H "$auth" "${url%/*}/$big")
      [ "$size" = "$((blob_mib << 20))" ] || die "blob GET gave $size bytes"
      rm -f "$cg".*; callgrind_control -d "$gw_pid" > /dev/null 2>&1; sleep 1
      total=$(cat "$cg".* | awk '/^summary:/{t += $2} END{print t}')
      cat "$cg".* > "$callgrind_dir/$name.blob.callgrind"
      row="$row ${blob_mib} MiB GET: $(awk -v t="$total" -v m="$blob_mib" 'BEGIN{printf "%.0f", t / m}') instructions per MiB |"
    fi
    echo "$row"
    kill "$gw_pid"; for _ in $(seq 100); do kill -0 "$gw_pid" 2> /dev/null || break; sleep 0.1; done
  done
  exit 0
fi

printf '%-40s %-28s %-28s %-24s %-24s %s\n' binary "h2 4x16 CPU us/req" "h1 64 conns CPU us/req" "h2 req/s" "h1 req/s" "upstream conns h2/h1"
for bin in "${bins[@]}"; do
  log=$work/gateway.log
  read -r gw_pid _ < <(python3 "$helper" spawn "$gw_port" "$log" "$bin" serve --config "$work/gw/gateway.yaml")
  pids+=("$gw_pid")
  for _ in $(seq 100); do curl -s -o /dev/null "https://127.0.0.1:$gw_port/v2/" && break; sleep 0.1; done
  get_token
  [ "$(curl -sf -H "$auth" "$url" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] || die "the 1 KiB GET through the gateway is wrong"
  if [ "$blob_mib" != 0 ]; then
    ms=() speeds=() versions="" writes=() records=()
    for _ in $(seq "$runs"); do
      p0=$(cpu_ticks "$gw_pid") c0=$(wchar "$gw_pid"); read -r w0 _ < <(syscalls "$gw_pid")
      read -r speed size version < <(curl -s --tlsv1.3 -o /dev/null -w '%{speed_download} %{size_download} %{http_version}\n' -H "$auth" "${url%/*}/$big")
      p1=$(cpu_ticks "$gw_pid") c1=$(wchar "$gw_pid"); read -r w1 _ < <(syscalls "$gw_pid")
      [ "$size" = "$((blob_mib << 20))" ] || die "blob GET gave $size bytes"
      writes+=("$(awk -v d="$((w1 - w0))" -v b="$size" 'BEGIN{printf "%.0f", d * 1073741824 / b}')")
      # TLS records: what was written beyond the payload and its 9-byte HTTP/2 frame headers
      # (one a 16 KiB frame), at 22 bytes a TLS 1.3 record (5 header, 1 type, 16 tag).
      records+=("$(awk -v d="$((c1 - c0))" -v b="$size" 'BEGIN{printf "%.0f", (d - b - b / 16384 * 9) / 22 * 1073741824 / b}')")
      ms+=("$(awk -v d="$((p1 - p0))" -v hz="$(getconf CLK_TCK)" -v b="$size" 'BEGIN{printf "%.0f", d / hz * 1000 * 1073741824 / b}')")
      speeds+=("$(awk -v s="$speed" 'BEGIN{printf "%.0f", s / 1048576}')") versions="$versions $version"
    done
    echo "$(basename "$bin"): ${blob_mib} MiB GET (HTTP/$versions): CPU ms per GiB $(echo "${ms[*]}" | median), MiB/s $(echo "${speeds[*]}" | median)"
    echo "  per GiB: write system calls $(echo "${writes[*]}" | median), TLS records (from the bytes written) $(echo "${records[*]}" | median)"
    if [ -n "$strace_dir" ]; then
      mkdir -p "$strace_dir"; name=$(basename "$bin")
      strace -c -f -p "$gw_pid" -o "$strace_dir/$name.blob.strace" 2> /dev/null & sp=$!
      sleep 0.5; curl -s --tlsv1.3 -o /dev/null -H "$auth" "${url%/*}/$big"; sleep 0.2; kill -INT "$sp"; wait "$sp" || true
      echo "  strace -c -f, one GET: system calls per GiB $(awk -v m="$blob_mib" '$NF=="total"{printf "%.0f", $4 * 1024 / m}' "$strace_dir/$name.blob.strace")"
    fi
    kill "$gw_pid"; for _ in $(seq 50); do kill -0 "$gw_pid" 2> /dev/null || break; sleep 0.1; done
    continue
  fi
  if [ "$frames" = 1 ]; then
    nghttp -nv -H "$auth" "$url" "$url" | grep -E "(send|recv) [A-Z_]+ frame|SETTINGS_|window_size_increment|length="
    exit 0
  fi
  loads "$(basename "$bin")" "$gw_pid"
  name=$(basename "$bin")
  if [ -n "$perf_dir" ]; then
    mkdir -p "$perf_dir"
    perf record -F 999 -g -p "$gw_pid" -o "$perf_dir/$name.h2.perf.data" > "$perf_dir/$name.h2.perf.log" 2>&1 & pp=$!
    sleep 0.5; h2 "$duration"; kill -INT "$pp"; wait "$pp" || true
    perf record -F 999 -g -p "$gw_pid" -o "$perf_dir/$name.h1.perf.data" > "$perf_dir/$name.h1.perf.log" 2>&1 & pp=$!
    sleep 0.5; h1 "$duration"; kill -INT "$pp"; wait "$pp" || true
  fi
  if [ -n "$strace_dir" ]; then
    mkdir -p "$strace_dir"
    for kind in h2 h1; do
      strace -c -f -p "$gw_pid" -o "$strace_dir/$name.$kind.strace" 2> /dev/null & sp=$!
      sleep 0.5; "$kind" 2; sleep 0.2; kill -INT "$sp"; wait "$sp" || true
      # STRACE_FDS=1: which sockets the writes go to (the upstream, the client, a log), per request
      if [ -n "${STRACE_FDS:-}" ]; then
        strace -f -yy -e trace=write,writev -p "$gw_pid" -o "$strace_dir/$name.$kind.fds" 2> /dev/null & sp=$!
        sleep 0.5; "$kind" 2; sleep 0.2; kill -INT "$sp"; wait "$sp" || true
        done_var=${kind}_done
        echo "$name $kind: writes per request by target: $(grep -v 'resumed>' "$strace_dir/$name.$kind.fds" | sed -nE 's/^[0-9]+ +(writev?)\([0-9]+<(TCP:\[[^]]*\]|[^>]*)>.*/\1 \2/p' \
          | sed -E 's/TCP:\[127.0.0.1:[0-9]+->127.0.0.1:'"$static_port"'\]/upstream/; s/TCP:\[127.0.0.1:'"$gw_port"'->[^]]*\]/client/; s#/tmp/[^ ]*/#log:#' \
          | sort | uniq -c | sort -rn | head -5 | awk -v n="${!done_var}" '{printf "%s %s %.2f; ", $2, $3, $1 / n}')"
      fi
      done_var=${kind}_done
      echo "$name $kind: ${!done_var} requests; syscalls per request: $(awk -v n="${!done_var}" '$NF=="total"{printf "%.2f", $4 / n}' "$strace_dir/$name.$kind.strace")"
    done
  fi
  kill "$gw_pid"; for _ in $(seq 50); do kill -0 "$gw_pid" 2> /dev/null || break; sleep 0.1; done
done

# --peers: nginx and haproxy in front of the same static server, configured as bench/run.sh's
# TLS rows (one certificate, TLS 1.2 and 1.3, HTTP/2 by ALPN, keep-alive upstream, access log
# on), the same loads with the same Bearer token (its bytes cost them the same HPACK work).
if [ "$peers" = 1 ]; then
  [ -n "${auth:-}" ] || die "--peers needs a gateway run first (the token)"
  nginx_port=$(port) haproxy_port=$(port)
  mkdir -p "$work/nginx" "$work/haproxy"
  cat > "$work/nginx/nginx.conf" <<NGINX
$(nginx_head "$work/nginx" auto)
  access_log $work/nginx/access.log;
  upstream static { server 127.0.0.1:$static_port; keepalive 32; }
$(nginx_proxy_server "$nginx_port" static "$work/gw")
}
NGINX
  cat "$work/gw/tls.crt" "$work/gw/tls.key" > "$work/haproxy/haproxy.pem"
  cat > "$work/haproxy/haproxy.cfg" <<HAPROXY
$(haproxy_head 4096)
frontend static_tls
  bind 127.0.0.1:$haproxy_port ssl crt $work/haproxy/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2
  http-request set-header X-Forwarded-Proto https
  default_backend static
backend static
  http-reuse safe
  server static 127.0.0.1:$static_port
HAPROXY
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" > "$work/nginx/stdout.log" 2>&1 &
  nginx_pid=$!; pids+=("$nginx_pid")
  haproxy -db -f "$work/haproxy/haproxy.cfg" > /dev/null 2> "$work/haproxy/stderr.log" &
  haproxy_pid=$!; pids+=("$haproxy_pid")
  for peer in nginx haproxy; do
    peer_port=${peer}_port
    url=https://127.0.0.1:${!peer_port}/v2/$repo/blobs/$small
    for _ in $(seq 100); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
    [ "$(curl -sf -H "$auth" "$url" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] || die "the 1 KiB GET through $peer is wrong"
    if [ "$peer" = nginx ]; then
      # nginx: the master and its workers
      loads nginx "$nginx_pid" $(pgrep -P "$nginx_pid" | tr '\n' ' ')
    else
      loads haproxy "$haproxy_pid"
    fi
  done
fi
