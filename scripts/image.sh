#!/usr/bin/env bash
# Build meshwatch's OCI image without a container daemon and without pulling a base image, and
# test it from its unpacked root filesystem.
#
#   scripts/image.sh stage   release binary + the shared libraries ldd names + the loader, the
#                            file capability cap_net_raw+ep, passwd/group, the demo capture
#                            -> target/image/context/ (Dockerfile + rootfs/)
#   scripts/image.sh build   stage, then `buildah bud` (vfs storage under target/image/, FROM
#                            scratch, timestamps 0: the same binary gives the same digest)
#                            tagged ghcr.io/meshwatch/meshwatch:VERSION, and an OCI layout of it
#                            in target/image/oci
#   scripts/image.sh test    unpack the OCI layout's layers into a directory (xattrs kept), then
#                            check the image config (user 65534, entrypoint), the capability in
#                            the layer, `--version` and `analyze` on the bundled capture in a
#                            chroot, and a live capture as uid 65534 holding only CAP_NET_RAW
#                            (and its refusal under no_new_privs: why the DaemonSet allows
#                            privilege escalation). Root (chroot, namespaces); skipped otherwise.
# Prints 'image: N passed, M failed' for the test.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE=${IMAGE:-ghcr.io/meshwatch/meshwatch:$VERSION}
OUT=target/image
CONTEXT=$OUT/context
OCI=$OUT/oci
BUILDAH=(buildah --storage-driver vfs --root "$PWD/$OUT/storage" --runroot "$PWD/$OUT/run")

stage() {
    cargo build --release --locked -q -p meshwatch-agent
    local bin=target/release/meshwatch rootfs=$CONTEXT/rootfs
    rm -rf "$CONTEXT"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/usr/share/meshwatch"
    cp Dockerfile "$CONTEXT/Dockerfile"
    strip -o "$rootfs/usr/local/bin/meshwatch" "$bin"
    # every shared library the binary needs (transitively, as ldd resolves them) and the loader
    # (the binary's PT_INTERP), each at the path ldd names: without an ld.so.cache the loader
    # finds them in its default directories
    local libs
    libs=$(ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]*ld-linux/{print $1}' | sort -u)
    echo "$libs" | grep -q ld-linux || { echo "image: ldd names no loader for $bin" >&2; exit 1; }
    for lib in $libs; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
    printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    cp pcaps/istio-migration-before.pcap pcaps/istio-migration-before.workloads.yaml "$rootfs/usr/share/meshwatch/"
    chmod 0755 "$rootfs/usr/local/bin/meshwatch"
    setcap cap_net_raw+ep "$rootfs/usr/local/bin/meshwatch"
    echo "image: staged $(du -sh "$rootfs" | cut -f1) in $rootfs: $(echo "$libs" | tr '\n' ' ')"
}

build() {
    stage
    "${BUILDAH[@]}" bud --quiet --layers=false --timestamp 0 -f "$CONTEXT/Dockerfile" \
        --label "org.opencontainers.image.version=$VERSION" -t "$IMAGE" "$CONTEXT" >/dev/null
    # the image this replaced stays in the storage untagged: drop it
    "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
    rm -rf "$OCI"
    "${BUILDAH[@]}" push --quiet "$IMAGE" "oci:$PWD/$OCI:$VERSION" >/dev/null
    echo "image: built $IMAGE ($(du -sh "$OCI" | cut -f1) as an OCI layout in $OCI)"
    echo "image: push it with: skopeo copy oci:$OCI:$VERSION docker://REGISTRY/meshwatch:$VERSION"
}

passed=0
failed=0
check() { # name, then a command
    local name=$1
    shift
    if "$@"; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

test_image() {
    if [ "$(id -u)" != 0 ]; then
        echo "image-test: skipped (needs root for chroot and a network namespace)"
        return 0
    fi
    [ -f "$OCI/index.json" ] || { echo "image-test: no image in $OCI: run scripts/image.sh build" >&2; exit 1; }
    # globals: the EXIT trap runs after this function's locals are gone
    tmp=$(mktemp -d)
    ns=mw-image
    agent=""
    local rootfs=$tmp/rootfs
    cleanup() {
        if [ -n "${agent:-}" ]; then kill "$agent" 2>/dev/null || true; fi
        ip netns del "${ns:-mw-image}" 2>/dev/null || true
        rm -rf "${tmp:-/nonexistent}"
    }
    trap cleanup EXIT
    # unpack the layers as a runtime would: manifest -> layers, in order, xattrs kept
    python3 - "$OCI" "$VERSION" "$rootfs" "$tmp/config.json" <<'EOF'
import json, os, subprocess, sys
oci, tag, rootfs, config_out = sys.argv[1:]
index = json.load(open(os.path.join(oci, "index.json")))
desc = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
blob = lambda d: os.path.join(oci, "blobs", *d.split(":"))
manifest = json.load(open(blob(desc["digest"])))
os.makedirs(rootfs)
for layer in manifest["layers"]:
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xzf", blob(layer["digest"]), "-C", rootfs], check=True)
with open(config_out, "w") as f:
    json.dump(json.load(open(blob(manifest["config"]["digest"]))), f)
EOF
    local cfg=$tmp/config.json
    check "the image runs as 65534:65534" \
        python3 -c "import json,sys; sys.exit(json.load(open('$cfg'))['config'].get('User') != '65534:65534')"
    check "its entrypoint is the agent binary" \
        python3 -c "import json,sys; sys.exit(json.load(open('$cfg'))['config'].get('Entrypoint') != ['/usr/local/bin/meshwatch'])"
    check "the layer carries cap_net_raw+ep on the binary" \
        bash -c "getcap '$rootfs/usr/local/bin/meshwatch' | grep -q 'cap_net_raw=ep'"
    check "nothing but the binary, its libraries, the loader, passwd/group and the demo capture" \
        bash -c "[ \$(find '$rootfs' -type f | wc -l) -le 20 ]"
    local version
    version=$(chroot "$rootfs" /usr/local/bin/meshwatch --version 2>&1 || true)
    check "chroot: meshwatch --version prints '$version'" [ "$version" = "meshwatch $VERSION" ]
    local report=$tmp/report.json
    chroot --userspec=65534:65534 "$rootfs" /usr/local/bin/meshwatch analyze --format json \
        --workloads /usr/share/meshwatch/istio-migration-before.workloads.yaml \
        /usr/share/meshwatch/istio-migration-before.pcap > "$report" 2>"$tmp/analyze.err" || true
    check "chroot, as nobody: analyze the bundled capture: foo/httpbin blocked, bar/httpbin ready" \
        python3 - "$report" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"no JSON report: {e}")
v = {(x.get("namespace"), x.get("workload")): x["verdict"] for x in r["verdicts"]}
sys.exit(not (v.get(("foo", "httpbin")) == "blocked" and v.get(("bar", "httpbin")) == "ready" and r["summary"]["flows"] > 0))
EOF
    # a live capture from the image's root filesystem, as uid 65534 with only the file capability
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" chroot --userspec=65534:65534 "$rootfs" /usr/local/bin/meshwatch agent \
        --interface lo --listen 127.0.0.1:19483 >"$tmp/agent.log" 2>&1 &
    agent=$!
    local ready=no
    for _ in $(seq 1 50); do
        if [ "$(ip netns exec "$ns" curl -s -m 1 127.0.0.1:19483/readyz)" = "ready" ]; then ready=yes; break; fi
        sleep 0.2
    done
    check "chroot, as nobody: the agent captures (ready)" [ "$ready" = yes ]
    local pid
    pid=$(pgrep -n -P "$agent" 2>/dev/null || true)
    pid=${pid:-$agent}
    local capeff uid rss
    capeff=$(awk '/^CapEff:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo none)
    uid=$(awk '/^Uid:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo none)
    rss=$(awk '/^VmRSS:/{print $2 " " $3}' "/proc/$pid/status" 2>/dev/null || echo none)
    check "  as uid 65534 ($uid) with CapEff exactly CAP_NET_RAW ($capeff); RSS $rss" \
        [ "$uid" = 65534 -a "$capeff" = 0000000000002000 ]
    kill "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    agent=""
    local rc=0
    timeout 20 ip netns exec "$ns" setpriv --no-new-privs chroot --userspec=65534:65534 "$rootfs" \
        /usr/local/bin/meshwatch agent --interface lo --listen 127.0.0.1:19484 >"$tmp/nnp.log" 2>&1 || rc=$?
    check "under no_new_privs the file capability is ignored: exit 2 naming CAP_NET_RAW (exit $rc)" \
        bash -c "[ $rc = 2 ] && grep -q CAP_NET_RAW '$tmp/nnp.log'"
    echo "image: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}

case "${1:-build}" in
    stage) stage ;;
    build) build ;;
    test) test_image ;;
    *) echo "usage: $0 stage|build|test" >&2; exit 2 ;;
esac
