//! The `triad` binary: parses the command line and runs it; errors become one line on stderr.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = triad::cli::Cli::parse();
    if cli.is_printing_command() {
        // SAFETY: called before any other thread writes to a pipe; SIG_DFL installs no handler.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match triad::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
