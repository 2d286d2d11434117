//! Checks on the source tree itself, run as ordinary tests (`cargo test -p xtask`).
//!
//! **Sans-IO cores stay sans-IO.** The protocol cores (Paxos, Plumtree, HyParView) and the
//! simulator must not reach for tokio, the real clock, unseeded randomness, threads or
//! sockets: a simulation is only replayable if every input comes in through a method call.
//! Every Rust file under a core crate's `src/` is checked, except the drivers that run a core
//! over the transport (listed in `DRIVERS`) and test code (test files, and a file's inline
//! `#[cfg(test)] mod`), which may start from a real `Instant::now()`. A line may carry its
//! own exemption, `// tidy-allow: REASON`, saying why that one use is harmless.
//!
//! **Everything else takes time from its node's clock.** Outside the cores (the runtime, the
//! transport, the supervisors, the drivers, the layers to come), no code reads the real clock,
//! arms a tokio timer or draws OS randomness itself: time comes from `Runtime::clock`, which a
//! simulation replaces, and randomness from a configured seed. A line's `tidy-allow:` may
//! exempt it, on the line itself or the one above.
//!
//! **No two crate roots export the same name.** A user imports from several crates at once
//! (and the facade's prelude gathers them), so a type, trait or function at the root of one
//! crate shares its name with nothing at the root of another (the facade `shoal`, which
//! re-exports the others, aside).

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    /// The crates whose `src/` holds sans-IO code.
    const CORE_CRATES: [&str; 5] =
        ["crates/paxos", "crates/broadcast", "crates/registry", "crates/hub", "crates/sim"];

    /// Files or directories (relative to the workspace root) that are drivers: they run a
    /// core over tokio and the transport, and may do I/O. (`shoal-sim`'s `nodes` is the
    /// simulated network under whole nodes, which run on tokio's paused clock: its time is
    /// tokio's, and its randomness is seeded.)
    const DRIVERS: [&str; 5] = [
        "crates/paxos/src/driver",
        "crates/broadcast/src/driver",
        "crates/registry/src/driver",
        "crates/hub/src/driver",
        "crates/sim/src/nodes.rs",
    ];

    /// What a core must not use, each with the reason it would break replay.
    const FORBIDDEN: [(&str, &str); 9] = [
        ("tokio", "an async runtime: cores are driven by method calls"),
        ("Instant::now", "the real clock: time comes in as `now`"),
        ("SystemTime::now", "the real clock: time comes in as `now`"),
        ("thread_rng", "unseeded randomness: use the configured seed"),
        ("rand::rng()", "unseeded randomness: use the configured seed"),
        ("from_os_rng", "unseeded randomness: use the configured seed"),
        ("getrandom", "unseeded randomness: use the configured seed"),
        ("std::thread", "threads: a core runs on its driver's task"),
        ("std::net", "sockets: the driver moves bytes"),
    ];

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").into()
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    fn is_exempt(relative: &str) -> bool {
        let is_test = relative.ends_with("/tests.rs") || relative.contains("/tests/");
        is_test || DRIVERS.iter().any(|driver| relative.starts_with(driver))
    }

    /// Code lines only: comments and doc comments may talk about what a core does not use,
    /// a line that says `tidy-allow:` and why is exempt, and a file's inline test module (a
    /// `#[cfg(test)]` line followed by `mod`) ends what is checked.
    fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
        let lines: Vec<&str> = text.lines().collect();
        let tests_start = lines
            .windows(2)
            .position(|pair| {
                pair[0].trim() == "#[cfg(test)]" && pair[1].trim_start().starts_with("mod ")
            })
            .unwrap_or(lines.len());
        lines.into_iter().take(tests_start).enumerate().filter(|(_, line)| {
            !line.trim_start().starts_with("//") && !line.contains("// tidy-allow: ")
        })
    }

    #[test]
    fn sans_io_cores_use_no_runtime_clock_randomness_threads_or_sockets() {
        let root = workspace_root();
        let mut files = Vec::new();
        for krate in CORE_CRATES {
            rust_files(&root.join(krate).join("src"), &mut files);
        }
        assert!(files.len() > 10, "expected the cores' sources under {}", root.display());
        let mut violations = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().into_owned();
            if is_exempt(&relative) {
                continue;
            }
            let text = fs::read_to_string(&file).expect("a source file reads");
            for (index, line) in code_lines(&text) {
                for (token, reason) in FORBIDDEN {
                    if line.contains(token) {
                        violations.push(format!("{relative}:{}: `{token}`: {reason}", index + 1));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "sans-IO cores must stay sans-IO:\n{}",
            violations.join("\n")
        );
    }

    #[test]
    fn drivers_and_tests_are_exempt_and_comments_are_not_code() {
        assert!(is_exempt("crates/paxos/src/driver.rs"));
        assert!(is_exempt("crates/paxos/src/driver/service.rs"));
        assert!(is_exempt("crates/broadcast/src/core/plumtree/tests.rs"));
        assert!(!is_exempt("crates/paxos/src/core/proposer.rs"));
        let text = "// no tokio\nInstant::now();\n    /// tokio\nInstant::now() // tidy-allow: why\n#[cfg(test)]\nmod tests {\n    tokio\n}";
        let lines: Vec<usize> = code_lines(text).map(|(index, _)| index).collect();
        assert_eq!(lines, vec![1]);
    }

    /// Source trees outside the cores, which take their time from the node's clock.
    const NODE_SOURCES: [&str; 7] = [
        "crates/process/src",
        "crates/transport/src",
        "crates/supervisor/src",
        "crates/paxos/src/driver",
        "crates/broadcast/src/driver",
        "crates/registry/src",
        "crates/hub/src",
    ];

    /// Files on tokio's clock, each with why.
    const NOT_ON_THE_CLOCK: [(&str, &str); 1] =
        [("crates/process/src/clock.rs", "the clock itself, over tokio's")];

    /// What code outside the cores must not use, each with what to use instead.
    const CLOCKED: [(&str, &str); 10] = [
        ("Instant::now", "`clock.now()` of the node's `Clock`"),
        ("SystemTime::now", "`clock.wall_micros()` of the node's `Clock`"),
        (".elapsed()", "`clock.since(earlier)`"),
        ("tokio::time::sleep", "`clock.sleep` or `clock.sleep_until`"),
        ("tokio::time::timeout", "`clock.timeout` or `clock.timeout_at`"),
        ("tokio::time::interval", "`clock.interval`"),
        ("thread_rng", "a seeded generator"),
        ("rand::rng()", "a seeded generator"),
        ("from_os_rng", "a seeded generator"),
        ("getrandom", "a seeded generator"),
    ];

    /// Code lines of `text` that no `tidy-allow:` on them or just above exempts.
    fn unexempted_lines(text: &str) -> Vec<(usize, &str)> {
        let lines: Vec<&str> = text.lines().collect();
        code_lines(text)
            .filter(|(index, _)| {
                *index == 0 || !lines[index - 1].trim_start().starts_with("// tidy-allow: ")
            })
            .collect()
    }

    /// The node's source files outside the cores (tests left out), each with its path
    /// relative to the workspace and its text.
    fn node_sources() -> Vec<(String, String)> {
        let root = workspace_root();
        let mut files = Vec::new();
        for tree in NODE_SOURCES {
            rust_files(&root.join(tree), &mut files);
        }
        for driver in ["crates/paxos/src/driver.rs", "crates/broadcast/src/driver.rs"] {
            files.push(root.join(driver));
        }
        assert!(files.len() > 30, "expected the node's sources under {}", root.display());
        files
            .into_iter()
            .filter_map(|file| {
                let relative = file.strip_prefix(&root).unwrap_or(&file);
                let relative = relative.to_string_lossy().into_owned();
                let is_test = relative.ends_with("/tests.rs") || relative.contains("/tests/");
                let text = fs::read_to_string(&file).expect("a source file reads");
                (!is_test).then_some((relative, text))
            })
            .collect()
    }

    #[test]
    fn code_outside_the_cores_takes_time_from_the_node_clock() {
        let mut violations = Vec::new();
        for (relative, text) in node_sources() {
            if NOT_ON_THE_CLOCK.iter().any(|(pending, _)| *pending == relative) {
                continue;
            }
            for (index, line) in unexempted_lines(&text) {
                for (token, instead) in CLOCKED {
                    if line.contains(token) {
                        violations
                            .push(format!("{relative}:{}: `{token}`: use {instead}", index + 1));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "code outside the cores takes time from the node's clock and randomness from a seed:\n{}",
            violations.join("\n")
        );
    }

    /// The `select!`s of `text` (line indexes) whose first line inside is not `biased;`.
    fn unbiased_selects(text: &str) -> Vec<usize> {
        let lines: Vec<&str> = text.lines().collect();
        unexempted_lines(text)
            .into_iter()
            .filter(|(index, line)| {
                line.contains("select! {")
                    && lines.get(index + 1).is_none_or(|next| next.trim() != "biased;")
            })
            .map(|(index, _)| index)
            .collect()
    }

    /// A `select!` outside the cores is biased: with several branches ready, tokio would pick
    /// one at random, from a generator no seed reaches, and a simulated run would not replay.
    #[test]
    fn selects_outside_the_cores_are_biased() {
        let violations: Vec<String> = node_sources()
            .iter()
            .flat_map(|(relative, text)| {
                unbiased_selects(text).into_iter().map(move |index| {
                    format!("{relative}:{}: `select!` without `biased;`", index + 1)
                })
            })
            .collect();
        assert!(
            violations.is_empty(),
            "which ready branch a select! takes must not be tokio's random pick:\n{}",
            violations.join("\n")
        );
        let text = "x = tokio::select! {\n    biased;\n}\ntokio::select! {\n    a => {}\n}";
        assert_eq!(unbiased_selects(text), vec![3]);
    }

    /// The names a crate root (`lib.rs`) exports: its `pub use` items (the last segment, or
    /// what `as` renames it to) and its own `pub` types, traits and functions. Re-exports of
    /// another workspace crate's items (`pub use shoal_...`) are that crate's, not a second
    /// item of the name; test code and comments are skipped.
    fn root_exports(text: &str) -> Vec<String> {
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut names = Vec::new();
        let mut rest = code.as_str();
        while let Some(start) = rest.find("pub use ") {
            let tail = &rest[start + "pub use ".len()..];
            let end = tail.find(';').unwrap_or(tail.len());
            // Another workspace crate's item, re-exported: the same item, not a second one.
            if tail.starts_with("shoal_") {
                rest = &tail[end..];
                continue;
            }
            let items = tail[..end].replace(['{', '}', '\n'], ",");
            for item in items.split(',').map(str::trim).filter(|item| !item.is_empty()) {
                let name = match item.split_once(" as ") {
                    Some((_, alias)) => alias.trim(),
                    None => item.rsplit("::").next().unwrap_or(item),
                };
                if name != "self" && name != "*" && !name.is_empty() {
                    names.push(name.to_owned());
                }
            }
            rest = &tail[end..];
        }
        for line in code.lines() {
            let line = line.trim_start();
            for kind in ["pub struct ", "pub enum ", "pub trait ", "pub type ", "pub fn "] {
                if let Some(tail) = line.strip_prefix(kind) {
                    let name: String =
                        tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    names.push(name);
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn no_two_crate_roots_export_the_same_name() {
        let crates = workspace_root().join("crates");
        let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut entries: Vec<PathBuf> = fs::read_dir(&crates)
            .expect("crates/")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.file_name().is_some_and(|name| name != "shoal"))
            .collect();
        entries.sort();
        for dir in entries {
            let Ok(text) = fs::read_to_string(dir.join("src/lib.rs")) else { continue };
            let krate = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for name in root_exports(&text) {
                by_name.entry(name).or_default().push(krate.clone());
            }
        }
        let shared: Vec<String> = by_name
            .iter()
            .filter(|(_, crates)| crates.len() > 1)
            .map(|(name, crates)| format!("{name}: {}", crates.join(", ")))
            .collect();
        assert!(
            shared.is_empty(),
            "names exported at the roots of two crates (rename one, after its service):\n{}",
            shared.join("\n")
        );
        let sample = "//! docs\npub use a::{B, c::D as E};\npub use shoal_x::Y;\npub use f::G;\n\
                      pub struct H;\n\
                      #[cfg(test)]\nmod tests { pub struct I; }";
        assert_eq!(root_exports(sample), vec!["B", "E", "G", "H"]);
    }

    #[test]
    fn an_exemption_may_sit_on_the_line_above() {
        let text = "// tidy-allow: why\nInstant::now();\nInstant::now();";
        let lines: Vec<usize> =
            unexempted_lines(text).into_iter().map(|(index, _)| index).collect();
        assert_eq!(lines, vec![2]);
    }
}
