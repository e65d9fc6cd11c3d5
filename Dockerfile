# meshwatch's image: the release binary, the shared libraries it links (libpcap and what that
# needs) and the loader, on nothing else: no shell, no package manager, no base image to pull.
#
# The build context is a staged root filesystem that scripts/image.sh prepares (`make image`
# does it all with buildah, no container daemon):
#   scripts/image.sh stage    # -> target/image/context/{Dockerfile,rootfs/}
#   buildah bud -f target/image/context/Dockerfile target/image/context   (or docker build)
# In the staged rootfs the binary carries the file capability cap_net_raw+ep, so the agent
# captures as the unprivileged user below when the container's bounding set holds NET_RAW
# (deploy/base/daemonset.yaml: drop ALL, add NET_RAW, allowPrivilegeEscalation true). buildah's
# COPY keeps the capability (security.capability travels as a PAX xattr in the layer;
# `make image-test` checks the pushed layer); a builder that drops xattrs would leave an agent
# that cannot open its capture ("needs CAP_NET_RAW", exit 2).
FROM scratch
COPY rootfs/ /
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/meshwatch"]
CMD ["agent", "--kubernetes"]
LABEL org.opencontainers.image.title="meshwatch" \
      org.opencontainers.image.description="Node agent that tells which workloads of an Istio mesh are ready for STRICT mTLS, from the packets" \
      org.opencontainers.image.source="https://github.com/meshwatch/meshwatch" \
      org.opencontainers.image.licenses="Apache-2.0"
