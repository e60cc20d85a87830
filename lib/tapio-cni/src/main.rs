//! `tapio-cni`: a chained CNI plugin (spec 1.0) that a user appends to a conflist's `plugins`.
//! It changes nothing on the node: it passes `prevResult` through unchanged and tells the local
//! Tapio agent (the `cni` source listening on `socket_path`) what the chain did, as one
//! `UnifiedEvent` line. Tapio being away never fails the chain: the send times out fast and the
//! plugin still answers the runtime.

mod netns;
mod plugin;

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // VERSION may come with empty (or closed) stdin; a read error is then just "no config".
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let call = plugin::Call::from_env(|name| std::env::var(name).ok());
    let outcome = plugin::run(&call, &stdin);
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(output)) => {
            let _ = stdout.write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = stdout.write_all(error.to_json().as_bytes());
            ExitCode::FAILURE
        }
    }
}
