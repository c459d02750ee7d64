//! The `maas` binary. The regional node (HTTP API, sled storage) is being built in
//! `crates/node`; until it lands this binary only says so.

fn main() {
    eprintln!("maas: the regional node is not built yet; see README.md");
    std::process::exit(2);
}
