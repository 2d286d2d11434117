//! `cargo xtask examples`: every example of the facade runs, and ends well, within a bound.
//!
//! Compiling an example proves little about it: a tour that panics halfway, or waits forever
//! on a node that never answers, still compiles. This builds the examples as CI's other steps
//! build the facade ([`crate::build_programs`]), runs each `crates/shoal/examples/*.rs` (found
//! by listing the directory, so a new example is run from the commit that adds it), and fails
//! if one exits unsuccessfully or runs past [`BOUND`] (it is then killed).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster_test::wait_until;
use crate::workspace_root;

/// The facade's examples, from the workspace root.
const EXAMPLES: &str = "crates/shoal/examples";

/// How long one example may run.
const BOUND: Duration = Duration::from_secs(300);

pub(crate) fn run(options: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = options.first() {
        bail!("`cargo xtask examples` takes no options, not `{unknown}`");
    }
    let names = examples()?;
    if names.is_empty() {
        bail!("no examples found in {EXAMPLES}");
    }
    let dir = crate::build_programs()?.join("examples");
    let mut failures = Vec::new();
    for name in &names {
        let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        println!("==> {}", binary.display());
        let mut child = Command::new(&binary)
            .current_dir(workspace_root())
            .spawn()
            .with_context(|| format!("{} starts", binary.display()))?;
        let began = Instant::now();
        let status = wait_until(&mut child, began + BOUND).context("waiting for the example")?;
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        match status {
            Some(status) if status.success() => {
                println!("    {name}: ran and ended well in {:.1?}", began.elapsed());
            }
            Some(status) => failures.push(format!("example {name} ended with {status}")),
            None => failures.push(format!("example {name} still ran after {BOUND:?}: killed")),
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

/// The names of the examples: the `.rs` files of [`EXAMPLES`], sorted.
fn examples() -> Result<Vec<String>> {
    let dir = workspace_root().join(EXAMPLES);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.context("reading the examples' directory")?.path();
        if path.extension().is_some_and(|extension| extension == "rs")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_facade_has_its_tours() {
        let names = super::examples().expect("the examples' directory");
        assert!(names.contains(&"local".to_owned()) && names.contains(&"remote".to_owned()));
    }
}
