//! Compiles proto/ with a vendored protoc, so a machine without protoc builds.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // `-o json` output of the CLI serialises wire messages directly.
        .type_attribute(".triad.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("triad_descriptor.bin"))
        .compile_protos(&["proto/triad/v1/triad.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
