# Porin: the two commands a new user needs are `sudo make demo` and `sudo make test`.
# Both install what they need first (`make deps`, idempotent).
# gcc + libc6-dev: aws-lc-sys (the AEAD of Porin's WireGuard device) builds its C with cc.

SHELL := /bin/bash
CARGO ?= cargo
PORIN := target/release/porin
DEBIAN_PACKAGES := clang-19 llvm-19 lld-19 bpftool iproute2 iptables nftables curl \
	python3 protobuf-compiler dnsmasq-base iperf3 socat procps netcat-openbsd bind9-dnsutils iputils-ping libelf-dev prometheus \
	wireguard-go wireguard-tools tcpdump gcc libc6-dev openssl wrk dnsperf \
	containerd runc busybox-static containernetworking-plugins chromium

.PHONY: deps build demo test lint bench clean-sandbox

## deps: install Debian packages and mount bpffs (idempotent, fast when done)
deps:
	@scripts/deps.sh $(DEBIAN_PACKAGES)

## build: the porin binary (agent + CLI) in release mode
build: deps
	$(CARGO) build --release --locked --bin porin

## demo: a two-node sandbox cluster with the quickstart workloads, real traffic and flows
demo: build
	@scripts/demo.sh $(PORIN) examples/quickstart $(if $(KEEP),--keep,)

## test: the whole test suite (unit, BPF_PROG_TEST_RUN, namespace tests), as CI runs it
test: deps
	@scripts/test.sh

## lint: formatting and clippy, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## bench: e.g. `make bench NAME=datapath ARGS=--quick`
bench: build
	scripts/bench $(NAME) $(ARGS)

## clean-sandbox: remove everything a sandbox made, even after a crash
clean-sandbox:
	-$(PORIN) sandbox down
