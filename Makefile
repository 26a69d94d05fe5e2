# phonebridge — build, run and test. `make help` lists the targets.

GO      ?= go
BIN     := bin/phonebridge
FUZZTIME ?= 30s
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help build run test bench bench-whatsapp soak fuzz install fmt vet clean

help:
	@echo "make build   build $(BIN)"
	@echo "make run     build, then run the daemon on example.yaml"
	@echo "make test    install test dependencies, then gofmt, vet and every test with -race"
	@echo "make bench   the relay benchmarks, six runs into bench.txt (figures go in docs/BENCHMARKS.md)"
	@echo "make bench-whatsapp  WhatsApp through the real client on a fake WhatsApp: to the API, Matrix and IRC, idle links (about 40 min)"
	@echo "make soak    relay 100,000 messages across 1,000 chats through the daemon; checks memory and the outbox"
	@echo "make fuzz    run every fuzz target for FUZZTIME ($(FUZZTIME)) each, one after another"
	@echo "make install build, then install the binary, the systemd unit and a starting config (as root)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/phonebridge

run: build
	./$(BIN) run -c example.yaml

test:
	./scripts/test.sh

install: build
	./scripts/install.sh

# The relay benchmarks as docs/BENCHMARKS.md gives them: six runs into
# bench.txt, for benchstat (about 5 minutes).
bench:
	$(GO) test -run '^$$' -bench 'Relay' -benchtime 30000x -count 6 -timeout 30m ./bench/ > bench.txt || { cat bench.txt; exit 1; }
	cat bench.txt

# Not part of bench: the daemon built with -tags fakewa, Dendrite, ngIRCd,
# and a minute idle then a restart for each of 1, 10, 100 and 1,000 links
# (issues 13 and 17).
bench-whatsapp:
	$(GO) test -run '^$$' -bench 'WhatsAppToAPI' -benchtime 3000x -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'WhatsAppToMatrix' -benchtime 1000x -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'WhatsAppToIRC' -benchtime 1000x -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'IdleLinks' -benchtime 1x -timeout 60m ./bench/

soak:
	$(GO) test -run '^$$' -bench 'Soak' -benchtime 100000x -timeout 30m ./bench/

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin state
