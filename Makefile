# Build tools are pinned in tools/go.mod; a fresh machine needs only Go.
GO        ?= go
TOOL      := $(GO) tool -modfile=tools/go.mod
BUF       := $(TOOL) buf
# CONTRACT is the committed image of the API contract (binary, deterministic): `buf breaking`
# checks proto/ against it, so a change that would break a client fails `make lint` on any
# clone, shallow ones included. `make generate` refreshes it, but only after that check passes.
CONTRACT  := proto/contract.binpb
GOFILES    = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^gen/')

.PHONY: all build generate lint check-generated test test-short run bench clean

all: lint test

## build: compile the binaries into bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

## generate: regenerate gen/ from proto/ (and the embedded OpenAPI copy); refresh the contract image
generate:
	$(BUF) breaking --against $(CONTRACT)
	$(BUF) build --exclude-source-info -o $(CONTRACT)
	$(BUF) generate
	$(GO) generate ./internal/apidoc

## lint: formatting, vet, staticcheck, buf lint, buf format and buf breaking against the contract
lint:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOL) staticcheck ./...
	$(BUF) lint
	$(BUF) format -d --exit-code
	$(BUF) breaking --against $(CONTRACT)
	if [ -f deploy/go.mod ]; then cd deploy && $(GO) vet ./...; fi

## check-generated: fail if gen/ differs from what the protos generate
check-generated: generate
	@if [ -n "$$(git status --porcelain -- gen internal/apidoc $(CONTRACT))" ]; then \
		echo "generated code is stale; run 'make generate' and commit:"; \
		git status --porcelain -- gen internal/apidoc $(CONTRACT); git diff --stat -- gen internal/apidoc $(CONTRACT); exit 1; fi
	@echo "gen/ is up to date"

## test: every test, under the race detector
test:
	$(GO) test -race ./...
	if [ -f deploy/go.mod ]; then cd deploy && $(GO) test ./...; fi

## test-short: the fast loop: unit tests under the race detector, end-to-end tests skipped
test-short:
	$(GO) test -race -short ./...

## run: the sandbox (or GitHub, when a token is configured), a broker and a proxy on loopback
run:
	@if [ -x scripts/run.sh ]; then exec scripts/run.sh; else echo "make run: not yet (the broker and proxy are in progress)"; fi

## bench: the benchmark suite; writes docs/benchmarks.md
bench:
	@command -v nginx >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) \
		|| echo "make bench: nginx could not be installed; the nginx reference will be missing"
	$(GO) run ./bench -out docs/benchmarks.md

clean:
	rm -rf bin .run
