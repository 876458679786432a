//! The `braid` binary.

fn main() {
    std::process::exit(braid_orchestrator::cli::main());
}
