#!/usr/bin/env bash
# Install what building and testing meshwatch needs, if missing (Debian/Ubuntu, apt).
#   build: a Rust toolchain (cargo), gcc; later the live agent links libpcap.
#   tests: tcpdump, openssl, gnutls-cli, curl, ethtool, iproute2, mergecap, gzip, zstd
#          (pcaps/generate.py),
#          prometheus (agent end-to-end test, promtool for the rules), kubectl (kustomize),
#          buildah + skopeo (the image), grafana-foundation-sdk and kubernetes-validate (PyPI),
#          chromium + websocket-client (PyPI) (the dashboard in a real browser).
#   benchmarks and corpus regeneration: tshark.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

have_pkg libpcap-dev || need+=(libpcap-dev)
have_cmd tshark || need+=(tshark)
have_cmd mergecap || need+=(wireshark-common)
have_cmd tcpdump || need+=(tcpdump)
have_cmd gnutls-cli || need+=(gnutls-bin)
have_cmd openssl || need+=(openssl)
have_cmd curl || need+=(curl)
have_cmd ethtool || need+=(ethtool)
have_cmd ip || need+=(iproute2)
have_cmd iptables || need+=(iptables)
have_cmd gzip || need+=(gzip)                  # pcaps/multi: compressed captures
have_cmd zstd || need+=(zstd)
have_cmd python3 || need+=(python3)
have_cmd cc || need+=(gcc)
have_cmd setcap || need+=(libcap2-bin)          # the agent e2e test runs it with file capabilities
have_cmd prometheus || need+=(prometheus)      # the agent's end-to-end test scrapes with it
have_cmd tcpreplay || need+=(tcpreplay)        # live capture benchmark
have_cmd ndpiReader || need+=(libndpi-bin)     # benchmark peer
[ -x /usr/bin/time ] || need+=(time)            # benchmark peak RSS
have_cmd promtool || need+=(prometheus)        # the rules: promtool check/test rules (make monitoring)
have_cmd kubectl || need+=(kubernetes-client)  # kubectl kustomize deploy/ (make deploy-check)
have_cmd buildah || need+=(buildah)            # make image: OCI image without a daemon
have_cmd skopeo || need+=(skopeo)
have_cmd strip || need+=(binutils)
have_cmd chromium || need+=(chromium)          # the dashboard in a real browser (scripts/browser-dashboard.sh)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        if have_cmd sudo; then sudo="sudo"; else
            echo "missing ${need[*]} and not root: install them with apt-get" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, non-interactively
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python packages (PyPI): the dashboards' generator (pinned: older builds of it carry epoch
# versions such as 1769699998!10.1.0 that an unpinned install prefers) and the manifests' validator.
pip_need=()
have_py() { python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('$1').lstrip('v') != '$2')" 2>/dev/null; }
have_py grafana-foundation-sdk 0.0.21 || pip_need+=("grafana-foundation-sdk==0.0.21")
have_py kubernetes-validate 1.37.0 || pip_need+=("kubernetes-validate==1.37.0")
python3 -c "import yaml" 2>/dev/null || pip_need+=(PyYAML)
python3 -c "import websocket" 2>/dev/null || pip_need+=(websocket-client)   # DevTools protocol (browser test)
if [ ${#pip_need[@]} -gt 0 ]; then
    echo "installing (pip): ${pip_need[*]}"
    # Debian's own python3 is externally managed (PEP 668): then into it, on purpose
    python3 -m pip install -q "${pip_need[@]}" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "${pip_need[@]}"
fi

if ! have_cmd cargo; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
