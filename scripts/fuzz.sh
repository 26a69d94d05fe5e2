#!/usr/bin/env bash
# Runs every fuzz target in the repository (`make fuzz` calls it), one
# after another, each for FUZZTIME (default 30s). `go test` finds them, so
# a new target is fuzzed without being listed here. A crasher is written
# to the package's testdata/fuzz and stops the run.
#
#   FUZZTIME=5m make fuzz           longer
#   FUZZFLAGS='-parallel 1' make fuzz   on a busy machine
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
# Minimizing each new input takes up to 60s by default, which would eat a
# short run; a crasher minimized for 10s is small enough to read.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-10s}

# `go test -list` prints each package's matching names, then "ok PKG".
targets=$($GO test -list '^Fuzz' ./... | awk '/^Fuzz/ { names = names " " $1; next } /^ok/ { if (names != "") print $2 names; names = "" }')
if [ -z "$targets" ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

while read -r pkg names; do
  for name in $names; do
    echo "== $pkg $name ($FUZZTIME)"
    log=$(mktemp)
    # ${FUZZFLAGS:-} is split into flags on purpose.
    # shellcheck disable=SC2086
    if $GO test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" ${FUZZFLAGS:-} "$pkg" 2>&1 | tee "$log"; then
      rm -f "$log"
      continue
    fi
    # Go 1.26's coordinator can report the end of -fuzztime as a failure
    # (go.dev/issue/75804): no input is written then, and nothing failed.
    if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
      echo "(the fuzztime deadline reported as a failure, go.dev/issue/75804: not a finding)"
      rm -f "$log"
      continue
    fi
    rm -f "$log"
    exit 1
  done
done <<<"$targets"
