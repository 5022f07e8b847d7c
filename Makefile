# Strake's entry points. Everything a newcomer or CI runs goes through here.
#
#   make demo       the whole story on a local control plane
#   make test       every test: unit, integration, SDK and end-to-end
#   make dev-up     a local stack to drive with kubectl and curl (make dev-down stops it)
#   make bench      the benchmark suite, written to docs/benchmarks.md

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export STRAKE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/strake
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TERM_COLOR ?= never
DEV_DIR := $(CURDIR)/target/dev

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

.PHONY: unit
unit:
	cargo test --workspace --exclude strake-e2e

.PHONY: sdk
sdk: deps build
	STRAKE_PROXY_BIN="$(CARGO_TARGET_DIR)/debug/strake-proxy" \
	STRAKE_MOCK_BIN="$(CARGO_TARGET_DIR)/debug/strake-mock-upstream" \
	"$(STRAKE_CACHE)/venv/bin/python" -m pytest -q proxy/tests/sdk

.PHONY: e2e
e2e: deps build dev-up
	e2e/run-e2e.sh

.PHONY: test
test: lint unit sdk e2e

.PHONY: dev-up
dev-up: deps build
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
