#!/usr/bin/env bash
# Installs what the test suite needs and a fresh machine lacks; does nothing
# for what is already there. Debian packages come from apt-get, Go tools
# from `go install`.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v go >/dev/null || { echo "Go is not installed: get it from https://go.dev/dl/ and put it on PATH" >&2; exit 1; }
# The race detector needs cgo, hence a C compiler.
command -v gcc >/dev/null || apt_install gcc libc6-dev

# IRC integration tests run their own ngIRCd and InspIRCd (which offers the
# IRCv3 echo-message and labeled-response ngIRCd lacks) in the foreground
# on free ports. A policy-rc.d that denies keeps each package from starting
# its system service (unless the machine already has a policy of its own).
install_ircd() { # package binary
  if command -v "$2" >/dev/null || [ -x "/usr/sbin/$2" ]; then return; fi
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  status=0; apt_install "$1" || status=$?
  if [ -n "$own_policy" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" -eq 0 ] || exit "$status"
}
install_ircd ngircd ngircd
install_ircd inspircd inspircd
# If a system service is running anyway, stop it: it would hold port 6667.
for service in ngircd inspircd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    as_root systemctl disable --now "$service" || true
  fi
done

# The web link page's test drives a headless Chromium over the DevTools
# protocol; Debian's package needs no browser download of its own.
command -v chromium >/dev/null || apt_install chromium

# The install test checks the systemd unit with systemd-analyze.
command -v systemd-analyze >/dev/null || apt_install systemd

# Matrix integration tests run a real Dendrite homeserver (cgo SQLite).
dendrite_version=v0.13.8
gobin=$(go env GOBIN); gobin=${gobin:-$(go env GOPATH)/bin}
dendrite_ok() {
  go version -m "$gobin/dendrite" 2>/dev/null | grep "^[[:space:]]*mod[[:space:]]*github.com/matrix-org/dendrite[[:space:]]*$dendrite_version[[:space:]]" >/dev/null &&
    for tool in generate-keys generate-config create-account; do [ -x "$gobin/$tool" ] || return 1; done
}
if ! dendrite_ok; then
  echo "building Dendrite $dendrite_version (about 2 minutes the first time)"
  CGO_ENABLED=1 go install github.com/matrix-org/dendrite/cmd/{dendrite,generate-keys,generate-config,create-account}@"$dendrite_version"
fi
