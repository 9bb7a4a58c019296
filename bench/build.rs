//! Compiles the slice of etcd's API the comparison benchmark speaks, with protox (no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/etcd_kv.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
