//! The `triad` binary: parses the command line and runs it; errors become one line on stderr.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = triad::cli::Cli::parse();
    match triad::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
