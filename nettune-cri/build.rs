//! Generates the CRI messages and the client from `proto/` into OUT_DIR, with
//! protox as the protobuf compiler (no `protoc` is needed anywhere).

use std::error::Error;

const PROTO: &str = "proto/runtime/v1/cri.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        // The agent connects over a unix socket itself; no `connect(url)`.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
