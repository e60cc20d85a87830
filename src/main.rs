//! The `tapio` command: wires the layers together (config → topology → API) and maps outcomes
//! to sysexits codes. Nothing here knows about individual components.

mod cli;
mod reload;
mod run;
mod summary;
mod tap;
mod top;

use std::process::ExitCode;

use clap::Parser;

/// Events are many small allocations (strings, boxed contexts) made on one thread and freed on
/// another; mimalloc handles that pattern much faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(cli.log_format);
    let code = match cli.command {
        cli::Command::Run(args) => run::run(&args),
        cli::Command::Validate(args) => run::validate(&args),
        cli::Command::Graph(args) => run::graph(&args),
        cli::Command::Test(args) => run::test(&args),
        cli::Command::DeadLetter(command) => run::dead_letter(&command),
        cli::Command::Buffer(cli::BufferCommand::Check(args)) => run::buffer_check(&args),
        cli::Command::Tap(args) => tap::tap(&args),
        cli::Command::Top(args) => top::top(&args),
    };
    ExitCode::from(code as u8)
}
