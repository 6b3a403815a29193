# kmsproxy — see README.md. Every target runs on a laptop or CI with Go;
# eif, run-enclave and policy need a Nitro Enclaves host.

GO        ?= go
BIN       ?= bin
FUZZTIME  ?= 10s
PKGS      := ./...

# CRYPTO is kmsproxyd's RSA backend for the envelope's RSA-OAEP unwrap:
# openssl (the default, as in the enclave image: OpenSSL's libcrypto through
# cgo, linked statically; needs gcc and libssl-dev) or go (crypto/rsa,
# CGO_ENABLED=0: about half the decrypts per vCPU, nothing but Go).
CRYPTO    ?= openssl
# VERSION is the release the binaries report (--version, kmsproxyd's ready
# log line and /v1/info), stamped with -ldflags -X: the same version gives
# the same bytes. Default: git describe of the checkout.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null)
VERSION_LDFLAGS := -X github.com/enclavekit/kmsproxy/internal/version.Version=$(VERSION)

ifeq ($(CRYPTO),openssl)
# Dockerfile.enclave's flags: netgo and osusergo keep glibc's NSS (which
# cannot be linked statically) out, -extldflags=-static makes the binary
# run in an empty root.
KMSPROXYD_ENV   := CGO_ENABLED=1
KMSPROXYD_TAGS  := netgo,osusergo,openssl
KMSPROXYD_LDEXT := -extldflags=-static
else ifeq ($(CRYPTO),go)
KMSPROXYD_ENV   := CGO_ENABLED=0
KMSPROXYD_TAGS  :=
KMSPROXYD_LDEXT :=
else
$(error CRYPTO=$(CRYPTO): want openssl or go)
endif
comma := ,
KMSPROXYD_BUILD = $(KMSPROXYD_ENV) $(GO) build -trimpath -ldflags '$(KMSPROXYD_LDEXT) $(VERSION_LDFLAGS)'

# The packages whose behaviour depends on the RSA backend, tested again with
# the OpenSSL backend by make test: the envelope (and its fuzz targets' seed
# corpora and the differential test), the recipient keys, the daemon's HTTP
# path, and the two commands that decrypt envelopes.
OPENSSL_PKGS := ./internal/cms/... ./internal/recipient ./internal/proxy ./cmd/kmsproxyd ./cmd/kmsproxyctl

.PHONY: all help build test lint no-binaries fuzz bench demo soak reproducible eif run-enclave policy clean check-libcrypto

all: build

## help: this list
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(MAKEFILE_LIST) | expand -t 16

## build: the three binaries into ./bin, kmsproxyd with OpenSSL and static (CRYPTO=go: crypto/rsa), and kmsproxyd-sim (with the NSM simulator)
build: $(if $(filter openssl,$(CRYPTO)),check-libcrypto)
	$(GO) build -trimpath -ldflags '$(VERSION_LDFLAGS)' -o $(BIN)/ ./cmd/kmsproxyctl ./cmd/devkms
	$(KMSPROXYD_BUILD) $(if $(KMSPROXYD_TAGS),-tags $(KMSPROXYD_TAGS)) -o $(BIN)/kmsproxyd ./cmd/kmsproxyd
	$(KMSPROXYD_BUILD) -tags $(KMSPROXYD_TAGS)$(if $(KMSPROXYD_TAGS),$(comma))nsmsim -o $(BIN)/kmsproxyd-sim ./cmd/kmsproxyd

# check-libcrypto stops a build that needs OpenSSL 3's headers and static
# libcrypto.a where they are missing, and says what to do.
check-libcrypto:
	@printf '#include <openssl/evp.h>\n#if OPENSSL_VERSION_MAJOR < 3\n#error OpenSSL 3 needed\n#endif\n' | $${CC:-cc} -E -x c - >/dev/null 2>&1 \
	  && [ "$$($${CC:-cc} -print-file-name=libcrypto.a)" != libcrypto.a ] \
	  || { echo "make: kmsproxyd's OpenSSL backend needs a C compiler and OpenSSL 3's headers and static libcrypto.a, which this machine lacks:" >&2; \
	       echo "make:   install them (Debian/Ubuntu: apt-get install gcc libssl-dev), or" >&2; \
	       echo "make:   build the pure Go kmsproxyd (crypto/rsa) instead: make $(or $(MAKECMDGOALS),build) CRYPTO=go" >&2; exit 1; }

## test: every test with the race detector (crypto/rsa), then the backend-dependent packages again with OpenSSL
# Two passes, because the race detector and the OpenSSL backend pull against
# each other on two cores: go test -race ./... (the pure Go build, about 3-5
# minutes) covers everything, including test/packaging, which builds and
# checks the static OpenSSL kmsproxyd the Dockerfile builds; then
# OPENSSL_PKGS, the packages whose behaviour depends on the backend, run
# again with -tags openssl and without -race (under a minute), so that the
# envelope tests, the fuzz seed corpora and the differential test pass on
# both backends. Running all of ./... twice would add the e2e, bench and
# packaging suites' minutes for code the backend does not touch. On a
# machine without libssl-dev the second pass is skipped with a message,
# unless KMSPROXY_REQUIRE_TOOLS=1 (CI), where it fails.
test:
	$(GO) vet $(PKGS)
	$(GO) vet -tags nsmsim ./cmd/kmsproxyd
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	@if $(MAKE) -s --no-print-directory check-libcrypto CRYPTO=openssl MAKECMDGOALS=test 2>/dev/null; then \
	  echo "$(GO) vet -tags openssl $(OPENSSL_PKGS)"; $(GO) vet -tags openssl $(OPENSSL_PKGS) && \
	  echo "CGO_ENABLED=1 $(GO) test -tags openssl -count=1 $(OPENSSL_PKGS)"; CGO_ENABLED=1 $(GO) test -tags openssl -count=1 -timeout 15m $(OPENSSL_PKGS); \
	elif [ "$$KMSPROXY_REQUIRE_TOOLS" = 1 ]; then \
	  $(MAKE) -s --no-print-directory check-libcrypto CRYPTO=openssl MAKECMDGOALS=test; exit 1; \
	else \
	  echo "make test: skipping the OpenSSL backend's tests: no libssl-dev here (apt-get install gcc libssl-dev; KMSPROXY_REQUIRE_TOOLS=1 makes this an error)"; \
	fi

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

## bench: package benchmarks, then the end-to-end table (test/bench: both builds, in units of t_floor; BENCHFLAGS=-quick for a short run)
# The table needs Go only: without gcc and libssl-dev its OpenSSL rows are
# skipped with a message and t_floor is crypto/rsa's. The package benchmarks
# of the OpenSSL backend run where it can be linked.
bench:
	$(GO) test -run '^$$' -bench . -skip 'EnvelopeOverhead|Backends' -benchmem $(PKGS)
	@if $(MAKE) -s --no-print-directory check-libcrypto CRYPTO=openssl MAKECMDGOALS=bench 2>/dev/null; then \
	  echo "CGO_ENABLED=1 $(GO) test -tags openssl -run '^\$$' -bench '$(OPENSSL_BENCH)' -benchtime 4s ./internal/cms ./internal/proxy"; \
	  CGO_ENABLED=1 $(GO) test -tags openssl -run '^$$' -bench '$(OPENSSL_BENCH)' -benchtime 4s ./internal/cms ./internal/proxy; \
	else \
	  echo "make bench: skipping the OpenSSL backend's package benchmarks: no libssl-dev here (apt-get install gcc libssl-dev)"; \
	  $(GO) test -run '^$$' -bench 'Backends|EnvelopeOverhead' -benchtime 4s ./internal/cms; \
	fi
	$(GO) run ./test/bench $(BENCHFLAGS)

# OPENSSL_BENCH are the package benchmarks run again with the OpenSSL
# backend: the bare decryption of each backend, the envelope's cost over it,
# and the in-process attested Decrypt.
OPENSSL_BENCH := Backends|OpenSSLContext|EnvelopeOverhead|AttestedDecrypt|AddedLatency

## soak: 10 minutes at 200 requests/s against kmsproxyd (SOAKFLAGS=-duration 1m for a short run)
soak:
	$(GO) run ./test/bench soak $(SOAKFLAGS)

DEMOFLAGS ?=

## demo: the whole flow on this machine (devkms, simulated NSM and NitroTPM, kmsproxyd, kmsproxyctl), for an enclave and an attested instance; DEMOFLAGS=-keep keeps its folder and the command lines
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

## reproducible: build kmsproxyd twice exactly as Dockerfile.enclave does (VERSION stamped; CRYPTO=go: the pure Go image); fail unless byte-identical and runnable in an empty root
reproducible: $(if $(filter openssl,$(CRYPTO)),check-libcrypto)
	$(GO) run ./test/packaging/reproducible -out $(BUILD)/kmsproxyd -build-arg 'VERSION=$(VERSION)' $(if $(filter go,$(CRYPTO)),-build-arg CGO_ENABLED=0)

## eif: the enclave image (docker build) and its EIF and measurements (nitro-cli build-enclave)
eif:
	@command -v docker >/dev/null 2>&1 || { echo "make eif: docker is not installed; build the EIF on a Nitro Enclaves parent instance (docs/deployment.md, step 2)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make eif: cannot reach the docker daemon: start it (sudo systemctl start docker) and join the docker group" >&2; exit 1; }
	@command -v nitro-cli >/dev/null 2>&1 || { echo "make eif: nitro-cli is not installed; build the EIF on a Nitro Enclaves parent instance (docs/deployment.md, step 2)" >&2; exit 1; }
	mkdir -p $(BUILD)
	docker build -f Dockerfile.enclave --build-arg 'VERSION=$(VERSION)' $(if $(filter go,$(CRYPTO)),--build-arg CGO_ENABLED=0) -t $(IMAGE) .
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
