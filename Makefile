# kmsproxy — see README.md. Every target runs on a laptop or CI with Go;
# eif, run-enclave and policy need a Nitro Enclaves host.

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 10s
PKGS      := ./...

.PHONY: all build test lint fuzz bench demo soak reproducible eif run-enclave policy clean

all: build

## build: the three binaries into ./bin (kmsproxyd without the simulator)
build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/kmsproxyd ./cmd/kmsproxyctl ./cmd/devkms
	$(GO) build -trimpath -tags nsmsim -o $(BIN)/kmsproxyd-sim ./cmd/kmsproxyd

## test: every test, with the race detector
test:
	$(GO) vet $(PKGS)
	$(GO) vet -tags nsmsim ./cmd/kmsproxyd
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

## fuzz: each fuzz target for FUZZTIME
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime=50x $$pkg; \
	  done; \
	done

## bench: package benchmarks, then the end-to-end benchmark table
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## demo: the whole flow on this machine (devkms, simulated NSM, kmsproxyd, kmsproxyctl)
demo:
	GO=$(GO) $(GO) run ./test/demo

clean:
	rm -rf $(BIN) build
