//! `cargo xtask features`: the facade builds with none of its features, and with each alone.
//!
//! Features are additive, and a user who wants one layer turns off the defaults and asks for
//! it (`shoal = { default-features = false, features = ["registry"] }`): that build must work
//! for every feature, and for none (the local process runtime alone). The features are read
//! from the facade's own manifest (`crates/shoal/Cargo.toml`, `[features]`, all but
//! `default`), so a new one is checked from the commit that adds it. Each check is
//! `cargo check -p shoal --no-default-features [--features F] --all-targets --locked`
//! (targets that need more features than the build has are skipped by cargo, as a user's
//! build would skip them). A build with warnings fails too, as CI denies them elsewhere.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};

/// The facade's manifest, from the workspace root.
const MANIFEST: &str = "crates/shoal/Cargo.toml";

pub(crate) fn run(options: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = options.first() {
        bail!("`cargo xtask features` takes no options, not `{unknown}`");
    }
    let path = workspace_root().join(MANIFEST);
    let manifest =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let features = features(&manifest);
    if features.is_empty() {
        bail!("no features found in {MANIFEST}");
    }
    let mut failures = Vec::new();
    let builds = std::iter::once(None).chain(features.iter().map(|feature| Some(feature.as_str())));
    for feature in builds {
        let mut check = vec!["check", "-p", "shoal", "--no-default-features"];
        if let Some(feature) = feature {
            check.extend(["--features", feature]);
        }
        check.extend(["--all-targets", "--locked"]);
        println!("==> cargo {}", check.join(" "));
        let output = cargo(&check).output().context("cargo check runs")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprint!("{stderr}");
        let build = match feature {
            Some(feature) => format!("with `{feature}` alone"),
            None => "without features".to_owned(),
        };
        if !output.status.success() {
            failures.push(format!("the facade does not build {build}"));
        } else if stderr.lines().any(|line| line.starts_with("warning")) {
            // An import or an item used only under another feature: CI denies warnings.
            failures.push(format!("the facade builds {build} with warnings"));
        }
    }
    if failures.is_empty() {
        println!("    the facade builds with no feature and with each of {features:?} alone");
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    Ok(ExitCode::FAILURE)
}

/// The names of the features a manifest declares, but `default`: the keys of its
/// `[features]` table, in order.
fn features(manifest: &str) -> Vec<String> {
    let mut inside = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[features]";
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if name != "default" && !name.is_empty() {
                names.push(name.to_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::features;

    #[test]
    fn the_features_are_the_keys_of_the_features_table_but_default() {
        let manifest = "\
[package]
name = \"shoal\"

[features]
default = [\"a\", \"b\"]
# A comment.
a = [\"dep:x\"]
b = [\"a\",
     \"dep:y\"]

[dependencies]
x = \"1\"
";
        assert_eq!(features(manifest), vec!["a", "b"]);
    }

    #[test]
    fn the_facade_has_features_to_check() {
        let manifest = std::fs::read_to_string(crate::workspace_root().join(super::MANIFEST))
            .expect("the facade's manifest");
        let found = features(&manifest);
        assert!(found.contains(&"hub".to_owned()) && found.contains(&"testing".to_owned()));
    }
}
