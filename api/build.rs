//! Compiles the Jaeger v2 remote-storage protos (api/proto) with a pure-Rust protobuf compiler,
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/jaeger/storage/v2/trace_storage.proto",
        "proto/jaeger/storage/v2/dependency_storage.proto",
        "proto/jaeger/storage/v2/capabilities.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // OTLP messages are the opentelemetry-proto crate's, the same types the OTLP services use.
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .compile_fds(descriptors)?;
    Ok(())
}
