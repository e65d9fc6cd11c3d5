# meshwatch: the two commands a fresh machine needs.
#   make demo   installs what is missing, builds, analyzes a bundled capture, prints the verdicts
#   make test   installs what is missing, then lint + every test (unit, property, corpus, pcaps,
#               CLI, Kubernetes replay) + a fresh run of the capture generator + the live agent
#               end-to-end test with Prometheus (the last two as root) + a fuzz smoke run
#               + the monitoring mixin (gen-check, lint, promtool tests), deploy/ rendered and
#               validated, the OCI image built and run, the dashboards' live test (root)

CARGO ?= cargo
DEMO_PCAP ?= pcaps/istio-migration-before.pcap
DEMO_WORKLOADS ?= pcaps/istio-migration-before.workloads.yaml

.PHONY: demo test deps build lint deny unit generator e2e fuzz fuzz-long bench bench-live pcaps
.PHONY: monitoring monitoring-e2e deploy-check image image-test nat-e2e e2e-cluster auth-e2e dashboard-demo dashboard-browser

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked

demo: build
	./target/release/meshwatch analyze --workloads $(DEMO_WORKLOADS) $(DEMO_PCAP)

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Licences, bans and sources of the dependency tree (deny.toml). Advisories need the RustSec
# database, which the build machines cannot fetch.
deny: deps
	@command -v cargo-deny >/dev/null 2>&1 || $(CARGO) install cargo-deny --locked
	$(CARGO) deny --log-level error check licenses bans sources

unit: deps
	$(CARGO) test --workspace --locked

generator: deps
	./scripts/check-generator.sh

e2e: deps
	./scripts/e2e-agent.sh

# Live: the nat scenario's routed node (kube-proxy DNAT, NodePort SNAT): one count per connection (root).
nat-e2e: deps
	./scripts/e2e-nat.sh

# Live: two nodes over VXLAN, an agent each, Prometheus; verdicts/check --prometheus vs analyze (root).
e2e-cluster: deps
	./scripts/e2e-cluster.sh

# Who may read the agent: HTTPS, tokens reviewed by a local API server, Prometheus with a token (root, loopback).
auth-e2e: deps
	./scripts/e2e-auth.sh

# The dashboard on a report of a bundled capture: open http://127.0.0.1:9480/ (Ctrl-C stops it).
dashboard-demo: deps
	$(CARGO) build --release --locked -p meshwatch-agent -p meshwatch-dashboard
	./target/release/meshwatch analyze --format json --workloads $(DEMO_WORKLOADS) $(DEMO_PCAP) > target/demo-report.json
	@echo "dashboard: http://127.0.0.1:9480/"
	./target/release/meshwatch-dashboard --report target/demo-report.json --listen 127.0.0.1:9480

# The dashboard in headless Chromium: every page, clicks, copy buttons, live refresh, hostile names.
dashboard-browser: deps
	./scripts/browser-dashboard.sh

# The monitoring mixin (grafana/): gen-check, lint, promtool check + unit tests of the rules.
monitoring: deps
	./scripts/check-monitoring.sh

# Live: real traffic, two agents, Prometheus with the rules, every dashboard query (root).
monitoring-e2e: deps
	./scripts/e2e-monitoring.sh

# deploy/ rendered with kubectl kustomize and validated against the Kubernetes schemas.
deploy-check: deps
	./scripts/check-deploy.sh

# The OCI image (buildah, vfs, FROM scratch: no daemon, no base image) in target/image/oci.
image: deps
	./scripts/image.sh build

# The image's binary from its unpacked layers: --version, analyze, a live capture as nobody (root).
image-test: image
	./scripts/image.sh test

# Smoke run of every fuzz target (15 s each); `make fuzz-long` for the documented longer run.
fuzz: deps
	./scripts/fuzz.sh 15

fuzz-long: deps
	./scripts/fuzz.sh 600

test: lint deny unit generator e2e nat-e2e e2e-cluster auth-e2e fuzz monitoring deploy-check image-test monitoring-e2e dashboard-browser

# Benchmarks (see BENCHMARKS.md): offline side by side with tcpdump, nDPI, tshark; criterion
# micro-benchmarks; the agent's capture thread without libpcap (agent_path); the live replay
# (root); the agent's CPU and RSS on a node (root).
bench: deps
	bench/run.sh
	$(CARGO) bench -p meshwatch-agent --bench hot_path
	$(CARGO) bench -p meshwatch-agent --bench agent_path
	bench/live.sh bench/data/mixed-20k.pcap
	$(MAKE) bench-live

# What the agent costs on a node against tcpdump, at fixed replay rates (root; see
# BENCHMARKS.md, "Agent on a node"; RATES, TOOLS, SECONDS_PER_RATE and captures as arguments).
bench-live: build
	bench/live_cpu.sh

# Regenerate the committed captures (root): then review and commit pcaps/.
pcaps: deps
	python3 pcaps/generate.py
