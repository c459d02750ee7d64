//! `maas`: runs one regional node. `maas --help` lists every flag.

fn main() -> std::process::ExitCode {
    maas_node::main()
}
