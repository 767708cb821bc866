//! Compiles the `.proto` files with protox (a Rust protobuf compiler), so building Atoll
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/atoll/v1/mesos.proto",
        "proto/atoll/v1/scheduler.proto",
        "proto/atoll/v1/agent.proto",
        "proto/atoll/v1/operator.proto",
        "proto/atoll/v1/master.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // The descriptors themselves, for the Mesos JSON wire (proto field names, enum names).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("atoll_descriptors.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
