// Compiles the schemas with protox (a pure-Rust protobuf parser), so building needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/heron/topology.proto", "proto/egret/egret.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Rare and large: boxed so that every other control message stays small.
        .boxed(".egret.Control.msg.update_topology")
        .compile_fds(fds)?;
    Ok(())
}
