#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls `make test`, which runs
# this). On a fresh machine it first installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/test-deps.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
  echo "not gofmt-formatted:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
# Fuzz targets run their seed corpus here. Integration tests build and run
# the real binary, itself built with -race so races in the daemon show too.
export PHONEBRIDGE_TEST_RACE=1
# The real-binary tests (cmd/phonebridge) time the daemon against real
# servers under faults; they run after the rest, alone, so the in-process
# WhatsApp tests' CPU (real Signal crypto under -race) does not skew them.
# The soak (bench: TestSoak) runs last, alone too: it keeps both cores
# busy for half a minute, which would skew every timed test beside it.
go test -race -count=1 -timeout 20m $(go list ./... | grep -v -e '/cmd/phonebridge$' -e '/bench$')
go test -race -count=1 -timeout 30m ./cmd/phonebridge
go test -race -count=1 -timeout 20m ./bench
