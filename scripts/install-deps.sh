#!/usr/bin/env bash
# Install what building and testing meshwatch needs, if missing (Debian/Ubuntu, apt).
#   build: a Rust toolchain (cargo), gcc; later the live agent links libpcap.
#   tests: tcpdump, openssl, gnutls-cli, curl, ethtool, iproute2, mergecap (pcaps/generate.py),
#          prometheus (agent end-to-end test).
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
have_cmd python3 || need+=(python3)
have_cmd cc || need+=(gcc)
have_cmd setcap || need+=(libcap2-bin)          # the agent e2e test runs it with file capabilities
have_cmd prometheus || need+=(prometheus)      # the agent's end-to-end test scrapes with it
have_cmd tcpreplay || need+=(tcpreplay)        # live capture benchmark
have_cmd ndpiReader || need+=(libndpi-bin)     # benchmark peer
[ -x /usr/bin/time ] || need+=(time)            # benchmark peak RSS

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

if ! have_cmd cargo; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
