#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable on a shared 2-core machine where
# wall-clock and CPU-time figures move by 5-10% between runs. Each binary serves the same
# requests in front of the same real registry; only the requests are counted (counters are
# zeroed after a warm-up and dumped after the last request). Prints one table.
#
#   bench/callgrind.sh [--requests N] BINARY [BINARY...]
#
# Each request is a kept-alive GET with a valid Bearer token: the manifest of a tag, a 1 KiB
# blob, and the /v2/ ping. Needs valgrind, docker-registry, curl, python3.
# CALLGRIND_KEEP=DIR keeps each binary's profile there (DIR/BINARY.callgrind).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
requests=300
if [ "${1:-}" = "--requests" ]; then requests=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
command -v valgrind > /dev/null || { echo "bench/callgrind.sh needs valgrind" >&2; exit 1; }

# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
results=()
for bin in "$@"; do
  bin=$(realpath "$bin")
  cg=$(mktemp -d /tmp/portcullis-callgrind.XXXXXX)
  STACK_WRAPPER=(valgrind --tool=callgrind "--callgrind-out-file=$cg/cg.out")
  STACK_WAIT=600
  stack_up
  repo=mygroup/myproject/bench
  bearer=$(stack_token "repository:$repo:pull,push")
  # A 1 KiB blob and a manifest naming it, pushed through the gateway.
  blob=$work/blob; head -c 1024 /dev/urandom > "$blob"
  digest=sha256:$(sha256sum "$blob" | cut -d' ' -f1)
  location=$(curl -sf -X POST -D - -o /dev/null -H "Authorization: Bearer $bearer" "$public/v2/$repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  curl -sf -X PUT -H "Authorization: Bearer $bearer" -H 'Content-Type: application/octet-stream' --data-binary "@$blob" "$location&digest=$digest" > /dev/null
  manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":1024},"layers":[]}' "$digest")
  curl -sf -X PUT -H "Authorization: Bearer $bearer" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data "$manifest" "$public/v2/$repo/manifests/v1" > /dev/null
  urls() {
    for _ in $(seq "$1"); do
      for path in "$repo/manifests/v1" "$repo/blobs/$digest" ""; do
        printf 'url = "%s/v2/%s"\noutput = "/dev/null"\n' "$public" "$path"
      done
    done
  }
  fetch() { # N: fails unless every answer is a 200
    local bad
    bad=$(urls "$1" | curl -s -K - -w '%{http_code}\n' -H "Authorization: Bearer $bearer" \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' | grep -vc '^200$' || true)
    [ "$bad" = 0 ] || { echo "bench/callgrind.sh: $bad answers were not 200" >&2; cat "$work/gateway.log" >&2; exit 1; }
  }
  fetch 20
  callgrind_control -z "$gateway_pid" > /dev/null 2>&1
  fetch "$requests"
  callgrind_control -d "$gateway_pid" > /dev/null 2>&1
  sleep 1
  total=$(awk '/^summary:/{print $2; exit}' "$cg/cg.out.1")
  # CALLGRIND_KEEP=DIR keeps each binary's profile for callgrind_annotate.
  [ -z "${CALLGRIND_KEEP:-}" ] || cp "$cg/cg.out.1" "$CALLGRIND_KEEP/$(basename "$bin").callgrind"
  results+=("$(basename "$bin")|$(awk -v t="$total" -v n="$((requests * 3))" 'BEGIN{printf "%.0f", t / n}')")
  stack_cleanup; pids=(); rm -rf "$cg"
  trap - EXIT
done
echo "| binary | instructions per request (manifest, 1 KiB blob, /v2/ ping; mean of $((requests * 3))) |"
echo "|---|---|"
for r in "${results[@]}"; do echo "| ${r%%|*} | ${r#*|} |"; done
