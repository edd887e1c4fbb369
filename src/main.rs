//! The `triad` binary: parses the command line and runs it; errors become one line on stderr.

use clap::Parser;

/// How a command that printed into a closed pipe exits: as a filter killed by SIGPIPE would.
const BROKEN_PIPE_EXIT: i32 = 128 + nix::libc::SIGPIPE;

#[tokio::main]
async fn main() {
    let cli = triad::cli::Cli::parse();
    let printing = cli.is_printing_command();
    if printing {
        // A closed stdout (`triad job list | head -1`) ends a printing command quietly. Not by
        // restoring SIGPIPE's default disposition: that applies to sockets too, and a peer that
        // closes a connection under a write (a TLS master answering a plaintext client, a master
        // killed mid-call) would then kill the CLI silently, with no error line. SIGPIPE stays
        // ignored (Rust's default); `println!` into a closed pipe panics, and that panic exits.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
                std::process::exit(BROKEN_PIPE_EXIT);
            }
            default(info);
        }));
    }
    match triad::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) if printing && broken_pipe(&e) => std::process::exit(BROKEN_PIPE_EXIT),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Did writing to stdout fail because its reader went away (`triad job logs … | head -1`)?
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
