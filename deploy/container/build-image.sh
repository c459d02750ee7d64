#!/usr/bin/env bash
# Builds the `maas` image from deploy/Dockerfile on a machine with no image
# registry:
#   1. a Debian bookworm base image (`maas-local/debian:bookworm-slim`), made
#      once from a root filesystem debootstrap builds here from Debian's
#      packages, trimmed as debian:bookworm-slim is;
#   2. the node binary compiled on the host (bookworm too, so the same glibc);
#   3. `docker build` of the same Dockerfile, with BUILDER and BASE set to that
#      base and PREBUILT to the binary.
# With `--monitoring` it also makes `maas-local/prometheus` from Debian's
# prometheus package, for the compose file's monitoring profile.
#
# Usage: deploy/container/build-image.sh [--tag maas:local] [--binary PATH] [--monitoring]
# Needs root (debootstrap) the first time; later runs reuse the base image.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=maas:local
binary=
monitoring=
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --monitoring) monitoring=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

base=maas-local/debian:bookworm-slim
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$base" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "== bootstrapping Debian bookworm (minbase) into $rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    # What debian:bookworm-slim leaves out.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/var/log/*
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "== made $base"
fi

if [ -z "$binary" ]; then
    cargo build --release --locked --bin maas
    binary=target/release/maas
fi
# The build context admits only this path among target/ (see .dockerignore).
install -D -m 0755 "$binary" target/image/maas

echo "== docker build -t $tag (BUILDER=BASE=$base, PREBUILT=$binary)"
DOCKER_BUILDKIT=0 docker build --quiet -f deploy/Dockerfile -t "$tag" \
    --build-arg BUILDER="$base" --build-arg BASE="$base" \
    --build-arg PREBUILT=target/image/maas . >/dev/null
# The legacy builder keeps the build stage as a dangling image.
docker image prune --force --filter label=org.maas.stage=build >/dev/null
echo "== built $tag"

if [ -n "$monitoring" ] && ! docker image inspect maas-local/prometheus >/dev/null 2>&1; then
    if ! command -v prometheus >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    context=$(mktemp -d)
    cp "$(command -v prometheus)" "$context/prometheus"
    cat > "$context/Dockerfile" <<DOCKERFILE
FROM $base
COPY prometheus /bin/prometheus
RUN install -d -o nobody -g nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build --quiet -t maas-local/prometheus "$context" >/dev/null
    rm -rf "$context"
    echo "== made maas-local/prometheus"
fi
