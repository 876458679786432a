//! The `braid` binary.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Inside an agent's sandbox, braid bridges the model's endpoint (`network: model`).
    if args.get(1).map(String::as_str) == Some("__bridge") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the bridge");
        std::process::exit(runtime.block_on(braid_worker::bridge::inside(&args[2..])));
    }
    if let Ok(me) = std::env::current_exe() {
        braid_worker::bridge::set_program(me);
    }
    std::process::exit(braid_orchestrator::cli::main());
}
