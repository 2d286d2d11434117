//! `cargo xtask cores`: the sans-IO cores build on their own, without tokio or the transport.
//!
//! Each core crate (Paxos, broadcast, the registry, the hub, the simulator) puts its driver behind a
//! default feature, so a user who wants only the protocol logic (or a simulation of it)
//! compiles no runtime. For
//! each: `cargo check -p CRATE --no-default-features --locked`, then
//! `cargo tree -p CRATE --no-default-features -e normal`, which must name none of the crates
//! in [`RUNTIME`]. The tidy tests check the cores' source for the same reason; this checks the
//! package graph, which no source check can.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cargo;

/// The crates whose cores must build alone.
const CORES: [&str; 5] =
    ["shoal-paxos", "shoal-broadcast", "shoal-registry", "shoal-hub", "shoal-sim"];

/// What a core build must not pull in.
const RUNTIME: [&str; 3] = ["tokio", "shoal-transport", "shoal-process"];

pub(crate) fn run(options: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = options.first() {
        bail!("`cargo xtask cores` takes no options, not `{unknown}`");
    }
    let mut failures = Vec::new();
    for core in CORES {
        let check = ["check", "-p", core, "--no-default-features", "--locked"];
        println!("==> cargo {}", check.join(" "));
        if !cargo(&check).status().context("cargo check runs")?.success() {
            failures.push(format!("{core} does not build without its default features"));
            continue;
        }
        let tree =
            ["tree", "-p", core, "--no-default-features", "-e", "normal", "--prefix", "none"];
        println!("==> cargo {}", tree.join(" "));
        let output = cargo(&tree).output().context("cargo tree runs")?;
        if !output.status.success() {
            failures.push(format!("cargo tree failed for {core}"));
            continue;
        }
        let listed = String::from_utf8_lossy(&output.stdout);
        let pulled = runtime_crates(&listed);
        if pulled.is_empty() {
            println!("    {core}: builds alone, with none of {RUNTIME:?}");
        } else {
            failures.push(format!("{core} without default features still depends on {pulled:?}"));
        }
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    Ok(ExitCode::FAILURE)
}

/// The crates of [`RUNTIME`] that a `cargo tree --prefix none` listing names.
fn runtime_crates(listing: &str) -> Vec<&'static str> {
    RUNTIME
        .into_iter()
        .filter(|runtime| {
            listing.lines().any(|line| line.split_whitespace().next() == Some(*runtime))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::runtime_crates;

    #[test]
    fn a_listing_names_the_runtime_crates_it_holds_and_no_others() {
        let listing = "shoal-paxos v0.1.0 (/w/crates/paxos)\nrand v0.10.0\ntokio v1.54.1\n\
                       tokio-macros v2.6.0\nshoal-transport v0.1.0 (/w/crates/transport)\n";
        assert_eq!(runtime_crates(listing), ["tokio", "shoal-transport"]);
        assert!(runtime_crates("shoal-sim v0.1.0\nrand v0.10.0\n").is_empty());
    }
}
