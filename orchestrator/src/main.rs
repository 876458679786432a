//! The `braid` binary.

fn main() {
    // Inside an agent's sandbox, braid bridges the model's endpoint (`network: model`).
    if let Some(code) = braid_worker::bridge::main_if_bridge() {
        std::process::exit(code);
    }
    std::process::exit(braid_orchestrator::cli::main());
}
