//! `porin`: the agent and the CLI in one binary.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
