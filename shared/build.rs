//! Generates the gRPC code from `proto/` with a pure-Rust protobuf compiler, so a fresh
//! machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        root.join("braid/v1/worker.proto"),
        root.join("braid/v1/client.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    // Maps as BTreeMaps: a message encodes to the same bytes every time, so a coordinator
    // can know an attempt it ran before by its spec (see the journal).
    tonic_prost_build::configure()
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
