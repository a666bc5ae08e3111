# Shared by scripts/demo and bench/*: start a registry that trusts only the gateway's tokens and
# the gateway in front of it, on free loopback ports, in a temporary folder torn down on exit.
# Source it, then call `stack_up`. Sets: work, bin, public, host, token, registry_pid, gateway_pid.
# With STACK_TLS_HOST=ADDRESS set, the gateway listens on ADDRESS and terminates TLS with a
# certificate `portcullis init --tls-host` made (its CA: $work/ca.crt); public is https then.
# STACK_WRAPPER (an array, e.g. (valgrind --tool=callgrind)) runs the gateway under a command;
# STACK_WAIT is how many tenths of a second to wait for it (default 100).

pids=()
# Commands run at cleanup before the processes are stopped (undo what they set up).
cleanup_hooks=()

# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 20) for it to exit, then SIGKILL.
stop_pid() {
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || return 0
  for ((i = 0; i < ${2:-20} * 10; i++)); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$p" 2>/dev/null; then
    echo "pid $p did not stop on SIGTERM: SIGKILL" >&2
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
}

# Undo the hooks, stop every process in `pids` by pid (the last started first), gracefully,
# and remove the work folder.
stack_cleanup() {
  local i
  for ((i = ${#cleanup_hooks[@]} - 1; i >= 0; i--)); do eval "${cleanup_hooks[i]}" || true; done
  cleanup_hooks=()
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  rm -rf "$work"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# registry_yml FILE PORT BUNDLE: a registry config for 127.0.0.1:PORT, its storage next to FILE,
# that accepts only tokens for container_registry from portcullis signed by a key in BUNDLE. Its
# own realm points nowhere: clients only ever learn the gateway's. No http.host: the registry
# builds upload Locations from the Host or X-Forwarded-Host it is sent.
registry_yml() {
  cat > "$1" <<YAML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $(dirname "$1")/registry-data } }
http: { addr: "127.0.0.1:$2" }
auth:
  token:
    realm: "http://internal.invalid/jwt/auth"
    service: container_registry
    issuer: portcullis
    rootcertbundle: $3
YAML
}

stack_up() {
  bin=${bin:-$PWD/target/release/portcullis}
  work=$(mktemp -d /tmp/portcullis.XXXXXX)
  trap stack_cleanup EXIT
  local registry_port gateway_port sha
  registry_port=$(free_port); gateway_port=$(free_port)
  local tls=""
  if [ -n "${STACK_TLS_HOST:-}" ]; then
    host="$STACK_TLS_HOST:$gateway_port"
    public="https://$host"
    "$bin" init --dir "$work" --upstream "http://127.0.0.1:$registry_port" --public-url "$public" \
      --tls-host "$STACK_TLS_HOST,localhost,127.0.0.1" > "$work/init.txt"
    tls="tls: { cert: tls.crt, key: tls.key }"
  else
    host="127.0.0.1:$gateway_port"
    public="http://$host"
    "$bin" init --dir "$work" --upstream "http://127.0.0.1:$registry_port" --public-url "$public" > "$work/init.txt"
  fi
  read -r _ token < <("$bin" token generate | grep '^token:')
  sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
  cat > "$work/gateway.yaml" <<YAML
listen: "$host"
public_url: "$public"
$tls
upstream: { url: "http://127.0.0.1:$registry_port" }
token: { issuer: portcullis, service: container_registry, expiry: 5m, signing_key: token.key, certificate: token.crt }
users:
  - username: alice
    personal_access_tokens:
      - { name: demo, token_sha256: "$sha", scopes: [read_registry, write_registry] }
projects:
  - path: mygroup/myproject
    visibility: private
    members: { alice: developer }
YAML
  registry_yml "$work/registry.yml" "$registry_port" "$work/token.crt"
  docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 & registry_pid=$!; pids+=("$registry_pid")
  "${STACK_WRAPPER[@]}" "$bin" serve --config "$work/gateway.yaml" > "$work/gateway.log" 2>&1 & gateway_pid=$!; pids+=("$gateway_pid")
  local curl_ca=()
  [ -z "$tls" ] || curl_ca=(--cacert "$work/ca.crt")
  for _ in $(seq "${STACK_WAIT:-100}"); do
    curl -s "${curl_ca[@]}" -o /dev/null "$public/v2/" && curl -s -o /dev/null "http://127.0.0.1:$registry_port/v2/" && return 0
    sleep 0.1
  done
  echo "the stack did not come up" >&2; cat "$work/registry.log" "$work/gateway.log" >&2; return 1
}

# stack_upload AUTH FILE [CURL ARGS]: FILE pushed through the gateway as a blob of $repo the way
# clients push layers (POST, PATCH with the body, PUT with the digest), AUTH the Authorization
# header; prints the digest. Fails, saying which step, on any answer that is not a success.
stack_upload() {
  local auth=$1 file=$2 digest location curl_ca=(); shift 2
  [ ! -f "$work/ca.crt" ] || curl_ca=(--cacert "$work/ca.crt")
  digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
  location=$(curl -sf "${curl_ca[@]}" "$@" -X POST -D - -o /dev/null -H "$auth" "$public/v2/$repo/blobs/uploads/" \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [ -n "$location" ] || { echo "stack_upload: POST of $file failed" >&2; return 1; }
  case $location in /*) location=$public$location ;; esac
  location=$(curl -sf "${curl_ca[@]}" "$@" -X PATCH -D - -o /dev/null -H "$auth" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" "$location" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [ -n "$location" ] || { echo "stack_upload: PATCH of $file failed" >&2; return 1; }
  case $location in /*) location=$public$location ;; esac
  curl -sf "${curl_ca[@]}" "$@" -X PUT -o /dev/null -H "$auth" "$location&digest=$digest" \
    || { echo "stack_upload: PUT of $file failed" >&2; return 1; }
  echo "$digest"
}

# A token for `scope` from the gateway, as alice.
stack_token() {
  local curl_ca=()
  [ ! -f "$work/ca.crt" ] || curl_ca=(--cacert "$work/ca.crt")
  curl -sf "${curl_ca[@]}" -u "alice:$token" "$public/jwt/auth?service=container_registry&scope=$1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
