# Everything a fresh Debian 12 machine with Node 20 needs, run as root: `make run`, `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Debian packages the build and the tests use (strace: the queue tests' fault injection; logrotate: the
# rotation test runs the shipped snippet; prometheus: its promtool lints the metrics exposition;
# crowdsec: the Local API and cscli the fleet tests and bench:fleet run; conntrack: CUT_ESTABLISHED
# deletes a cut connection's entry; python3-libtorrent: the real BitTorrent client of the cut and
# throttle lab tests; curl: their HTTP download; systemd-container: systemd-nspawn boots the unit in
# a test); installed when missing. The end-to-end lab (test/lab/e2e-lab.sh, test/e2e-lab.test.ts,
# btwall demo) runs the rest: real clients (transmission-cli, aria2, qbittorrent-nox, rtorrent), the tracker and torrents
# (opentracker, mktorrent), captures (tcpdump), and the ordinary servers and their clients (nginx-light,
# dnsmasq-base, openssh-server, iperf3, coturn, dante-server, bind9-dnsutils for dig, iputils-ping).
APT_PACKAGES := python3 make gcc g++ pkg-config libnetfilter-queue-dev libmnl-dev iptables iproute2 \
  clang llvm libbpf-dev libelf-dev zlib1g-dev strace logrotate prometheus crowdsec conntrack python3-libtorrent curl systemd-container \
  transmission-cli aria2 qbittorrent-nox rtorrent opentracker mktorrent tcpdump nginx-light dnsmasq-base openssh-server openssh-client \
  iperf3 coturn dante-server bind9-dnsutils iputils-ping
# Services those packages would start in the machine's own namespace (the lab runs its own copies
# inside its namespaces): a policy-rc.d keeps dpkg from starting them while they are installed,
# and, under systemd, the ones just installed are not enabled either.
LAB_SERVICES := nginx-light:nginx openssh-server:ssh coturn:coturn dante-server:danted opentracker:opentracker
# crowdsec's postinst registers with CrowdSec's online API unless this file exists and is not empty;
# without internet that fails and leaves the package unconfigured. A comment line keeps it offline.
CROWDSEC_ONLINE_CREDENTIALS := /etc/crowdsec/online_api_credentials.yaml
NPM_STAMP := node_modules/.package-lock.json
TEST_REPORT := dist/test-report.json

.PHONY: all deps apt-deps build test run demo captures bench clean install uninstall

# `make install`: the program under $(LIBDIR) (its dist/, native and BPF objects and production
# node_modules, in the layout it finds them by), `btwall` in $(BINDIR), the unit, the logrotate
# snippet and, unless one is there, the commented $(ENV_FILE). DESTDIR stages it elsewhere.
PREFIX := /usr/local
BINDIR := $(PREFIX)/bin
LIBDIR := $(PREFIX)/lib/btwall
# Where systemd looks for locally installed units; /etc/systemd/system stays the operator's (overrides, drop-ins).
UNITDIR := $(PREFIX)/lib/systemd/system
ENV_FILE := /etc/default/btwall
LOGROTATE_FILE := /etc/logrotate.d/btwall
DESTDIR :=

all: build

deps: apt-deps $(NPM_STAMP)

apt-deps:
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
	  || { echo "btwall needs Node.js 20 or later (found $$(node --version 2>/dev/null || echo none))" >&2; exit 1; }
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || printf '%s ' $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [[ " $$missing " == *" crowdsec "* && ! -s $(CROWDSEC_ONLINE_CREDENTIALS) ]]; then \
	    mkdir -p $(dir $(CROWDSEC_ONLINE_CREDENTIALS)); \
	    echo '# no Central API: btwall uses only the Local API' > $(CROWDSEC_ONLINE_CREDENTIALS); \
	  fi; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	  dpkg --configure -a; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  if [ -d /run/systemd/system ]; then for ps in $(LAB_SERVICES); do \
	    if [[ " $$missing " == *" $${ps%%:*} "* ]]; then systemctl disable --now "$${ps#*:}" 2>/dev/null || true; fi; done; fi; \
	fi

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund

NODE_INCLUDE = $(dir $(realpath $(shell command -v node)))../include/node
NAPI_INCLUDE = $(shell node -p "require('node-addon-api').include_dir")
NATIVE := native/build/btwall.node native/build/btwall-queue bpf/build/btwall.bpf.o

# TypeScript from scratch each time, so a deleted source file cannot live on in dist/.
build: deps $(NATIVE)
	rm -rf dist
	npx tsc -p tsconfig.json

native/build/btwall.node: native/addon.cc native/xdp.cc native/raw.cc native/notify.cc native/queue-shm.h native/xdp.h native/raw.h native/notify.h native/errors.h bpf/btwall.h $(NPM_STAMP)
	@mkdir -p $(@D)
	g++ -O2 -Wall -Wextra -std=c++17 -fPIC -shared -DNAPI_VERSION=8 -DNAPI_DISABLE_CPP_EXCEPTIONS \
	  -I$(NODE_INCLUDE) -I$(NAPI_INCLUDE) -o $@ $(filter %.cc,$^) -lbpf -lelf -lz

# The XDP ban program; -g for the BTF that libbpf's map definitions need.
bpf/build/btwall.bpf.o: bpf/btwall.bpf.c bpf/btwall.h
	@mkdir -p $(@D)
	clang -O2 -g -Wall -Wextra -Wshadow -target bpf -I/usr/include/$$(uname -m)-linux-gnu -c -o $@ $<

native/build/btwall-queue: native/btwall-queue.c native/queue-shm.h
	@mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -o $@ $< -lnetfilter_queue -lmnl

# vitest's own summary is not a line CI reads, so the closing "N passed, N failed" comes from its JSON report.
test: build
	npx tsc -p tsconfig.test.json
	@status=0; npx vitest run --reporter=default --reporter=json --outputFile.json=$(TEST_REPORT) || status=$$?; \
	node -e 'const r = require("./$(TEST_REPORT)"); console.log(`$${r.numPassedTests} passed, $${r.numFailedTests} failed, $${r.numPendingTests + r.numTodoTests} skipped`)'; \
	exit $$status

# The daemon in the foreground with its defaults (FORWARD chain, queue 0); Ctrl-C stops it and removes its rules.
# Without INTERFACE there is no XDP ban program, and the daemon must be told so: XDP_MODE=off.
run: build
	if [ -z "$${INTERFACE:-}" ]; then export XDP_MODE="$${XDP_MODE:-off}"; fi; bin/btwall run

# The newcomer's first minute: a real BitTorrent download blocked and an HTTPS download beside it, in a lab of namespaces.
demo: build
	bin/btwall demo

# Each end-to-end scenario's traffic at the gateway (its link to the scenario's LAN host), under
# ACTION=monitor so that whole downloads are recorded, for `btwall scan` to be scored on:
# captures/e2e/NAME.pcap (git-ignored), with the run's detection log and result.json beside them.
CAPTURES_DIR := captures/e2e
captures: build
	bash test/lab/e2e-lab.sh --out $(CAPTURES_DIR) --action monitor --window 90 --capture

# Installs what `make build` made (and builds it if it was not).
# The program is staged beside its place and renamed into it: a running daemon that restarts a
# worker or a broker during the install finds the old files or the new ones, never none.
install: $(if $(wildcard dist/cli/main.js),,build) $(NATIVE)
	rm -rf $(DESTDIR)$(LIBDIR).new $(DESTDIR)$(LIBDIR).old
	install -d -m 0755 $(DESTDIR)$(LIBDIR).new/native/build $(DESTDIR)$(LIBDIR).new/bpf/build $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(dir $(ENV_FILE)) $(DESTDIR)$(dir $(LOGROTATE_FILE))
	cp -r bin dist package.json package-lock.json README.md $(DESTDIR)$(LIBDIR).new/
	rm -f $(DESTDIR)$(LIBDIR).new/$(TEST_REPORT)
	install -m 0755 native/build/btwall.node native/build/btwall-queue $(DESTDIR)$(LIBDIR).new/native/build/
	install -m 0644 bpf/build/btwall.bpf.o $(DESTDIR)$(LIBDIR).new/bpf/build/
	npm ci --prefix $(DESTDIR)$(LIBDIR).new --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error
	if [ -e $(DESTDIR)$(LIBDIR) ]; then mv $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LIBDIR).old; fi
	mv $(DESTDIR)$(LIBDIR).new $(DESTDIR)$(LIBDIR)
	rm -rf $(DESTDIR)$(LIBDIR).old
	ln -sfn $(LIBDIR)/bin/btwall $(DESTDIR)$(BINDIR)/btwall
	sed 's|/usr/local/bin/btwall|$(BINDIR)/btwall|g; s|/usr/local/lib/btwall|$(LIBDIR)|g; s|/etc/default/btwall|$(ENV_FILE)|g' \
	  systemd/btwall.service > $(DESTDIR)$(UNITDIR)/btwall.service
	install -m 0644 logrotate/btwall $(DESTDIR)$(LOGROTATE_FILE)
	@# The operator's file is theirs: an existing one is kept, the example shipped beside it.
	if [ -e $(DESTDIR)$(ENV_FILE) ]; then install -m 0600 systemd/btwall.env $(DESTDIR)$(ENV_FILE).example; \
	else install -m 0600 systemd/btwall.env $(DESTDIR)$(ENV_FILE); fi
	@echo "installed; now: systemctl daemon-reload, set INTERFACE in $(ENV_FILE), systemctl enable --now btwall"

# Removes what install put in place; an $(ENV_FILE) the operator changed stays (and is named).
# On a running systemd (and no DESTDIR) the service is stopped and disabled first.
uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now btwall.service 2>/dev/null || true; fi
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(BINDIR)/btwall $(DESTDIR)$(UNITDIR)/btwall.service $(DESTDIR)$(LOGROTATE_FILE) $(DESTDIR)$(ENV_FILE).example
	if cmp -s systemd/btwall.env $(DESTDIR)$(ENV_FILE); then rm -f $(DESTDIR)$(ENV_FILE); \
	elif [ -e $(DESTDIR)$(ENV_FILE) ]; then echo "kept $(DESTDIR)$(ENV_FILE): it holds your settings"; fi

bench: build
	npm run bench

clean:
	rm -rf dist native/build bpf/build
