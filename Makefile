# kmsproxy — see README.md. Every target runs on a laptop or CI with Go;
# eif, run-enclave and policy need a Nitro Enclaves host.

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 10s
PKGS      := ./...

.PHONY: all help build test lint no-binaries fuzz bench demo soak reproducible eif run-enclave policy clean

all: build

## help: this list
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(MAKEFILE_LIST) | expand -t 16

## build: the three binaries into ./bin (kmsproxyd without the simulator)
build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/kmsproxyd ./cmd/kmsproxyctl ./cmd/devkms
	$(GO) build -trimpath -tags nsmsim -o $(BIN)/kmsproxyd-sim ./cmd/kmsproxyd

## test: every test, with the race detector
test:
	$(GO) vet $(PKGS)
	$(GO) vet -tags nsmsim ./cmd/kmsproxyd
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

## lint: gofmt, go vet, staticcheck, and no build output in git
lint: no-binaries
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

# no-binaries fails when git tracks an executable or object file (ELF,
# Mach-O, PE) or any file over 1 MiB: build output belongs in bin/ or build/,
# which .gitignore keeps out.
no-binaries:
	@bad=$$(git ls-files -z | xargs -0 -n64 sh -c 'for f; do [ -f "$$f" ] || continue; \
	  m=$$(head -c 4 "$$f" | od -An -tx1 | tr -d " \n"); \
	  case "$$m" in 7f454c46|cffaedfe|cefaedfe|feedface|feedfacf|4d5a*) echo "$$f (executable or object file)"; continue;; esac; \
	  [ $$(wc -c < "$$f") -le 1048576 ] || echo "$$f (over 1 MiB)"; done' sh); \
	if [ -n "$$bad" ]; then echo "git tracks build output; git rm --cached it:"; echo "$$bad"; exit 1; fi

## fuzz: each fuzz target for FUZZTIME
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime=50x $$pkg; \
	  done; \
	done

BENCHFLAGS ?=
SOAKFLAGS  ?=

## bench: package benchmarks, then the end-to-end benchmark table (test/bench; BENCHFLAGS=-quick for a short run)
bench:
	$(GO) test -run '^$$' -bench . -skip EnvelopeOverhead -benchmem $(PKGS)
	$(GO) test -run '^$$' -bench EnvelopeOverhead -benchtime 4s -benchmem ./internal/cms
	$(GO) run ./test/bench $(BENCHFLAGS)

## soak: 10 minutes at 200 requests/s against kmsproxyd (SOAKFLAGS=-duration 1m for a short run)
soak:
	$(GO) run ./test/bench soak $(SOAKFLAGS)

DEMOFLAGS ?=

## demo: the whole flow on this machine (devkms, simulated NSM, kmsproxyd, kmsproxyctl); DEMOFLAGS=-keep keeps its folder and the command lines
demo:
	@echo "make demo: compiling kmsproxyd, kmsproxyctl, devkms and the demo (the first time takes a minute or two)"
	$(GO) build -tags nsmsim -o $(BIN)/demo/ ./test/demo ./cmd/kmsproxyd ./cmd/kmsproxyctl ./cmd/devkms
	$(BIN)/demo/demo -bin $(BIN)/demo $(DEMOFLAGS)

clean:
	rm -rf $(BIN) build

# Enclave image and deployment (docs/deployment.md). eif and run-enclave need
# a Nitro Enclaves parent instance (docker, nitro-cli); reproducible and
# policy run anywhere Go does.
IMAGE    ?= kmsproxyd:latest
BUILD    ?= build
ROLE_ARN ?=

## reproducible: build kmsproxyd twice exactly as Dockerfile.enclave does; fail unless byte-identical
reproducible:
	$(GO) run ./test/packaging/reproducible -out $(BUILD)/kmsproxyd

## eif: the enclave image (docker build) and its EIF and measurements (nitro-cli build-enclave)
eif:
	@command -v docker >/dev/null 2>&1 || { echo "make eif: docker is not installed; build the EIF on a Nitro Enclaves parent instance (docs/deployment.md, step 2)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make eif: cannot reach the docker daemon: start it (sudo systemctl start docker) and join the docker group" >&2; exit 1; }
	@command -v nitro-cli >/dev/null 2>&1 || { echo "make eif: nitro-cli is not installed; build the EIF on a Nitro Enclaves parent instance (docs/deployment.md, step 2)" >&2; exit 1; }
	mkdir -p $(BUILD)
	docker build -f Dockerfile.enclave -t $(IMAGE) .
	nitro-cli build-enclave --docker-uri $(IMAGE) --output-file $(BUILD)/kmsproxyd.eif > $(BUILD)/measurements.json.tmp
	mv $(BUILD)/measurements.json.tmp $(BUILD)/measurements.json
	@cat $(BUILD)/measurements.json

## run-enclave: start $(BUILD)/kmsproxyd.eif with enclave/run-enclave.json's settings (CID 16, debug mode off)
run-enclave:
	@command -v nitro-cli >/dev/null 2>&1 || { echo "make run-enclave: nitro-cli is not installed; run enclaves on a Nitro Enclaves parent instance (docs/deployment.md, step 2)" >&2; exit 1; }
	@test -f $(BUILD)/kmsproxyd.eif || { echo "make run-enclave: $(BUILD)/kmsproxyd.eif is missing: run make eif first" >&2; exit 1; }
	sed 's|"eif_path": *"[^"]*"|"eif_path": "$(abspath $(BUILD))/kmsproxyd.eif"|' enclave/run-enclave.json > $(BUILD)/run-enclave.json
	nitro-cli run-enclave --config $(BUILD)/run-enclave.json

## policy: the KMS key policy admitting $(BUILD)/measurements.json's image for ROLE_ARN
policy:
	@test -n "$(ROLE_ARN)" || { echo "make policy: set ROLE_ARN to the parent instance's role, e.g. make policy ROLE_ARN=arn:aws:iam::111122223333:role/enclave-parent" >&2; exit 1; }
	@test -f $(BUILD)/measurements.json || { echo "make policy: $(BUILD)/measurements.json is missing: run make eif first (on a Nitro Enclaves parent instance)" >&2; exit 1; }
	$(GO) run ./cmd/kmsproxyctl policy generate --measurements $(BUILD)/measurements.json --role '$(ROLE_ARN)' > $(BUILD)/key-policy.json.tmp
	mv $(BUILD)/key-policy.json.tmp $(BUILD)/key-policy.json
	@echo "wrote $(BUILD)/key-policy.json: check it with kmsproxyctl policy check (docs/deployment.md, step 5)"
