//! Compiles proto/ with a vendored protoc, so a machine without protoc builds.

const DESERIALIZE: &str = "#[derive(serde::Deserialize)] #[serde(default, deny_unknown_fields)]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let config = tonic_prost_build::configure()
        // `-o json` output of the CLI serialises wire messages directly.
        .type_attribute(".triad.v1", "#[derive(serde::Serialize)]")
        // The HTTP/JSON API (`master::rest`) reads these request bodies as the same messages the
        // gRPC API takes (one shape, one validation), refusing fields it does not know, and
        // describes these messages in its OpenAPI document.
        .message_attribute(".triad.v1.SubmitJobRequest", DESERIALIZE)
        .message_attribute(".triad.v1.JobSpec", DESERIALIZE)
        .message_attribute(".triad.v1.Resources", DESERIALIZE)
        .message_attribute(".triad.v1.CreateCronRequest", DESERIALIZE)
        .message_attribute(".triad.v1.Dependency", DESERIALIZE);
    let schema = [
        "SubmitJobRequest",
        "JobSpec",
        "Resources",
        "Dependency",
        "SubmitJobResponse",
        "GetJobResponse",
        "Job",
        "Task",
        "Attempt",
        "TaskCounts",
        "ListJobsResponse",
        "CancelJobResponse",
        "SuspendJobResponse",
        "ResumeJobResponse",
        "ClusterStatusResponse",
        "MasterStatus",
        "ListExecutorsResponse",
        "ExecutorInfo",
        "DrainExecutorResponse",
        "WatchEventsResponse",
        "Event",
        "CreateCronRequest",
        "CronResponse",
        "Cron",
        "CronRun",
        "ListCronsResponse",
        "TriggerCronResponse",
    ];
    let config = schema.iter().fold(config, |c, m| {
        c.message_attribute(format!(".triad.v1.{m}"), "#[derive(utoipa::ToSchema)]")
    });
    config
        .file_descriptor_set_path(out.join("triad_descriptor.bin"))
        .compile_protos(&["proto/triad/v1/triad.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
