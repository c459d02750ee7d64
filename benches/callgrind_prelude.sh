# Sourced by the callgrind instruments (instructions.sh, peer_instructions.sh)
# from the repository's root: installs valgrind if it is missing, and sets
# `bin` to the node binary, $MAAS_BIN or the release build (built now).
if ! command -v valgrind >/dev/null; then
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
bin="${MAAS_BIN:-target/release/maas}"
if [ -z "${MAAS_BIN:-}" ]; then
    cargo build --release --locked --bin maas >&2
fi
