# chatd — the common tasks. Every target is a thin wrapper over cargo; see README.md.

CARGO ?= cargo
FUZZ_SECONDS ?= 60
# Where `make run` keeps its data; created on first run.
DATA_DIR ?= chatd-data
# The second platform chatd supports; `make lint` type-checks and lints for it too.
FREEBSD_TARGET ?= x86_64-unknown-freebsd

# Build in release mode and run the daemon on its defaults (127.0.0.1:7667, ./chatd-data).
run:
	$(CARGO) run --release --bin chatd -- serve --data-dir $(DATA_DIR)

# Build everything in release mode.
build:
	$(CARGO) build --release --all-targets

# Run every test: unit, property, and integration tests against the real daemon.
test:
	$(CARGO) test --all-targets
	@if command -v node >/dev/null; then node --test web/test/; \
	else echo "!!! SKIPPED the web client's JS tests: node is not installed (apt-get install nodejs)"; fi

# Benchmarks: the durable matrix (fsync policy x senders, 3 runs each), then the standard set
# (fanout at full speed and with a window of 16, rooms, paced latency with chatd's fsync on and
# off, idle, connect against chatd, redis-server and nats-server; 3 interleaved rounds, 5 for
# the latency rows; servers pinned to CPU 0, the bench to CPU 1). About 13 minutes. Needs
# redis-server and nats-server installed. Writes docs/benchmarks.md and docs/plots/*.svg.
# Before it: the durable matrix with protocol 1 and 2 SENDs taking turns (the cost of the
# exactly-once check), the presence fanout (WATCH on and off) and presence across two
# jetstream nodes on one nats-server (the delay of a PRESENCE from node to node), all printed
# only.
bench:
	$(CARGO) build --release --bins
	$(CARGO) run --release --bin chat-bench -- durable-matrix --spawn --repeat 3 --protocols 1,2
	./target/release/chat-bench presence --runs 3
	./target/release/chat-bench presence --nodes 2 --runs 3
	./target/release/chat-bench standard --runs 3 --latency-runs 5 --secs 5 \
		--server-cpu 0 --cpu 1 --out docs/benchmarks.md --plots docs/plots

# The cluster scenarios (docs/cluster.md, docs/benchmarks.md "Cluster"): three nats-server and
# two chatd nodes (--store jetstream) on this machine; 3 runs of throughput and of cross-node
# latency, then one of 20 NATS-server kills under load. About 10 minutes. Prints one JSON line
# per run. NATS_SERVER=PATH runs another nats-server than Debian's.
NATS_SERVER ?= /usr/sbin/nats-server
bench-cluster:
	$(CARGO) build --release --bins
	for mode in throughput throughput throughput latency latency latency kills; do \
		./target/release/chat-bench cluster --spawn --mode $$mode \
			--nats-server $(NATS_SERVER) || exit 1; \
	done

# The concurrency lab (docs/lab.md): each server model at N = 1, 2, 4 ... 4096 connections of
# 1 Mbit/s each, each connection in a room of its own and then all in one room, 60 s per run,
# 3 runs each, the server pinned to CPU 0 (the paper's one vCPU) and the bench to CPU 1, the
# server's whole process tree sampled from /proc every 500 ms. Hours when every model survives
# every N. Keeps the JSON lines in target/lab.jsonl, then writes docs/lab.md's results section
# and the plots in docs/lab/ from them (`chat-bench lab-report`), even when a run did not
# balance; the exit status is the lab's. LAB_FLAGS adds to or overrides the flags
# (LAB_FLAGS="--secs 10 --runs 1").
LAB_FLAGS ?=
LAB_CMD = chat-bench lab --models reactor,threads,fork \
	--conns 1,2,4,8,16,32,64,128,256,512,1024,2048,4096 --mbps 1 --secs 60 --sample-ms 500 \
	--workload own,shared --runs 3 --server-cpu 0 --cpu 1 $(LAB_FLAGS)
lab:
	$(CARGO) build --release --bins
	./target/release/$(LAB_CMD) > target/lab.jsonl; status=$$?; \
	./target/release/chat-bench lab-report --input target/lab.jsonl --doc docs/lab.md \
		--plots docs/lab --command "$(LAB_CMD)" && exit $$status

# Formatting and lints, as CI checks them: for this machine, and cross-checked for FreeBSD
# (`rustup target add x86_64-unknown-freebsd` once) so FreeBSD never stops compiling unnoticed.
# Clippy type-checks everything `cargo check` does (and fails where it fails), so a separate
# `cargo check --target $(FREEBSD_TARGET)` would only repeat it.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --target $(FREEBSD_TARGET) -- -D warnings

# Run each fuzz target for FUZZ_SECONDS (needs `cargo install cargo-fuzz --locked`), under
# AddressSanitizer unless FUZZ_FLAGS says otherwise.
FUZZ_FLAGS ?=
FUZZ_SEED ?= 0
fuzz:
	cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
		mkdir -p corpus/$$t; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -seed=$(FUZZ_SEED) -dict=dict/protocol.dict -print_final_stats=1 || exit 1; \
	done

# A short run of every fuzz target (~10 s each, plus the fuzz build), as CI does, two targets
# at a time (CI has two cores). Without AddressSanitizer: the code under fuzz has no `unsafe`,
# a panic or a failed check is what a smoke run looks for, and the uninstrumented build takes
# a third less time. A fixed seed makes smoke runs try the same inputs in the same order, so a
# CI failure reproduces here; `make fuzz` keeps the sanitizer and a fresh seed each run, to
# find what is new. A failing target names itself in its artifact path.
fuzz-smoke:
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -s none
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list | xargs -P 2 -I {} sh -c '\
		mkdir -p corpus/{} && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -s none {} corpus/{} seeds/{} -- \
			-max_total_time=10 -seed=1 -dict=dict/protocol.dict -print_final_stats=1'

# Remove build output (not the data directory).
clean:
	$(CARGO) clean
	rm -rf fuzz/target

.PHONY: run build test bench bench-cluster lab lint fuzz fuzz-smoke clean
