//! `book`: build, check or serve the Metis book (see the `book` library docs and
//! `book/README.md`). The justfile's `book`, `book-check` and `serve-book` recipes call it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, check or serve the Metis book.
#[derive(Parser)]
#[command(name = "book")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Refresh the generated pages and render the site into target/book/.
    Build,
    /// Fail if a generated page is stale; build; check internal links; run the browser test.
    Check,
    /// Build, then serve target/book/ on http://127.0.0.1:<port>.
    Serve {
        /// Port to listen on.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = book::Workspace::locate();
    let result = match cli.command {
        Command::Build => book::build(&ws).map(|_| ()),
        Command::Check => book::check(&ws),
        Command::Serve { port } => book::serve(&ws, port),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("book: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
