//! Golden scenario files, shared by the state machine's and the leader duties' tests (test
//! builds only). A file is a script, then [`SEP`], then the transcript the script must produce;
//! `UPDATE_GOLDEN=1` rewrites the transcripts instead of comparing them. [`golden_files!`] makes
//! one test per file and a test that every file in the directory is listed.

/// Between a scenario's script and its expected transcript.
pub const SEP: &str = "=== expected ===";

/// A scenario file: its path, its script (before [`SEP`]) and its expected transcript.
pub struct Scenario {
    pub path: String,
    pub name: String,
    pub script: String,
    expected: String,
}

impl Scenario {
    /// Reads `file` from `dir` (relative to the crate root).
    pub fn read(dir: &str, file: &str) -> Scenario {
        let path = format!("{}/{dir}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let script = text.split(SEP).next().unwrap_or_default().trim_end().to_string();
        let expected =
            text.split_once(SEP).map(|(_, e)| e.trim_start_matches('\n')).unwrap_or("").to_string();
        Scenario { path, name: file.to_string(), script, expected }
    }

    /// The script's lines that are not blank and not `#` comments, trimmed.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.script.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
    }

    /// Compares `out` with the expected transcript (or, with `UPDATE_GOLDEN` set, writes it).
    pub fn check(&self, out: &str) {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let text = format!("{}\n\n{SEP}\n{out}", self.script);
            std::fs::write(&self.path, text).unwrap_or_else(|e| panic!("{}: {e}", self.path));
        } else if self.expected != out {
            panic!(
                "{}: transcript differs (rerun with UPDATE_GOLDEN=1 to accept)\n--- expected\n{}\n--- got\n{out}",
                self.name, self.expected
            );
        }
    }
}

/// One `#[test]` per scenario, each calling `$run("<name>.txt")`, and `golden_files_all_listed`,
/// which fails on a file in `$dir` that has no test.
macro_rules! golden_files {
    ($dir:literal, $run:ident: $($name:ident),* $(,)?) => {
        $( #[test] fn $name() { $run(concat!(stringify!($name), ".txt")); } )*
        /// Every scenario file has a test above.
        #[test]
        fn golden_files_all_listed() {
            let listed = [$(concat!(stringify!($name), ".txt")),*];
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir);
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(listed.contains(&name.as_str()), "{}/{name} has no test", $dir);
            }
        }
    };
}
pub(crate) use golden_files;
