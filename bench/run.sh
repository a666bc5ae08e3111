#!/usr/bin/env bash
# Issue 6's benchmark: the same work against the registry directly, through the gateway and
# through nginx (the canonical registry proxy config), all on loopback, each comparison run N
# times with the targets interleaved; prints the machine and ONE table (min / median / max).
#
#   bench/run.sh [--runs N] [--duration SECONDS] [--blob-mib MIB] [--upload-mib MIB]
#                [--soak SECONDS] [--profile DIR] [--token-header MODE] [--smoke]
#
#   --runs N        repetitions of every comparison (default 3)
#   --duration S    seconds per wrk run (default 10)
#   --blob-mib      size of the blob pulled (default 1024)
#   --upload-mib    size of the PATCH upload (default 512)
#   --soak S        seconds of mixed traffic (blob, manifest, token) through the gateway at the
#                   end, RSS compared between its first tenth and its end (default 600)
#   --profile DIR   perf record the gateway during run 1's blob GET, 64-connection 1 KiB GET and
#                   ES256 token issuance (DIR/{get,small,token}.perf.data; those numbers are
#                   perturbed)
#   --directory L   directory sizes for the scale rows, PROJECTS:USERS:TOKENS separated by spaces
#                   (default "10:10:10 1000:1000:1000 100000:10000:100000"; "" skips them)
#   --token-header  the gateways' token.header (default kid: the registry here is distribution
#                   2.8, which finds a key by its libtrust kid alone, as GitLab's tokens name it;
#                   the shorter token is what every proxy in the table forwards; x5c measures
#                   the gateway's default, which distribution 3.x needs)
#   --smoke         seconds-long version for CI: 8 MiB blob, 4 MiB upload, 1 s wrk, 3 s soak, 1 run,
#                   200 idle TLS connections, directories of 10 and 10,000 projects.
#                   Asserts only that everything completes and the table prints.
#
# PORTCULLIS_BIN=/path/to/portcullis uses that binary; default: scripts/build-release (the
# shipped, profile-guided build; about 15 minutes), or with --smoke cargo build --release.
# Needs docker-registry, nginx, haproxy, h2load (nghttp2-client), openssl, wrk, curl, python3
# (scripts/install-deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

runs=3 duration=10 blob_mib=1024 upload_mib=512 soak=600 smoke=0 profile_dir="" token_header=kid
dir_sizes="10:10:10 1000:1000:1000 100000:10000:100000" dir_sizes_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --blob-mib) blob_mib=$2; shift 2 ;;
    --upload-mib) upload_mib=$2; shift 2 ;;
    --soak) soak=$2; shift 2 ;;
    --profile) profile_dir=$(realpath -m "$2"); shift 2 ;;
    --directory) dir_sizes=$2 dir_sizes_given=1; shift 2 ;;
    --token-header) token_header=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$smoke" = 1 ]; then runs=1 duration=1 blob_mib=8 upload_mib=4 soak=3; fi
# The smoke run's directories stop at 10,000 projects (seconds to generate, check and load),
# unless --directory says otherwise.
if [ "$smoke" = 1 ] && [ "$dir_sizes_given" = 0 ]; then dir_sizes="10:10:10 10000:1000:10000"; fi

for tool in docker-registry nginx haproxy h2load openssl wrk curl python3 sha256sum; do
  command -v "$tool" > /dev/null || { echo "bench/run.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
[ -z "$profile_dir" ] || command -v perf > /dev/null || { echo "--profile needs perf" >&2; exit 1; }

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  bin=$(realpath "$PORTCULLIS_BIN")
elif [ "$smoke" = 1 ]; then
  cargo build --release --quiet
  bin=$root/target/release/portcullis
else
  scripts/build-release
  bin=$root/target/release/portcullis
fi
# 1,000 idle connections need file descriptors in the gateway and the helper holding them.
# 10,000 idle TLS connections (issue 20) need more than 10,000.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
idle_conns=1000 idle_tls=10000
[ "$smoke" = 0 ] || idle_tls=200
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 1300 ]; then idle_conns=$(($(ulimit -n) - 300)); fi
# haproxy counts two descriptors a connection (client and server) and will not start with a
# maxconn the limit cannot hold: with the usual hard limit of 20,000 every proxy gets 9,700.
haproxy_maxconn=40000
if [ "$(ulimit -n)" != unlimited ]; then haproxy_maxconn=$((($(ulimit -n) - 400) / 2)); fi
if [ "$idle_tls" -gt $((haproxy_maxconn - 100)) ]; then idle_tls=$((haproxy_maxconn - 100)); fi
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh" # registry_yml
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh" # nginx_head, haproxy_head
helper=$root/bench/helper.py
lua=$root/bench/report.lua
mixed_lua=$root/bench/mixed.lua

# --- processes and the temporary folder: everything started is killed by pid on exit ---------
work=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
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
# Stops one process this script started (and forgets it).
stop() {
  local p=$1 q keep=()
  kill "$p" 2> /dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
  for q in "${pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  pids=("${keep[@]}")
}

die() { echo "bench/run.sh: $*" >&2; exit 1; }
port() { python3 "$helper" port; }
wait_http() { # URL NAME LOG
  for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  cat "$3" >&2; die "$2 did not come up"
}
# CPU time (user + system, in clock ticks) used so far by the given pids.
cpu_ticks() { local p t=0 f; for p in "$@"; do read -ra f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
ticks_ms() { awk -v d="$(($2 - $1))" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", d / hz * 1000}'; } # BEFORE AFTER
per_request_us() { awk -v d="$(($2 - $1))" -v hz="$(getconf CLK_TCK)" -v n="$3" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}'; } # BEFORE AFTER REQUESTS
rss_kib() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }

# --- set-up: keys, users, configs --------------------------------------------------------------
registry_port=$(port); gateway_port=$(port); rsa_port=$(port); nginx_port=$(port); startup_port=$(port)
# The same proxies in front of a static file server: what each adds by itself, without the
# registry's ~2 ms of CPU a request (and its noise) in the figures.
static_port=$(port); static_gateway_port=$(port); static_nginx_port=$(port)
# haproxy beside nginx (issue 20), and all three proxies terminating TLS with one ECDSA P-256
# certificate, in front of the registry and in front of the static server.
haproxy_port=$(port); static_haproxy_port=$(port)
tls_gateway_port=$(port); tls_nginx_port=$(port); tls_haproxy_port=$(port)
tls_static_gateway_port=$(port); tls_static_nginx_port=$(port); tls_static_haproxy_port=$(port)
direct=http://127.0.0.1:$registry_port
gateway=http://127.0.0.1:$gateway_port
rsa_gateway=http://127.0.0.1:$rsa_port
nginx_url=http://127.0.0.1:$nginx_port
static_direct=http://127.0.0.1:$static_port
static_gateway=http://127.0.0.1:$static_gateway_port
static_nginx=http://127.0.0.1:$static_nginx_port
haproxy_url=http://127.0.0.1:$haproxy_port
static_haproxy=http://127.0.0.1:$static_haproxy_port
repo=mygroup/myproject/bench
service=container_registry

mkdir -p "$work/ec" "$work/rsa" "$work/nginx"
"$bin" init --dir "$work/ec" --upstream "$direct" --public-url "$gateway" > /dev/null
"$bin" init --dir "$work/rsa" --key-type rsa --upstream "$direct" --public-url "$rsa_gateway" > /dev/null
# The registry trusts both gateways' keys, so each gateway's start-up trust check passes.
cat "$work/ec/token.crt" "$work/rsa/token.crt" > "$work/bundle.crt"

read -r _ pat < <("$bin" token generate | grep '^token:')
pat_sha=$(printf %s "$pat" | sha256sum | cut -d' ' -f1)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
password_hash=$(printf %s "$password" | "$bin" hash-password --algorithm bcrypt --cost 10)

gateway_yaml() { # DIR LISTEN_PORT [UPSTREAM [tls]]
  local scheme=http
  [ "${4:-}" != tls ] || scheme=https
  cat > "$1/gateway.yaml" <<YAML
listen: "127.0.0.1:$2"
public_url: "$scheme://127.0.0.1:$2"
upstream: { url: "${3:-$direct}" }
token: { issuer: portcullis, service: $service, expiry: 1h, signing_key: token.key, certificate: token.crt, header: $token_header }
users:
  - username: alice
    personal_access_tokens:
      - { name: bench, token_sha256: "$pat_sha", scopes: [read_registry, write_registry] }
  - username: bob
    password_hash: "$password_hash"
projects:
  - path: mygroup/myproject
    visibility: private
    members: { alice: developer, bob: developer }
YAML
  if [ "${4:-}" = tls ]; then
    # 10,000 idle TLS connections and one more: over the default cap of 10,000.
    printf 'tls: { cert: tls.crt, key: tls.key }\nserver: { max_connections: 20000 }\n' >> "$1/gateway.yaml"
  fi
}
gateway_yaml "$work/ec" "$gateway_port"
gateway_yaml "$work/rsa" "$rsa_port"
mkdir -p "$work/startup" && cp "$work/ec/token.key" "$work/ec/token.crt" "$work/startup/"
gateway_yaml "$work/startup" "$startup_port"
mkdir -p "$work/static-gateway" && cp "$work/ec/token.key" "$work/ec/token.crt" "$work/static-gateway/"
gateway_yaml "$work/static-gateway" "$static_gateway_port" "$static_direct"
# One ECDSA P-256 certificate for 127.0.0.1, self-signed; curl trusts it through CURL_CA_BUNDLE.
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls/tls.key" -out "$work/tls/tls.crt" 2> /dev/null
cat "$work/tls/tls.crt" "$work/tls/tls.key" > "$work/tls/haproxy.pem"
export CURL_CA_BUNDLE=$work/tls/tls.crt
for d in tls-gateway tls-static-gateway; do
  mkdir -p "$work/$d" && cp "$work/ec/token.key" "$work/ec/token.crt" "$work/tls/tls.crt" "$work/tls/tls.key" "$work/$d/"
done
gateway_yaml "$work/tls-gateway" "$tls_gateway_port" "$direct" tls
gateway_yaml "$work/tls-static-gateway" "$tls_static_gateway_port" "$static_direct" tls

# The registry (scripts/lib.sh's config) trusts both gateways' keys; direct requests carry the
# same Bearer token.
registry_yml "$work/registry.yml" "$registry_port" "$work/bundle.crt"

# nginx 1.22 the canonical way for a registry: bench/lib.sh's nginx_proxy_server. Access log on,
# as the gateway logs each request.
# The proxying nginx has a worker per core (as the gateway has a runtime per core and haproxy a
# thread per core); the static server one.
cat > "$work/nginx/nginx.conf" <<NGINX
$(nginx_head "$work/nginx" auto)
  access_log $work/nginx/access.log;
  upstream registry {
    server 127.0.0.1:$registry_port;
    keepalive 32;
  }
  upstream static {
    server 127.0.0.1:$static_port;
    keepalive 32;
  }
$(nginx_proxy_server "$nginx_port" registry)
$(nginx_proxy_server "$static_nginx_port" static)
$(nginx_proxy_server "$tls_nginx_port" registry "$work/tls")
$(nginx_proxy_server "$tls_static_nginx_port" static "$work/tls")
}
NGINX
# haproxy 2.6 the canonical way for a registry: HTTP mode (it streams bodies both ways, no
# buffering to disk), keep-alive to the servers, X-Forwarded-For/-Proto set, TLS 1.2 and 1.3
# with HTTP/2 by ALPN, a thread per core, the access log (httplog) on as nginx's is.
mkdir -p "$work/haproxy"
haproxy_frontend() { # NAME PORT BACKEND [tls]
  local bind="bind 127.0.0.1:$2" proto=http
  if [ "${4:-}" = tls ]; then bind="$bind ssl crt $work/tls/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2"; proto=https; fi
  cat <<HAPROXY
frontend $1
  $bind
  http-request set-header X-Forwarded-Proto $proto
  default_backend $3
HAPROXY
}
cat > "$work/haproxy/haproxy.cfg" <<HAPROXY
$(haproxy_head "$haproxy_maxconn")
$(haproxy_frontend registry_plain "$haproxy_port" registry)
$(haproxy_frontend static_plain "$static_haproxy_port" static)
$(haproxy_frontend registry_tls "$tls_haproxy_port" registry tls)
$(haproxy_frontend static_tls "$tls_static_haproxy_port" static tls)
backend registry
  http-reuse safe
  server registry 127.0.0.1:$registry_port
backend static
  http-reuse safe
  server static 127.0.0.1:$static_port
HAPROXY
# The static file server: another nginx process (its CPU is not counted as the proxy's).
mkdir -p "$work/static/root"
cat > "$work/static/nginx.conf" <<NGINX
$(nginx_head "$work/static")
  access_log off;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$static_port;
    root $work/static/root;
  }
}
NGINX

# --- start: registry, gateways, nginx ------------------------------------------------------------
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!; pids+=("$registry_pid")
wait_http "$direct/v2/" registry "$work/registry.log"
read -r gateway_pid _ < <(python3 "$helper" spawn "$gateway_port" "$work/gateway.log" "$bin" serve --config "$work/ec/gateway.yaml")
pids+=("$gateway_pid")
read -r rsa_pid _ < <(python3 "$helper" spawn "$rsa_port" "$work/rsa-gateway.log" "$bin" serve --config "$work/rsa/gateway.yaml")
pids+=("$rsa_pid")
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" > "$work/nginx/stdout.log" 2>&1 &
nginx_pid=$!; pids+=("$nginx_pid")
wait_http "$nginx_url/v2/" nginx "$work/nginx/error.log"
nginx -p "$work/static" -c "$work/static/nginx.conf" -e "$work/static/error.log" > "$work/static/stdout.log" 2>&1 &
static_pid=$!; pids+=("$static_pid")
read -r static_gateway_pid _ < <(python3 "$helper" spawn "$static_gateway_port" "$work/static-gateway.log" "$bin" serve --config "$work/static-gateway/gateway.yaml")
pids+=("$static_gateway_pid")
wait_http "$gateway/v2/" gateway "$work/gateway.log"
haproxy -db -f "$work/haproxy/haproxy.cfg" > "$work/haproxy/haproxy.log" 2>&1 &
haproxy_pid=$!; pids+=("$haproxy_pid")
wait_http "$haproxy_url/v2/" haproxy "$work/haproxy/haproxy.log"
read -r tls_gateway_pid _ < <(python3 "$helper" spawn "$tls_gateway_port" "$work/tls-gateway.log" "$bin" serve --config "$work/tls-gateway/gateway.yaml")
pids+=("$tls_gateway_pid")
read -r tls_static_gateway_pid _ < <(python3 "$helper" spawn "$tls_static_gateway_port" "$work/tls-static-gateway.log" "$bin" serve --config "$work/tls-static-gateway/gateway.yaml")
pids+=("$tls_static_gateway_pid")

bearer=$(curl -sf -u "alice:$pat" "$gateway/jwt/auth?service=$service&scope=repository:$repo:pull,push" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || die "no token from the gateway"
auth="Authorization: Bearer $bearer"

# --- seed: the big blob, a 1 KiB blob, a config and a manifest (directly) --------------------
header() { tr -d '\r' < "$1" | awk -v h="$(printf %s "$2" | tr '[:upper:]' '[:lower:]'):" 'tolower($1)==h{print $2}' | tail -1; }
with_query() { case "$1" in *\?*) echo "$1&$2" ;; *) echo "$1?$2" ;; esac; }
start_upload() { # BASE -> Location, always sent to BASE (path and query of the answer kept)
  local loc
  curl -sf -X POST -H "$auth" -D "$work/post.head" -o /dev/null "$1/v2/$repo/blobs/uploads/" || die "POST upload to $1 failed"
  loc=$(header "$work/post.head" location)
  [ -n "$loc" ] || die "no Location from $1"
  case "$loc" in
    "$1"/*) echo "$loc" ;;
    /*) echo "$1$loc" ;;
    *) echo "note: $1 answered Location $loc; sent to $1 instead" >&2; echo "$1/${loc#*://*/}" ;;
  esac
}
put_blob() { # FILE -> digest (monolithic: POST, then PUT with the body)
  local digest loc
  digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
  loc=$(start_upload "$direct")
  curl -sf -X PUT -H "$auth" -H "Content-Type: application/octet-stream" -T "$1" -o /dev/null \
    "$(with_query "$loc" "digest=$digest")" || die "PUT of $1 failed"
  echo "$digest"
}

echo "seeding: ${blob_mib} MiB blob, 1 KiB blob, a manifest; a ${upload_mib} MiB upload source" >&2
mkfifo "$work/big.fifo"
loc=$(start_upload "$direct")
head -c "$((blob_mib << 20))" /dev/zero | tee "$work/big.fifo" | sha256sum | cut -d' ' -f1 > "$work/big.digest" &
curl -sf -X PATCH -H "$auth" -H "Content-Type: application/octet-stream" -T "$work/big.fifo" -D "$work/patch.head" -o /dev/null "$loc" \
  || die "seeding PATCH failed"
wait $!
big=sha256:$(cat "$work/big.digest")
curl -sf -X PUT -H "$auth" -o /dev/null "$(with_query "$(header "$work/patch.head" location)" "digest=$big")" || die "seeding PUT failed"
head -c 1024 /dev/urandom > "$work/small.bin"
small=$(put_blob "$work/small.bin")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$work/config.json"
config=$(put_blob "$work/config.json")
manifest_type=application/vnd.docker.distribution.manifest.v2+json
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"$manifest_type",
 "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":$(stat -c %s "$work/config.json"),"digest":"$config"},
 "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1024,"digest":"$small"}]}
JSON
curl -sf -X PUT -H "$auth" -H "Content-Type: $manifest_type" --data-binary "@$work/manifest.json" -o /dev/null \
  "$direct/v2/$repo/manifests/v1" || die "manifest PUT failed"
# A multi-layer image for the HTTP/2 pull: 8 layers of 256 KiB, fetched by h2load as one list.
layers_json="" pull_uris=()
for i in 1 2 3 4 5 6 7 8; do
  head -c 262144 /dev/urandom > "$work/layer$i.bin"
  d=$(put_blob "$work/layer$i.bin")
  layers_json="$layers_json${layers_json:+,}{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"size\":262144,\"digest\":\"$d\"}"
  pull_uris+=("/v2/$repo/blobs/$d")
done
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%s,"digest":"%s"},"layers":[%s]}' \
  "$manifest_type" "$(stat -c %s "$work/config.json")" "$config" "$layers_json" > "$work/pull.json"
curl -sf -X PUT -H "$auth" -H "Content-Type: $manifest_type" --data-binary "@$work/pull.json" -o /dev/null \
  "$direct/v2/$repo/manifests/pull" || die "multi-layer manifest PUT failed"
pull_uris=("/v2/$repo/manifests/sha256:$(sha256sum "$work/pull.json" | cut -d' ' -f1)" "/v2/$repo/blobs/$config" "${pull_uris[@]}")
head -c "$((upload_mib << 20))" /dev/zero > "$work/upload.bin"
mkdir -p "$work/static/root/v2/$repo/blobs"
cp "$work/small.bin" "$work/static/root/v2/$repo/blobs/$small"

# Directory scale (issue 20): a gateway per size in front of the static server (its /v2/ is an
# empty index.html: 200), each with a generated gateway.yaml (bench/directory.py) holding the
# benchmark's alice, bob and a deploy token beside PROJECTS projects, USERS users and TOKENS
# tokens, and an operations listener for /readyz.
: > "$work/static/root/v2/index.html"
deploy_secret=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
deploy_basic="Authorization: Basic $(printf %s "gitlab+deploy-token-bench:$deploy_secret" | base64 -w0)"
pat_basic="Authorization: Basic $(printf %s "alice:$pat" | base64 -w0)"
dir_specs=()
for spec in $dir_sizes; do
  IFS=: read -r np nu nt <<< "$spec"
  d=$work/dir-$np; mkdir -p "$d"; cp "$work/ec/token.key" "$work/ec/token.crt" "$d/"
  dport=$(port) dops=$(port)
  echo "generating a directory: $np projects, $nu users, $nt tokens" >&2
  python3 "$root/bench/directory.py" "$d/gateway.yaml" "$dport" "$static_direct" "$np" "$nu" "$nt" \
    "$pat" "$deploy_secret" "$password_hash"
  printf 'metrics: { listen: "127.0.0.1:%s" }\n' "$dops" >> "$d/gateway.yaml"
  dir_specs+=("$np:$dport:$dops")
done

# The processes doing the proxying for a target: none for direct, nginx's master and worker.
# nginx and haproxy serve plain and TLS ports from one process (tree); the gateway has one process per port.
proxy_pids_of() { case "$1" in gateway) echo "$gateway_pid" ;; nginx) echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" ;; haproxy) echo "$haproxy_pid" ;; esac; }
static_proxy_pids_of() { case "$1" in gateway) echo "$static_gateway_pid" ;; *) proxy_pids_of "$1" ;; esac; }
tls_proxy_pids_of() { case "$1" in gateway) echo "$tls_gateway_pid" ;; *) proxy_pids_of "$1" ;; esac; }
tls_static_proxy_pids_of() { case "$1" in gateway) echo "$tls_static_gateway_pid" ;; *) proxy_pids_of "$1" ;; esac; }
base_of() { case "$1" in direct) echo "$direct" ;; gateway) echo "$gateway" ;; nginx) echo "$nginx_url" ;; haproxy) echo "$haproxy_url" ;; esac; }
static_base_of() { case "$1" in direct) echo "$static_direct" ;; gateway) echo "$static_gateway" ;; nginx) echo "$static_nginx" ;; haproxy) echo "$static_haproxy" ;; esac; }
tls_port_of() { case "$1" in gateway) echo "$tls_gateway_port" ;; nginx) echo "$tls_nginx_port" ;; haproxy) echo "$tls_haproxy_port" ;; esac; }
tls_static_port_of() { case "$1" in gateway) echo "$tls_static_gateway_port" ;; nginx) echo "$tls_static_nginx_port" ;; haproxy) echo "$tls_static_haproxy_port" ;; esac; }
tls_base_of() { echo "https://127.0.0.1:$(tls_port_of "$1")"; }
tls_static_base_of() { echo "https://127.0.0.1:$(tls_static_port_of "$1")"; }
for t in gateway nginx haproxy; do
  b=$(tls_base_of "$t")
  [ "$(curl -sf -H "$auth" "$b/v2/$repo/blobs/$small" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] || die "$t: 1 KiB blob over TLS wrong"
  [ "$(curl -sf -H "$auth" "$(tls_static_base_of "$t")/v2/$repo/blobs/$small" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] \
    || die "$t: 1 KiB file from the static server over TLS wrong"
  [ "$(curl -s --http2 -o /dev/null -w '%{http_version}' -H "$auth" "$b/v2/$repo/blobs/$small")" = 2 ] || die "$t: no HTTP/2 over TLS"
done
for t in direct gateway nginx haproxy; do # every target serves the seeded data, and the big blob is in page cache
  b=$(base_of "$t")
  [ "$(curl -sf -H "$auth" "$b/v2/$repo/blobs/$small" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] || die "$t: 1 KiB blob wrong"
  [ "$(curl -sf -H "$auth" "$(static_base_of "$t")/v2/$repo/blobs/$small" | sha256sum | cut -d' ' -f1)" = "${small#sha256:}" ] \
    || die "$t: 1 KiB file from the static server wrong"
  curl -sf -H "$auth" -H "Accept: $manifest_type" -o /dev/null "$b/v2/$repo/manifests/v1" || die "$t: manifest GET failed"
done
curl -sf -H "$auth" -o /dev/null "$direct/v2/$repo/blobs/$big" || die "big blob GET failed"

# --- measurements --------------------------------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
results=$work/results.tsv
: > "$results"
row() { printf '#row\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$results"; } # KEY DIGITS SHOW_FAILURES LABEL
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-0}" >> "$results"; } # KEY TARGET RUN VALUE FAILED
row get 0 0 "GET ${blob_mib} MiB blob (MiB/s)"
row get_cpu_proxy 0 0 "GET ${blob_mib} MiB blob: proxy CPU (ms per GiB)"
row get_cpu_registry 0 0 "GET ${blob_mib} MiB blob: registry CPU (ms per GiB)"
row get_cpu_client 0 0 "GET ${blob_mib} MiB blob: curl CPU (ms per GiB)"
row get_cores 2 0 "GET ${blob_mib} MiB blob: cores busy (the processes' CPU / wall time)"
row patch 0 0 "PATCH upload ${upload_mib} MiB (MiB/s)"
row lat50 3 0 "1 KiB blob GET, 1 conn, p50 (ms)"
row lat99 3 0 "1 KiB blob GET, 1 conn, p99 (ms)"
row rps 0 0 "1 KiB blob GET, 64 conns (req/s)"
row mrps 0 0 "manifest GET, 64 conns (req/s)"
row cpu_proxy 0 0 "1 KiB blob GET, 64 conns: proxy CPU per request (us)"
row cpu_registry 0 0 "1 KiB blob GET, 64 conns: registry CPU per request (us)"
row static_lat50 3 0 "static upstream: 1 KiB GET, 1 conn, p50 (ms)"
row static_rps 0 0 "static upstream: 1 KiB GET, 64 conns (req/s)"
row static_cpu1 1 0 "static upstream: proxy CPU per request, 1 conn (us)"
row static_cpu64 1 0 "static upstream: proxy CPU per request, 64 conns (us)"
row tls_get 0 0 "TLS 1.3: GET ${blob_mib} MiB blob (MiB/s)"
row tls_get_cpu 0 0 "TLS 1.3: GET ${blob_mib} MiB blob: proxy CPU (ms per GiB)"
row tls_patch 0 0 "TLS 1.3: PATCH upload ${upload_mib} MiB (MiB/s)"
row tls_patch_cpu 0 0 "TLS 1.3: PATCH upload ${upload_mib} MiB: proxy CPU (ms per GiB)"
row tls_lat50 3 1 "TLS 1.3: 1 KiB blob GET, 1 conn, p50 (ms)"
row tls_cpu1 1 0 "TLS 1.3: 1 KiB blob GET, 1 conn: proxy CPU per request (us)"
row tls_rps 0 1 "TLS 1.3: 1 KiB blob GET, 64 conns (req/s)"
row tls_cpu64 1 0 "TLS 1.3: 1 KiB blob GET, 64 conns: proxy CPU per request (us)"
row tls_mrps 0 1 "TLS 1.3: manifest GET, 64 conns (req/s)"
row h2_small 0 1 "HTTP/2: 1 KiB blob GET, 4 conns x 16 streams (req/s)"
row h2_cpu 1 0 "HTTP/2: 1 KiB blob GET, 4 x 16: proxy CPU per request (us)"
row h2_pull 0 1 "HTTP/2: pull manifest + config + 8 x 256 KiB layers, 4 x 10 (req/s)"
row tls_static_lat50 3 1 "TLS 1.3, static upstream: 1 KiB GET, 1 conn, p50 (ms)"
row tls_static_rps 0 1 "TLS 1.3, static upstream: 1 KiB GET, 64 conns (req/s)"
row tls_static_cpu 1 0 "TLS 1.3, static upstream: 1 KiB GET, 64 conns: proxy CPU per request (us)"
row h2_static 0 1 "HTTP/2, static upstream: 1 KiB GET, 4 x 16 (req/s)"
row tls_new 0 0 "TLS 1.3: new connection per request, full handshake (conns/s)"
row tls_new_cpu 1 0 "TLS 1.3: full handshake + GET: proxy CPU per connection (us)"
row tls_reuse 0 0 "TLS 1.3: new connection per request, resumed session (conns/s)"
row tls_reuse_cpu 1 0 "TLS 1.3: resumed session + GET: proxy CPU per connection (us)"
row tok_es256 0 1 "tokens, PAT, ES256, 64 conns (tokens/s)"
row tok_rs256 0 1 "tokens, PAT, RS256, 64 conns (tokens/s)"
row tok_bcrypt 0 1 "tokens, password bcrypt-10, 64 conns (tokens/s)"
row rss_idle 1 0 "gateway RSS idle after start (MiB)"
row startup 1 0 "gateway start-up to listening (ms)"
row rss_conns 1 0 "gateway RSS peak: ${upload_mib} MiB upload + $idle_conns idle conns (MiB)"
row rss_after 1 0 "gateway RSS idle after the benchmark (MiB)"
row rss_tls_idle 1 0 "RSS with $idle_tls idle TLS connections (MiB, all the proxy's processes)"
row tls_accept_ms 2 0 "new TLS client with $idle_tls idle open: connect + handshake + GET /v2/, median of 20 (ms)"
for spec in "${dir_specs[@]}"; do
  np=${spec%%:*} n=$(printf "%'d" "${spec%%:*}")
  row "dir_check_$np" 0 0 "directory $n projects: portcullis check (ms)"
  row "dir_start_$np" 0 0 "directory $n projects: start-up to /readyz 200 (ms)"
  row "dir_rss_$np" 1 0 "directory $n projects: RSS idle after start (MiB)"
  row "dir_pat_$np" 0 1 "directory $n projects: tokens, PAT, 64 conns (tokens/s)"
  row "dir_deploy_$np" 0 1 "directory $n projects: tokens, deploy token, 64 conns (tokens/s)"
  row "dir_cpu_$np" 1 0 "directory $n projects: /v2/ gateway CPU per request, 64 conns (us)"
  row "dir_reload_$np" 0 1 "directory $n projects: SIGHUP reload, /v2/ requests during it failed (ms)"
done
if [ "$soak" -gt 0 ]; then
  row soak_rps 0 1 "mixed soak, ${soak} s, 64 conns (req/s)"
  row soak_early 1 0 "gateway RSS after the soak's first tenth (MiB)"
  row soak_end 1 0 "gateway RSS at the soak's end (MiB)"
fi
row rss_peak 1 0 "gateway RSS peak, whole run (MiB)"

profiling() { [ -n "$profile_dir" ] && [ "$1" = 1 ]; }
perf_start() { # NAME: perf record the gateway until perf_stop
  mkdir -p "$profile_dir"
  # shellcheck disable=SC2086 # PERF_ARGS is a list of options
  perf record ${PERF_ARGS:--F 999 -g} -p "$gateway_pid" -o "$profile_dir/$1.perf.data" > "$profile_dir/$1.perf.log" 2>&1 &
  perf_pid=$!; pids+=("$perf_pid"); sleep 0.5
}
perf_stop() { kill -INT "$perf_pid"; wait "$perf_pid" || true; stop "$perf_pid"; }

# wrk URL CONNS THREADS [extra wrk args...] -> sets w_requests w_rps w_p50_us w_p99_us w_non2xx w_sockerr
# (wrk_script, wrk_seconds and the array wrk_script_args, when set, replace report.lua, --duration
# and pass arguments to the script)
wrk_run() {
  local url=$1 conns=$2 threads=$3 line
  shift 3
  wrk -t"$threads" -c"$conns" -d"${wrk_seconds:-$duration}s" --latency -s "${wrk_script:-$lua}" "$@" "$url" \
    ${wrk_script_args[@]+-- "${wrk_script_args[@]}"} > "$work/wrk.out" 2>&1 \
    || { cat "$work/wrk.out" >&2; die "wrk failed on $url"; }
  line=$(grep '^BENCH ' "$work/wrk.out") || { cat "$work/wrk.out" >&2; die "wrk printed no result for $url"; }
  read -r w_requests w_rps w_p50_us w_p99_us w_non2xx w_sockerr < <(echo "$line" | awk '{
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["requests"], v["rps"], v["p50_us"], v["p99_us"], v["non2xx"], v["sockerr"] }')
}
# The gateway's peak VmRSS, sampled every 50 ms into $work/rss.peak until $work/rss.stop exists.
rss_sampler() {
  local peak=0 k v _
  while [ ! -e "$work/rss.stop" ] && kill -0 "$gateway_pid" 2> /dev/null; do
    while read -r k v _; do
      if [ "$k" = VmRSS: ] && [ "$v" -gt "$peak" ]; then peak=$v; echo "$peak" > "$work/rss.peak"; fi
    done < "/proc/$gateway_pid/status"
    sleep 0.05
  done
}
rss_sampler &
sampler_pid=$!; pids+=("$sampler_pid")
mib_s() { awk -v b="$1" 'BEGIN{printf "%.3f", b/1048576}'; }
per_gib() { awk -v ms="$1" -v b="$2" 'BEGIN{printf "%.0f", ms * 1073741824 / b}'; } # MS BYTES
# openssl s_time against PORT for S seconds, new (full handshakes) or reuse (session resumption):
# sets st_conns (connections made) and st_rate (per second of wall time). Each connection GETs
# /v2/ without a token (the gateway answers 401 itself; nginx and haproxy ask the static server).
s_time_run() { # PORT new|reuse SECONDS
  openssl s_time -connect "127.0.0.1:$1" "-$2" -time "$3" -www /v2/ > "$work/s_time.out" 2>&1 || true
  read -r st_conns st_secs < <(awk '/connections in .* real seconds/{print $1, $4; exit}' "$work/s_time.out")
  [ -n "${st_conns:-}" ] || { cat "$work/s_time.out" >&2; die "openssl s_time printed no result for port $1"; }
  st_rate=$(awk -v n="$st_conns" -v s="$st_secs" 'BEGIN{printf "%.1f", (s > 0 ? n / s : 0)}')
}
# h2load over TLS (HTTP/2 by ALPN), C connections of M streams, for --duration: sets h2_rps,
# h2_requests, h2_failed (answers that are not 2xx plus errors). The rest are URIs.
h2_run() { # CONNS STREAMS URL...
  local c=$1 m=$2; shift 2
  h2load -c "$c" -m "$m" -t 1 -D "$duration" -H "$auth" -H "Accept: $manifest_type" "$@" > "$work/h2load.out" 2>&1 \
    || { cat "$work/h2load.out" >&2; die "h2load failed on $1"; }
  grep -q 'h2' "$work/h2load.out" || { cat "$work/h2load.out" >&2; die "h2load did not speak HTTP/2 to $1"; }
  # "requests: T total, S started, D done, OK succeeded, F failed, E errored, ..." and
  # "status codes: A 2xx, B 3xx, C 4xx, D 5xx": failed = failed + errored + 4xx + 5xx.
  read -r h2_requests h2_bad < <(awk '/^requests:/{d = $6; f = $10 + $12} /^status codes:/{s = $7 + $9} END{print d, f + s}' "$work/h2load.out")
  read -r h2_rps < <(awk '/^finished in/{gsub(",", "", $4); print $4}' "$work/h2load.out")
  h2_failed=$h2_bad
  [ -n "${h2_rps:-}" ] || { cat "$work/h2load.out" >&2; die "h2load printed no rate for $1"; }
}

for run in $(seq "$runs"); do
  echo "run $run/$runs" >&2
  for t in direct gateway nginx haproxy; do
    b=$(base_of "$t") proxy_pids=$(proxy_pids_of "$t")
    # 1. the big blob
    if profiling "$run" && [ "$t" = gateway ]; then perf_start get; fi
    # shellcheck disable=SC2086 # a list of pids
    p0=$(cpu_ticks $proxy_pids) r0=$(cpu_ticks "$registry_pid")
    read -r speed size code wall_ms curl_ms < <(python3 "$helper" timed \
      curl -s -o /dev/null -w '%{speed_download} %{size_download} %{http_code}\n' -H "$auth" "$b/v2/$repo/blobs/$big")
    # shellcheck disable=SC2086 # a list of pids
    p1=$(cpu_ticks $proxy_pids) r1=$(cpu_ticks "$registry_pid")
    if profiling "$run" && [ "$t" = gateway ]; then perf_stop; fi
    if [ "$code" != 200 ] || [ "$size" != "$((blob_mib << 20))" ]; then die "$t: GET of the big blob gave $code, $size bytes"; fi
    record get "$t" "$run" "$(mib_s "$speed")"
    # Where the GET's CPU went, per process, and how much of the cores the three kept busy.
    proxy_ms=$(ticks_ms "$p0" "$p1") registry_ms=$(ticks_ms "$r0" "$r1")
    [ -z "$proxy_pids" ] || record get_cpu_proxy "$t" "$run" "$(per_gib "$proxy_ms" "$size")"
    record get_cpu_registry "$t" "$run" "$(per_gib "$registry_ms" "$size")"
    record get_cpu_client "$t" "$run" "$(per_gib "$curl_ms" "$size")"
    record get_cores "$t" "$run" "$(awk -v c="$((proxy_ms + registry_ms))" -v k="$curl_ms" -v w="$wall_ms" 'BEGIN{printf "%.2f", (w > 0 ? (c + k) / w : 0)}')"
    # 2. a new upload session, one PATCH of the whole file, then the session is cancelled
    loc=$(start_upload "$b")
    read -r speed code < <(curl -s -X PATCH -H "$auth" -H "Content-Type: application/octet-stream" -T "$work/upload.bin" \
      -D "$work/patch.head" -o /dev/null -w '%{speed_upload} %{http_code}\n' "$loc")
    [ "$code" = 202 ] || die "$t: PATCH gave $code"
    record patch "$t" "$run" "$(mib_s "$speed")"
    loc=$(header "$work/patch.head" location); case "$loc" in /*) loc=$b$loc ;; esac
    curl -s -X DELETE -H "$auth" -o /dev/null "$loc" || true
    # 3. small requests
    wrk_run "$b/v2/$repo/blobs/$small" 1 1 -H "$auth"
    record lat50 "$t" "$run" "$(awk -v v="$w_p50_us" 'BEGIN{print v/1000}')" "$((w_non2xx + w_sockerr))"
    record lat99 "$t" "$run" "$(awk -v v="$w_p99_us" 'BEGIN{print v/1000}')" "$((w_non2xx + w_sockerr))"
    if profiling "$run" && [ "$t" = gateway ]; then perf_start small; fi
    # shellcheck disable=SC2086 # a list of pids
    p0=$(cpu_ticks $proxy_pids) r0=$(cpu_ticks "$registry_pid")
    wrk_run "$b/v2/$repo/blobs/$small" 64 2 -H "$auth"
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids) r1=$(cpu_ticks "$registry_pid")
    if profiling "$run" && [ "$t" = gateway ]; then perf_stop; fi
    record rps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    [ -z "$proxy_pids" ] || record cpu_proxy "$t" "$run" "$(per_request_us "$p0" "$p1" "$w_requests")"
    record cpu_registry "$t" "$run" "$(per_request_us "$r0" "$r1" "$w_requests")"
    wrk_run "$b/v2/$repo/manifests/v1" 64 2 -H "$auth" -H "Accept: $manifest_type"
    record mrps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    # 4. the same 1 KiB from the static file server (the gateway still checks the token)
    sb=$(static_base_of "$t")
    proxy_pids=$(case "$t" in direct) ;; *) static_proxy_pids_of "$t" ;; esac)
    # shellcheck disable=SC2086
    p0=$(cpu_ticks $proxy_pids)
    wrk_run "$sb/v2/$repo/blobs/$small" 1 1 -H "$auth"
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    record static_lat50 "$t" "$run" "$(awk -v v="$w_p50_us" 'BEGIN{print v/1000}')" "$((w_non2xx + w_sockerr))"
    [ -z "$proxy_pids" ] || record static_cpu1 "$t" "$run" "$(per_request_us "$p0" "$p1" "$w_requests")"
    wrk_run "$sb/v2/$repo/blobs/$small" 64 2 -H "$auth"
    # shellcheck disable=SC2086
    p2=$(cpu_ticks $proxy_pids)
    record static_rps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    [ -z "$proxy_pids" ] || record static_cpu64 "$t" "$run" "$(per_request_us "$p1" "$p2" "$w_requests")"
  done
  # 8. TLS 1.3 (ECDSA P-256) terminated by each proxy, and HTTP/2
  for t in gateway nginx haproxy; do
    b=$(tls_base_of "$t") proxy_pids=$(tls_proxy_pids_of "$t")
    # shellcheck disable=SC2086 # a list of pids
    p0=$(cpu_ticks $proxy_pids)
    read -r speed size code < <(curl -s --tlsv1.3 -o /dev/null -w '%{speed_download} %{size_download} %{http_code}\n' -H "$auth" "$b/v2/$repo/blobs/$big")
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    if [ "$code" != 200 ] || [ "$size" != "$((blob_mib << 20))" ]; then die "$t: TLS GET of the big blob gave $code, $size bytes"; fi
    record tls_get "$t" "$run" "$(mib_s "$speed")"
    record tls_get_cpu "$t" "$run" "$(per_gib "$(ticks_ms "$p0" "$p1")" "$size")"
    loc=$(start_upload "$b")
    # shellcheck disable=SC2086
    p0=$(cpu_ticks $proxy_pids)
    read -r speed code < <(curl -s --tlsv1.3 -X PATCH -H "$auth" -H "Content-Type: application/octet-stream" -T "$work/upload.bin" \
      -D "$work/patch.head" -o /dev/null -w '%{speed_upload} %{http_code}\n' "$loc")
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    [ "$code" = 202 ] || die "$t: TLS PATCH gave $code"
    record tls_patch "$t" "$run" "$(mib_s "$speed")"
    record tls_patch_cpu "$t" "$run" "$(per_gib "$(ticks_ms "$p0" "$p1")" "$((upload_mib << 20))")"
    loc=$(header "$work/patch.head" location); case "$loc" in /*) loc=$b$loc ;; esac
    curl -s -X DELETE -H "$auth" -o /dev/null "$loc" || true
    # small GETs over kept-alive TLS (wrk: HTTP/1.1)
    # shellcheck disable=SC2086
    p0=$(cpu_ticks $proxy_pids)
    wrk_run "$b/v2/$repo/blobs/$small" 1 1 -H "$auth"
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    record tls_lat50 "$t" "$run" "$(awk -v v="$w_p50_us" 'BEGIN{print v/1000}')" "$((w_non2xx + w_sockerr))"
    record tls_cpu1 "$t" "$run" "$(per_request_us "$p0" "$p1" "$w_requests")"
    wrk_run "$b/v2/$repo/blobs/$small" 64 2 -H "$auth"
    # shellcheck disable=SC2086
    p2=$(cpu_ticks $proxy_pids)
    record tls_rps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    record tls_cpu64 "$t" "$run" "$(per_request_us "$p1" "$p2" "$w_requests")"
    wrk_run "$b/v2/$repo/manifests/v1" 64 2 -H "$auth" -H "Accept: $manifest_type"
    record tls_mrps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    # HTTP/2: 4 connections of 16 streams (the gateway's default share per connection)
    # shellcheck disable=SC2086
    p0=$(cpu_ticks $proxy_pids)
    h2_run 4 16 "$b/v2/$repo/blobs/$small"
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    record h2_small "$t" "$run" "$h2_rps" "$h2_failed"
    record h2_cpu "$t" "$run" "$(per_request_us "$p0" "$p1" "$h2_requests")"
    h2_run 4 10 "${pull_uris[@]/#/$b}"
    record h2_pull "$t" "$run" "$h2_rps" "$h2_failed"
    # the static server behind TLS: the proxy's own cost
    sb=$(tls_static_base_of "$t") proxy_pids=$(tls_static_proxy_pids_of "$t")
    wrk_run "$sb/v2/$repo/blobs/$small" 1 1 -H "$auth"
    record tls_static_lat50 "$t" "$run" "$(awk -v v="$w_p50_us" 'BEGIN{print v/1000}')" "$((w_non2xx + w_sockerr))"
    # shellcheck disable=SC2086
    p0=$(cpu_ticks $proxy_pids)
    wrk_run "$sb/v2/$repo/blobs/$small" 64 2 -H "$auth"
    # shellcheck disable=SC2086
    p1=$(cpu_ticks $proxy_pids)
    record tls_static_rps "$t" "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    record tls_static_cpu "$t" "$run" "$(per_request_us "$p0" "$p1" "$w_requests")"
    h2_run 4 16 "$sb/v2/$repo/blobs/$small"
    record h2_static "$t" "$run" "$h2_rps" "$h2_failed"
    # a new TLS connection per request: full handshakes, then session resumption
    for kind in new reuse; do
      # shellcheck disable=SC2086
      p0=$(cpu_ticks $proxy_pids)
      s_time_run "$(tls_static_port_of "$t")" "$kind" "$duration"
      # shellcheck disable=SC2086
      p1=$(cpu_ticks $proxy_pids)
      record "tls_$kind" "$t" "$run" "$st_rate"
      record "tls_${kind}_cpu" "$t" "$run" "$(per_request_us "$p0" "$p1" "$st_conns")"
    done
  done
  # 5. token issuance, gateway only; one login first (the same for each credential)
  for kind in es256 rs256 bcrypt; do
    case $kind in
      es256) url=$gateway user=alice secret=$pat ;;
      rs256) url=$rsa_gateway user=alice secret=$pat ;;
      bcrypt) url=$gateway user=bob secret=$password ;;
    esac
    url="$url/jwt/auth?service=$service&scope=repository:$repo:pull,push"
    basic="Authorization: Basic $(printf %s "$user:$secret" | base64 -w0)"
    curl -sf -o /dev/null -H "$basic" "$url" || die "$kind login failed"
    if profiling "$run" && [ "$kind" = es256 ]; then perf_start token; fi
    wrk_run "$url" 64 2 -H "$basic"
    if profiling "$run" && [ "$kind" = es256 ]; then perf_stop; fi
    record "tok_$kind" gateway "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
  done
  # 6. start-up and idle memory of a fresh gateway (same config, another port)
  read -r spid ms < <(python3 "$helper" spawn "$startup_port" "$work/startup.log" "$bin" serve --config "$work/startup/gateway.yaml")
  pids+=("$spid")
  sleep 1
  record startup gateway "$run" "$ms"
  record rss_idle gateway "$run" "$(awk -v k="$(rss_kib "$spid" VmRSS)" 'BEGIN{print k/1024}')"
  stop "$spid"
  # 7. directory scale: check, start-up to ready, idle RSS, token issuance, /v2/ CPU, reload
  for spec in "${dir_specs[@]}"; do
    IFS=: read -r np dport dops <<< "$spec"
    d=$work/dir-$np
    read -r check_ms _ < <(python3 "$helper" timed sh -c '"$0" check --config "$1" > /dev/null 2>&1 || echo FAILED' "$bin" "$d/gateway.yaml")
    [ "$check_ms" != FAILED ] || die "portcullis check of the $np-project directory failed"
    record "dir_check_$np" gateway "$run" "$check_ms"
    read -r dpid ms < <(python3 "$helper" spawn-ready "$dops" "$d/gateway.log" "$bin" serve --config "$d/gateway.yaml")
    pids+=("$dpid")
    record "dir_start_$np" gateway "$run" "$ms"
    sleep 1
    record "dir_rss_$np" gateway "$run" "$(awk -v k="$(rss_kib "$dpid" VmRSS)" 'BEGIN{print k/1024}')"
    url="http://127.0.0.1:$dport/jwt/auth?service=$service&scope=repository:$repo:pull,push"
    curl -sf -o /dev/null -H "$pat_basic" "$url" || die "$np projects: PAT login failed"
    wrk_run "$url" 64 2 -H "$pat_basic"
    record "dir_pat_$np" gateway "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    curl -sf -o /dev/null -H "$deploy_basic" "$url" || die "$np projects: deploy token login failed"
    wrk_run "$url" 64 2 -H "$deploy_basic"
    record "dir_deploy_$np" gateway "$run" "$w_rps" "$((w_non2xx + w_sockerr))"
    dauth="Authorization: Bearer $(curl -sf -H "$pat_basic" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    v2="http://127.0.0.1:$dport/v2/"
    curl -sf -o /dev/null -H "$dauth" "$v2" || die "$np projects: /v2/ with a token failed"
    p0=$(cpu_ticks "$dpid")
    wrk_run "$v2" 64 2 -H "$dauth"
    p1=$(cpu_ticks "$dpid")
    record "dir_cpu_$np" gateway "$run" "$(per_request_us "$p0" "$p1" "$w_requests")"
    # The reload while 8 connections keep asking for /v2/: every answer must be a 200.
    reload_s=$((smoke ? 2 : 10))
    wrk -t1 -c8 -d"${reload_s}s" -s "$lua" -H "$dauth" "$v2" > "$work/reload-wrk.out" 2>&1 &
    wrk_pid=$!; pids+=("$wrk_pid")
    sleep "$(awk -v s="$reload_s" 'BEGIN{print s / 4}')"
    reload_ms=$(python3 "$helper" reload "$dpid" "$d/gateway.log") || die "$np projects: reload failed"
    wait "$wrk_pid" || die "wrk failed during the reload"; stop "$wrk_pid"
    failed=$(awk '/^BENCH /{for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["non2xx"] + v["sockerr"]}' "$work/reload-wrk.out")
    [ -n "$failed" ] || { cat "$work/reload-wrk.out" >&2; die "wrk printed no result during the reload"; }
    record "dir_reload_$np" gateway "$run" "$reload_ms" "$failed"
    stop "$dpid"
  done
done

# RSS while a PATCH upload streams through the gateway with 1,000 idle keep-alive connections open.
python3 "$helper" idle-conns "$gateway_port" "$idle_conns" "$work/release-conns" > "$work/conns.out" &
conns_pid=$!; pids+=("$conns_pid")
for _ in $(seq 200); do grep -qs '^open' "$work/conns.out" && break; sleep 0.05; done
grep -q "^open $idle_conns\$" "$work/conns.out" || die "could not open $idle_conns connections to the gateway"
peak=0
loc=$(start_upload "$gateway")
curl -s -X PATCH -H "$auth" -H "Content-Type: application/octet-stream" -T "$work/upload.bin" -D "$work/patch.head" -o /dev/null "$loc" &
curl_pid=$!; pids+=("$curl_pid")
while kill -0 "$curl_pid" 2> /dev/null; do
  now=$(rss_kib "$gateway_pid" VmRSS); [ "$now" -gt "$peak" ] && peak=$now
  sleep 0.02
done
wait "$curl_pid" || die "PATCH with 1,000 idle connections failed"
loc=$(header "$work/patch.head" location); case "$loc" in /*) loc=$gateway$loc ;; esac
curl -s -X DELETE -H "$auth" -o /dev/null "$loc" || true
touch "$work/release-conns"; wait "$conns_pid" || true
record rss_conns gateway 1 "$(awk -v k="$peak" 'BEGIN{print k/1024}')"
sleep 2
record rss_after gateway 1 "$(awk -v k="$(rss_kib "$gateway_pid" VmRSS)" 'BEGIN{print k/1024}')"

# Idle TLS connections: each proxy (its static TLS port) holds $idle_tls of them, each after one
# GET /v2/; its RSS (all its processes) then, and the median time a new client takes to connect,
# handshake and get its answer to a GET /v2/ (20 in a row).
for t in gateway nginx haproxy; do
  rm -f "$work/release-tls"
  python3 "$helper" idle-tls "$(tls_static_port_of "$t")" "$idle_tls" "$work/release-tls" > "$work/tls-conns.out" &
  conns_pid=$!; pids+=("$conns_pid")
  # Up to 4 minutes: each connection is a full handshake and a GET, and a slow host or proxy
  # takes a minute for 10,000. A proxy that cannot hold them all gets no figure (n/a), not a
  # benchmark without its table.
  for _ in $(seq 4800); do grep -qs '^open' "$work/tls-conns.out" && break; kill -0 "$conns_pid" 2> /dev/null || break; sleep 0.05; done
  if ! grep -q "^open $idle_tls\$" "$work/tls-conns.out"; then
    echo "bench/run.sh: $t: could not open $idle_tls idle TLS connections in 4 minutes (no figures for it)" >&2
    stop "$conns_pid"; continue
  fi
  sleep 1
  rss=0; for p in $(tls_static_proxy_pids_of "$t"); do rss=$((rss + $(rss_kib "$p" VmRSS))); done
  record rss_tls_idle "$t" 1 "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
  record tls_accept_ms "$t" 1 "$(python3 "$helper" connect-ms "$(tls_static_port_of "$t")" 20)"
  touch "$work/release-tls"; wait "$conns_pid" || true; stop "$conns_pid"
done

# Mixed traffic for --soak seconds: RSS after its first tenth (pools, caches and allocator warm)
# against RSS at its end; growth between the two is a leak.
if [ "$soak" -gt 0 ]; then
  echo "soak: ${soak} s of mixed traffic" >&2
  basic="Basic $(printf %s "alice:$pat" | base64 -w0)"
  wrk_script=$mixed_lua wrk_seconds=$soak
  wrk_script_args=("/v2/$repo/blobs/$small" "/v2/$repo/manifests/v1" \
    "/jwt/auth?service=$service&scope=repository:$repo:pull" "Bearer $bearer" "$basic" "$manifest_type")
  ( sleep "$(awk -v s="$soak" 'BEGIN{print s / 10}')"; rss_kib "$gateway_pid" VmRSS > "$work/soak.early" ) &
  early_pid=$!; pids+=("$early_pid")
  wrk_run "$gateway/" 64 2
  wait "$early_pid" || true
  unset wrk_script wrk_seconds wrk_script_args
  record soak_rps gateway 1 "$w_rps" "$((w_non2xx + w_sockerr))"
  record soak_early gateway 1 "$(awk -v k="$(cat "$work/soak.early")" 'BEGIN{print k/1024}')"
  record soak_end gateway 1 "$(awk -v k="$(rss_kib "$gateway_pid" VmRSS)" 'BEGIN{print k/1024}')"
fi
touch "$work/rss.stop"; wait "$sampler_pid" || true
# VmHWM is updated lazily by the kernel, the sampler can miss a spike: the larger of the two.
record rss_peak gateway 1 "$(awk -v a="$(cat "$work/rss.peak")" -v b="$(rss_kib "$gateway_pid" VmHWM)" 'BEGIN{print (a > b ? a : b)/1024}')"

# --- the machine and the table ---------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "versions: $(docker-registry --version | awk '{print $2, $3}'), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}'), $(curl -V | awk 'NR==1{print $1, $2}'), $("$bin" --version)"
echo "load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on the machine skews every number)"
echo "settings: --runs $runs --duration ${duration}s --blob-mib $blob_mib --upload-mib $upload_mib --token-header $token_header$([ "$smoke" = 1 ] && echo ' (--smoke)'); cells: min / median / max of $runs run(s); ratios of medians"
echo
python3 "$helper" table "$results"

# --- issue 19: shared_state.redis off vs on --------------------------------------------------------
# The same gateway config with and without shared_state (a redis-server of its own, on loopback):
# ES256 PAT token issuance (each login: the brute-force reservation and settlement, and the
# stripped-header record, in Redis) and the gateway's CPU per 1 KiB blob GET (64 conns; one
# Redis write per client and token). Redis's own CPU is shown apart. Skipped without redis-server.
shared_state_rows() {
  command -v redis-server > /dev/null || { echo; echo "shared_state rows: skipped (no redis-server)"; return 0; }
  local redis_port on_port on_pid redis_pid off_tok on_tok off_cpu on_cpu redis_cpu p0 p1 r0 r1 basic url
  redis_port=$(port) on_port=$(port)
  mkdir -p "$work/redis" "$work/shared-gateway"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis" > "$work/redis/log" 2>&1 &
  redis_pid=$!; pids+=("$redis_pid")
  cp "$work/ec/token.key" "$work/ec/token.crt" "$work/shared-gateway/"
  gateway_yaml "$work/shared-gateway" "$on_port"
  echo "shared_state: { redis: \"redis://127.0.0.1:$redis_port/0\", timeout: 100ms }" >> "$work/shared-gateway/gateway.yaml"
  read -r on_pid _ < <(python3 "$helper" spawn "$on_port" "$work/shared-gateway.log" "$bin" serve --config "$work/shared-gateway/gateway.yaml")
  pids+=("$on_pid")
  sleep 1.5 # the first PING
  grep -q "Redis answers" "$work/shared-gateway.log" || die "the shared_state gateway never reached Redis"
  basic="Authorization: Basic $(printf %s "alice:$pat" | base64 -w0)"
  url="/jwt/auth?service=$service&scope=repository:$repo:pull,push"
  # Interleaved off, on, off, on: each figure is the mean of its two runs.
  local n off_req=0 on_req=0 off_ticks=0 on_ticks=0 redis_ticks=0 on_base="http://127.0.0.1:$on_port"
  off_tok=0 on_tok=0
  for n in 1 2; do
    wrk_run "$gateway$url" 64 2 -H "$basic"; off_tok=$(awk -v a="$off_tok" -v b="$w_rps" 'BEGIN{print a + b / 2}')
    wrk_run "$on_base$url" 64 2 -H "$basic"; on_tok=$(awk -v a="$on_tok" -v b="$w_rps" 'BEGIN{print a + b / 2}')
    p0=$(cpu_ticks "$gateway_pid"); wrk_run "$gateway/v2/$repo/blobs/$small" 64 2 -H "$auth"; p1=$(cpu_ticks "$gateway_pid")
    off_ticks=$((off_ticks + p1 - p0)) off_req=$((off_req + w_requests))
    p0=$(cpu_ticks "$on_pid") r0=$(cpu_ticks "$redis_pid")
    wrk_run "$on_base/v2/$repo/blobs/$small" 64 2 -H "$auth"
    p1=$(cpu_ticks "$on_pid") r1=$(cpu_ticks "$redis_pid")
    on_ticks=$((on_ticks + p1 - p0)) redis_ticks=$((redis_ticks + r1 - r0)) on_req=$((on_req + w_requests))
  done
  off_cpu=$(per_request_us 0 "$off_ticks" "$off_req") on_cpu=$(per_request_us 0 "$on_ticks" "$on_req")
  redis_cpu=$(per_request_us 0 "$redis_ticks" "$on_req")
  echo
  echo "| shared_state.redis (mean of 2 interleaved runs) | off | on | on/off |"
  echo "|---|---|---|---|"
  awk -v a="$off_tok" -v b="$on_tok" 'BEGIN{printf "| tokens, PAT, ES256, 64 conns (tokens/s) | %.0f | %.0f | %.2fx |\n", a, b, b / a}'
  awk -v a="$off_cpu" -v b="$on_cpu" -v r="$redis_cpu" 'BEGIN{printf "| 1 KiB blob GET, 64 conns: gateway CPU per request (us) | %.1f | %.1f (Redis: %.1f) | %.2fx |\n", a, b, r, b / a}'
  stop "$on_pid"; stop "$redis_pid"
}
shared_state_rows
