# Build tools are pinned in tools/go.mod; a fresh machine needs only Go.
GO        ?= go
TOOL      := $(GO) tool -modfile=tools/go.mod
BUF       := $(TOOL) buf
# CONTRACT is the committed image of the API contract (binary, deterministic): `buf breaking`
# checks proto/ against it, so a change that would break a client fails `make lint` on any
# clone, shallow ones included. `make generate` refreshes it, but only after that check passes.
CONTRACT  := proto/contract.binpb
GOFILES    = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^gen/')

.PHONY: all build generate lint tidy-check vulncheck check-generated test test-short run bench screenshots clean

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

## lint: formatting, vet, staticcheck, buf lint, buf format, buf breaking against the contract,
## tidy go.mod files, govulncheck
lint: tidy-check
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOL) staticcheck ./...
	$(BUF) lint
	$(BUF) format -d --exit-code
	$(BUF) breaking --against $(CONTRACT)
	cd deploy && $(GO) vet ./...
	$(MAKE) --no-print-directory vulncheck

## tidy-check: fail if go.mod or go.sum of any module (root, tools, deploy) is not tidy
tidy-check:
	@for m in . tools deploy; do \
		(cd $$m && $(GO) mod tidy -diff) || { echo "$$m: go.mod/go.sum not tidy; run 'go mod tidy' in $$m"; exit 1; }; \
	done

# The Go vulnerability database, offline: the OSV entries of golang.org/x/vulndb
# at the version pinned in tools/go.mod, indexed into .cache/ by the vulndb
# project's own indexdb. Bump that version (cd tools && go get
# golang.org/x/vulndb@master) to scan against newer entries; set
# GOVULNDB=https://vuln.go.dev to use the live database instead.
VULNDB_VERSION = $(shell $(GO) list -modfile=tools/go.mod -m -f '{{.Version}}' golang.org/x/vulndb)
VULNDB_DIR     = .cache/vulndb-$(VULNDB_VERSION)
GOVULNDB      ?=

## vulncheck: govulncheck on every package against the pinned vulnerability database;
## fails on any reachable vulnerability not accepted in tools/govulncheck-accepted.txt
vulncheck:
	@mkdir -p .cache
	@if [ -z "$(GOVULNDB)" ] && [ ! -f $(VULNDB_DIR)/index/db.json ]; then \
		$(GO) mod download -modfile=tools/go.mod golang.org/x/vulndb && \
		src=$$($(GO) list -modfile=tools/go.mod -m -f '{{.Dir}}' golang.org/x/vulndb)/data/osv && \
		echo "vulncheck: indexing $$(ls $$src | wc -l) OSV entries of golang.org/x/vulndb $(VULNDB_VERSION) into $(VULNDB_DIR)" && \
		rm -rf $(VULNDB_DIR).tmp && $(TOOL) indexdb -vulns $$src -out $(VULNDB_DIR).tmp && mv $(VULNDB_DIR).tmp $(VULNDB_DIR); \
	fi
	$(TOOL) govulncheck -format json -db $(if $(GOVULNDB),$(GOVULNDB),file://$(CURDIR)/$(VULNDB_DIR)) ./... > .cache/govulncheck.json
	cd tools && $(GO) run ./vulncheck -accepted govulncheck-accepted.txt < ../.cache/govulncheck.json

## check-generated: fail if gen/ differs from what the protos generate
check-generated: generate
	@if [ -n "$$(git status --porcelain -- gen internal/apidoc $(CONTRACT))" ]; then \
		echo "generated code is stale; run 'make generate' and commit:"; \
		git status --porcelain -- gen internal/apidoc $(CONTRACT); git diff --stat -- gen internal/apidoc $(CONTRACT); exit 1; fi
	@echo "gen/ is up to date"

## test: every test, under the race detector
test:
	$(GO) test -race ./...
	cd deploy && $(GO) test ./...

## test-short: the fast loop: unit tests under the race detector, end-to-end tests skipped
test-short:
	$(GO) test -race -short ./...

## run: the sandbox (or GitHub, when a token is configured), a broker and a proxy on loopback
run:
	@exec scripts/run.sh

## bench: the benchmark suite; writes docs/benchmarks.md
bench:
	@command -v nginx >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) \
		|| echo "make bench: nginx could not be installed; the nginx reference will be missing"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
		|| echo "make bench: postgresql could not be installed; the ledger's PostgreSQL figures will say skipped"
	$(GO) run ./bench -out docs/benchmarks.md

## screenshots: the console's screenshots in docs/img (README), from its browser tests against the sandbox
screenshots:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	CONSOLE_SCREENSHOT_DIR=$(CURDIR)/docs/img.tmp $(GO) test ./e2e -run 'TestConsole(Overview|Keys)$$' -count=1
	mkdir -p docs/img
	cp docs/img.tmp/console-overview.png docs/img/
	test ! -f docs/img.tmp/console-keys.png || cp docs/img.tmp/console-keys.png docs/img/
	rm -rf docs/img.tmp

clean:
	rm -rf bin .run .cache
