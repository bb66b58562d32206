# Vigil build, test and code generation. `make help` lists the targets.

GO        ?= go
CLANG     ?= clang-19
BPFTOOL   ?= bpftool
BIN       := bin
GOTEST    := $(GO) test -count=1
export CLANG

.DEFAULT_GOAL := build

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/vigil-server, bin/vigil-agent and bin/vigilctl
	$(GO) build -o $(BIN)/ ./cmd/vigil-server ./cmd/vigil-agent ./cmd/vigilctl

.PHONY: generate
generate: ## regenerate bpf2go output, vmlinux.h and protobuf stubs
	$(GO) generate ./gen/... ./agent/...

.PHONY: vmlinux
vmlinux: ## regenerate bpf/vmlinux.h from this kernel's BTF
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

.PHONY: check-generated
check-generated: generate ## fail if the committed generated code is stale
	git diff --exit-code -- gen agent bpf

.PHONY: test
test: ## every test, as root; CI runs exactly this
	$(GO) vet ./...
	$(GOTEST) -timeout 14m -tags integration ./...

.PHONY: test-unit
test-unit: ## tests that need neither root nor BPF
	$(GOTEST) -short ./...

.PHONY: bench
bench: build ## benchmarks; prints a table of ratios
	$(GO) run ./tests/bench/cmd/benchtable

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 1m)
	./tests/fuzz.sh $(or $(FUZZTIME),1m)

.PHONY: run
run: build ## server + an agent for this host, example policy, live events
	./tests/run.sh

.PHONY: lint
lint: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)

.PHONY: format
format: ## gofmt and clang-format the sources
	gofmt -w $$(git ls-files '*.go')

.PHONY: clean
clean: ## remove build output and the local state of `make run`
	rm -rf $(BIN) var
