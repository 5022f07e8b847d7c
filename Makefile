# Strake's entry points. Everything a newcomer or CI runs goes through here.
#
#   make demo       the whole story on a local control plane
#   make test       every test: unit, integration, SDK, end-to-end, and end-to-end on a node
#   make dev-up     a local stack to drive with kubectl and curl (make dev-down stops it)
#   make dev-up NODE=1   the same with a kubelet node running the chart's pods (root)
#   make images     the operator and proxy images as OCI tarballs in target/images (the benchmarks' release build)
#   make bench      the benchmark suite, written to docs/benchmarks.md

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export STRAKE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/strake
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TERM_COLOR ?= never
# NODE=1: the stack with a kubelet node (target/node); the default, without
# one, starts in seconds and is what make demo and make bench use.
NODE ?= 0
DEV_DIR := $(CURDIR)/target/$(if $(filter 1,$(NODE)),node,dev)
IMAGES_DIR := $(CARGO_TARGET_DIR)/images
export STRAKE_NODE := $(NODE)
export STRAKE_IMAGES_ENV ?= $(IMAGES_DIR)/images.env
# The cargo profile of the images and the benchmarks: release, or quick
# (no LTO; Cargo.toml) for what make test and make bench-short build.
export STRAKE_BUILD_PROFILE ?= release

.PHONY: help
help:
	@sed -n 's/^#   //p' Makefile

.PHONY: deps
deps: ## Install what the tests need (idempotent).
	@e2e/deps.sh

.PHONY: build
build:
	cargo build --workspace --bins

.PHONY: lint
lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo run -q -p strake-crds --bin crdgen -- --check
	HELM="$$(e2e/cluster/build.sh | tail -n1)/helm" charts/strake/test.sh
	deploy/argocd/test.sh

.PHONY: images
images: deps
	images/build.sh "$(IMAGES_DIR)"

# Writes every image twice and compares the digests; checks the Dockerfiles.
.PHONY: images-check
images-check: deps
	images/build.sh --check "$(IMAGES_DIR)"

.PHONY: unit
unit:
	cargo test --workspace --exclude strake-e2e

.PHONY: sdk
sdk: deps build
	STRAKE_PROXY_BIN="$(CARGO_TARGET_DIR)/debug/strake-proxy" \
	STRAKE_MOCK_BIN="$(CARGO_TARGET_DIR)/debug/strake-mock-upstream" \
	"$(STRAKE_CACHE)/venv/bin/python" -m pytest -q proxy/tests/sdk

.PHONY: e2e
e2e: deps build $(if $(filter 1,$(NODE)),images) dev-up
	e2e/run-e2e.sh "$(DEV_DIR)"

# The chart's pods on a kubelet node: its own stack in target/node, torn
# down afterwards (the host restored and verified) whether it passed or not.
# Its images carry the build the benchmarks use (images/release.sh), so in
# CI make bench-short finds it built (e2e/README.md, "What the node adds to
# CI").
# It first stops the process-only stack (its data stays in target/dev): the
# two control planes share the etcd ports on loopback.
.PHONY: e2e-node
e2e-node: deps build images-check
	$(MAKE) NODE=0 dev-down
	$(MAKE) NODE=1 dev-up
	status=0; $(MAKE) NODE=1 e2e-run || status=$$?; $(MAKE) NODE=1 dev-down || status=1; exit $$status

.PHONY: e2e-run
e2e-run:
	e2e/run-e2e.sh "$(DEV_DIR)"

.PHONY: test
test: lint unit sdk e2e e2e-node

# Their images and binaries only need to behave like the release build's, and
# the quick profile builds in a fraction of the time on a new clone.
test bench-short: export STRAKE_BUILD_PROFILE := quick

.PHONY: dev-up
dev-up: deps build $(if $(filter 1,$(NODE)),images)
	e2e/dev/up.sh "$(DEV_DIR)"

.PHONY: dev-down
dev-down:
	e2e/dev/down.sh "$(DEV_DIR)"

.PHONY: demo
demo: dev-up
	e2e/demo.sh "$(DEV_DIR)"

.PHONY: crds
crds:
	cargo run -q -p strake-crds --bin crdgen

.PHONY: bench
bench: deps
	bench/run.sh

.PHONY: bench-short
bench-short: deps
	bench/run.sh --short
