#!/usr/bin/env bash
# The Debian package, as an operator installs it, without changing this machine: build it with
# `cargo deb --no-build` from the release binary `cargo test --release` already made, unpack it
# with `dpkg -x` into a temporary root, check what it holds (binary, unit, conffile, maintainer
# scripts), run its make-keys as the postinst does, and run the packaged binary's `check` on
# the packaged config. Prints PASS or FAIL; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d /tmp/portcullis-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT
fail() { echo "packaging: FAIL: $*" >&2; exit 1; }

[ -x target/release/portcullis ] || fail "target/release/portcullis is missing: cargo test --release (or cargo build --release) builds it"
cargo deb --version > /dev/null 2>&1 || fail "cargo-deb is missing: .ci/run installs it (cargo install cargo-deb --locked)"
deb=$(cargo deb --no-build --quiet --output "$root/out/" 2>"$root/cargo-deb.log" | tail -n 1) \
  || { cat "$root/cargo-deb.log" >&2; fail "cargo deb --no-build failed"; }
[ -f "$deb" ] || { cat "$root/cargo-deb.log" >&2; fail "cargo deb printed no package path"; }
echo "packaging: built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

dpkg-deb -x "$deb" "$root/fs"
dpkg-deb -e "$deb" "$root/control"
for path in usr/bin/portcullis usr/lib/systemd/system/portcullis.service etc/portcullis/gateway.yaml usr/share/portcullis/make-keys; do
  [ -e "$root/fs/$path" ] || fail "the package has no /$path"
done
grep -qx '/etc/portcullis/gateway.yaml' "$root/control/conffiles" || fail "/etc/portcullis/gateway.yaml is not a conffile"
unit=$root/fs/usr/lib/systemd/system/portcullis.service
grep -q '^ExecStart=/usr/bin/portcullis serve --config /etc/portcullis/gateway.yaml$' "$unit" || fail "the unit's ExecStart is not /usr/bin/portcullis serve"
grep -q '^DynamicUser=yes$' "$unit" || fail "the unit has no DynamicUser=yes"
grep -q 'make-keys /etc/portcullis' "$root/control/postinst" || fail "postinst does not make the key material"
"$root/fs/usr/bin/portcullis" --version | grep -q '^portcullis ' || fail "the packaged binary does not run"

# What postinst does on the real machine, into the unpacked /etc/portcullis.
PATH="$root/fs/usr/bin:$PATH" "$root/fs/usr/share/portcullis/make-keys" "$root/fs/etc/portcullis" registry.example.com localhost 127.0.0.1 > "$root/make-keys.txt" \
  || { cat "$root/make-keys.txt"; fail "make-keys failed"; }
[ "$(stat -c %a "$root/fs/etc/portcullis/token.key")" = 600 ] || fail "token.key is not mode 0600"
# Run twice, it keeps the keys.
before=$(sha256sum < "$root/fs/etc/portcullis/token.key")
PATH="$root/fs/usr/bin:$PATH" "$root/fs/usr/share/portcullis/make-keys" "$root/fs/etc/portcullis" > /dev/null
[ "$before" = "$(sha256sum < "$root/fs/etc/portcullis/token.key")" ] || fail "make-keys replaced an existing key"

# The packaged config, checked by the packaged binary, with the credentials systemd would pass.
if ! out=$(CREDENTIALS_DIRECTORY="$root/fs/etc/portcullis" "$root/fs/usr/bin/portcullis" check --config "$root/fs/etc/portcullis/gateway.yaml" 2>&1); then
  echo "$out" >&2; fail "portcullis check of the packaged gateway.yaml failed"
fi
echo "$out" | sed 's/^/  /'
grep -q '(TLS)' <<< "$out" || fail "the packaged config does not terminate TLS"
grep -q 'WARNING' <<< "$out" && fail "check of the packaged config warns"
echo "packaging: PASS"
