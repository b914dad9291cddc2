# Everything a fresh Debian 12 machine with Node 20 needs, run as root: `make run`, `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Debian packages the build and the tests use; installed when missing.
APT_PACKAGES := python3 make g++ iptables iproute2
NPM_STAMP := node_modules/.package-lock.json
TEST_REPORT := dist/test-report.json

.PHONY: all deps apt-deps build test run bench clean

all: build

deps: apt-deps $(NPM_STAMP)

apt-deps:
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
	  || { echo "btwall needs Node.js 20 or later (found $$(node --version 2>/dev/null || echo none))" >&2; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund

# From scratch each time, so a deleted source file cannot live on in dist/.
build: deps
	rm -rf dist
	npx tsc -p tsconfig.json

# vitest's own summary is not a line CI reads, so the closing "N passed, N failed" comes from its JSON report.
test: build
	npx tsc -p tsconfig.test.json
	@status=0; npx vitest run --reporter=default --reporter=json --outputFile.json=$(TEST_REPORT) || status=$$?; \
	node -e 'const r = require("./$(TEST_REPORT)"); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'; \
	exit $$status

run: build
	bin/btwall help
	@echo
	@echo "btwall run (the inline daemon) is not built yet; btwall scan works today, e.g.:"
	@echo "  bin/btwall scan --summary ../shared/corpus/ndpi/bittorrent.pcap"

bench: build
	npm run bench

clean:
	rm -rf dist
