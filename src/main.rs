//! `maas`: runs one regional node. `maas --help` lists every flag.

/// mimalloc instead of glibc's allocator: the spend path allocates many small,
/// short-lived buffers (requests, JSON, log records), where glibc spent 12 % of
/// the node's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    maas_node::main()
}
