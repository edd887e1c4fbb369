//! The executor's configuration: an optional TOML file (`triad executor --config FILE`, see
//! `cluster-config/executor.toml`), `TRIAD_EXECUTOR_*` environment variables and flags.
//! Precedence: flags > environment > file > defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::ExecutorConfig;
use crate::security::tls::TlsFiles;
use crate::security::AuthConfig;

/// The file's shape; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorFile {
    pub masters: Vec<String>,
    pub slots: Option<u32>,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub work_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub http_listen: Option<String>,
    /// Plaintext and no authentication (only for a cluster whose masters say so too).
    pub insecure: Option<bool>,
    /// The cluster CA and this executor's certificate (`triad tls cert create --role executor
    /// --name ID`): the executor's id is the name in it.
    pub tls: Option<TlsFiles>,
    /// Bearer tokens accepted by the worker API (only `ReadOutput`, for `triad job logs`).
    pub auth: AuthConfig,
    /// How attempt output is capped, kept and expired, and how much free space the work dir
    /// must keep (`[output]`).
    pub output: OutputFile,
}

/// The `[output]` section: every field optional (defaults in [`OutputConfig::default`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputFile {
    /// Largest size of one output file of a stream before the next is started.
    pub max_file_bytes: Option<u64>,
    /// How many files of one stream of an attempt are kept (the newest).
    pub max_files: Option<u32>,
    /// How long after an attempt ended its output is kept at most ("7d", "12h"), unless its
    /// job is deleted before.
    pub output_ttl: Option<String>,
    /// Free space in the work dir below which the executor refuses new attempts.
    pub min_free_bytes: Option<u64>,
}

/// How the executor keeps attempt output (`[output]`, resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputConfig {
    /// Per stream of an attempt: files and their size (default 10 × 10 MiB, as Nomad).
    pub limits: crate::executor::runner::OutputLimits,
    /// Output older than this (since its attempt ended) is deleted (default 7 days: longer
    /// than the default finished-job retention, so under defaults output goes with its job).
    pub ttl: std::time::Duration,
    /// Free space in the work dir below which starts are refused (default 64 MiB).
    pub min_free_bytes: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            limits: crate::executor::runner::OutputLimits::default(),
            ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            min_free_bytes: 64 << 20,
        }
    }
}

impl OutputFile {
    fn into_config(self) -> anyhow::Result<OutputConfig> {
        let d = OutputConfig::default();
        let limits = crate::executor::runner::OutputLimits {
            max_file_bytes: self.max_file_bytes.unwrap_or(d.limits.max_file_bytes),
            max_files: self.max_files.unwrap_or(d.limits.max_files),
        };
        anyhow::ensure!(limits.max_file_bytes >= 1, "[output] max_file_bytes must be at least 1");
        anyhow::ensure!(limits.max_files >= 1, "[output] max_files must be at least 1");
        let ttl = match self.output_ttl {
            None => d.ttl,
            Some(t) => humantime::parse_duration(&t)
                .with_context(|| format!("[output] output_ttl {t:?} is not a duration"))?,
        };
        anyhow::ensure!(
            ttl >= std::time::Duration::from_secs(1),
            "[output] output_ttl must be at least 1s"
        );
        Ok(OutputConfig {
            limits,
            ttl,
            min_free_bytes: self.min_free_bytes.unwrap_or(d.min_free_bytes),
        })
    }
}

impl ExecutorFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading executor config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing executor config {}", path.display()))
    }

    /// Applies `TRIAD_MASTERS` and `TRIAD_EXECUTOR_*` from `get` over the file's values.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn num<T: std::str::FromStr>(k: &str, v: String) -> anyhow::Result<T> {
            v.parse().map_err(|_| anyhow::anyhow!("{k}={v:?} is not a number"))
        }
        if let Some(v) = get("TRIAD_MASTERS") {
            self.masters = crate::client::parse_masters(&v)?;
        }
        if let Some(v) = get("TRIAD_EXECUTOR_SLOTS") {
            self.slots = Some(num("TRIAD_EXECUTOR_SLOTS", v)?);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_CPU") {
            self.cpu_millis = Some(num("TRIAD_EXECUTOR_CPU", v)?);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_MEMORY") {
            self.memory_mib = Some(num("TRIAD_EXECUTOR_MEMORY", v)?);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_LABELS") {
            self.labels = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|kv| parse_kv(kv.trim()).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(v) = get("TRIAD_EXECUTOR_WORK_DIR") {
            self.work_dir = Some(v.into());
        }
        if let Some(v) = get("TRIAD_EXECUTOR_LISTEN") {
            self.listen = Some(v);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_ADVERTISE") {
            self.advertise = Some(v);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_HTTP_LISTEN") {
            self.http_listen = Some(v);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_INSECURE") {
            self.insecure = Some(
                v.parse()
                    .with_context(|| format!("TRIAD_EXECUTOR_INSECURE={v:?} is not true/false"))?,
            );
        }
        if let Some(v) = get("TRIAD_EXECUTOR_OUTPUT_MAX_FILE_BYTES") {
            self.output.max_file_bytes = Some(num("TRIAD_EXECUTOR_OUTPUT_MAX_FILE_BYTES", v)?);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_OUTPUT_MAX_FILES") {
            self.output.max_files = Some(num("TRIAD_EXECUTOR_OUTPUT_MAX_FILES", v)?);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_OUTPUT_TTL") {
            self.output.output_ttl = Some(v);
        }
        if let Some(v) = get("TRIAD_EXECUTOR_OUTPUT_MIN_FREE_BYTES") {
            self.output.min_free_bytes = Some(num("TRIAD_EXECUTOR_OUTPUT_MIN_FREE_BYTES", v)?);
        }
        self.tls = crate::security::tls::from_env("TRIAD_EXECUTOR", self.tls.take(), &get)?;
        Ok(())
    }

    /// The final configuration, with defaults for whatever is still unset.
    pub fn into_config(self) -> anyhow::Result<ExecutorConfig> {
        anyhow::ensure!(
            !self.masters.is_empty(),
            "no masters given: pass --masters, set TRIAD_MASTERS, or list them in the config file"
        );
        Ok(ExecutorConfig {
            masters: self.masters,
            slots: self.slots.unwrap_or(4),
            cpu_millis: self.cpu_millis.unwrap_or(4000),
            memory_mib: self.memory_mib.unwrap_or(4096),
            labels: self.labels,
            work_dir: self.work_dir.unwrap_or_else(|| PathBuf::from("./triad-executor")),
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:0".to_string()),
            advertise: self.advertise,
            http_listen: self.http_listen,
            insecure: self.insecure.unwrap_or(false),
            tls: self.tls,
            auth: self.auth,
            output: self.output.into_config()?,
        })
    }
}

/// `KEY=VALUE` (a label, a constraint, an environment variable), as the executor's
/// `TRIAD_EXECUTOR_LABELS` and the command line's `--label`/`--constraint`/`--env` take it.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_env_overrides_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config/executor.toml");
        let mut f = ExecutorFile::load(&path).unwrap();
        assert_eq!(f.masters.len(), 3);
        assert!(f.tls.is_some() && f.insecure.is_none(), "the example runs with TLS");
        f.apply_env(|k| match k {
            "TRIAD_EXECUTOR_SLOTS" => Some("9".into()),
            "TRIAD_EXECUTOR_LABELS" => Some("zone=b,disk=ssd".into()),
            _ => None,
        })
        .unwrap();
        let c = f.clone().into_config().unwrap();
        assert_eq!(c.slots, 9);
        assert_eq!(c.output.limits.max_files, 10, "the example's [output] section");
        f.apply_env(|k| match k {
            "TRIAD_EXECUTOR_OUTPUT_MAX_FILE_BYTES" => Some("4096".into()),
            "TRIAD_EXECUTOR_OUTPUT_MAX_FILES" => Some("3".into()),
            "TRIAD_EXECUTOR_OUTPUT_TTL" => Some("90m".into()),
            "TRIAD_EXECUTOR_OUTPUT_MIN_FREE_BYTES" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        let o = f.clone().into_config().unwrap().output;
        assert_eq!((o.limits.max_file_bytes, o.limits.max_files), (4096, 3));
        assert_eq!((o.ttl, o.min_free_bytes), (std::time::Duration::from_secs(5400), 0));
        f.output.output_ttl = Some("soon".into());
        assert!(f.into_config().is_err(), "a bad duration is refused");
        assert_eq!(c.labels.get("disk").map(String::as_str), Some("ssd"));
        assert!(ExecutorFile::default().into_config().is_err(), "masters are required");
        assert!(toml::from_str::<ExecutorFile>("bogus = 1").is_err());
    }
}
