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
