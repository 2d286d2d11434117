//! The human tables: pure functions from the API's answers (and the time now, where a table
//! says how long ago) to text, so that tests read them without a terminal.
//!
//! Text that came from users (names, keys, group and child ids) goes through [`printable`]
//! before it is shown: a name holding terminal escapes would otherwise drive the terminal of
//! whoever looks at the cluster.

use std::fmt::Write as _;

use shoal::dashboard::api::{
    ClusterView, GroupsView, HubRow, HubsView, List, NodeRow, NodeView, NodesView, PaxosView,
    RegistryView,
};

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Columns of text, each as wide as its widest cell, two spaces apart; no borders. A table
/// whose titles are all empty has no header line.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (cells past the columns are dropped, missing ones left empty).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|column| {
                let widest = self.rows.iter().map(|row| width(cell(row, column))).max();
                widest.unwrap_or(0).max(width(self.columns[column].0))
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> =
            self.columns.iter().map(|(title, _)| (*title).to_owned()).collect();
        let titled = self.columns.iter().any(|(title, _)| !title.is_empty());
        let header = titled.then_some(&header);
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (column, (_, align)) in self.columns.iter().enumerate() {
                let text = cell(row, column);
                let pad = " ".repeat(widths[column] - width(text));
                if column > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(text);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The cell of `row` in `column` (empty if the row is short).
fn cell(row: &[String], column: usize) -> &str {
    row.get(column).map_or("", String::as_str)
}

/// The width of `text` on a terminal, taken as its number of characters.
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `text` with its control characters escaped (`\u{1b}`), so it cannot move the cursor,
/// change colours or break a table's lines.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// `"(N of TOTAL shown)"` after a table whose list the API cut.
fn truncation_note<T>(list: &List<T>, what: &str) -> String {
    if list.truncated {
        format!(
            "({} of {} {what} shown: the dashboard lists at most {})\n",
            list.items.len(),
            list.total,
            list.items.len()
        )
    } else {
        String::new()
    }
}

/// `shoal status`: one line per part of the cluster, as `node` (the node asked) sees it.
pub(crate) struct StatusParts<'a> {
    pub(crate) node: &'a NodeView,
    pub(crate) nodes: &'a NodesView,
    pub(crate) paxos: &'a PaxosView,
    pub(crate) registry: &'a RegistryView,
    pub(crate) groups: &'a GroupsView,
    pub(crate) hubs: &'a HubsView,
    /// Now, in milliseconds since the Unix epoch (for how long the node has been up).
    pub(crate) now_ms: u64,
}

pub(crate) fn status(parts: &StatusParts<'_>) -> String {
    let StatusParts { node, nodes, paxos, registry, groups, hubs, now_ms } = parts;
    let mut table = Table::new(&[("", Align::Left), ("", Align::Left)]);
    let mut line = |key: &str, value: String| table.row(vec![key.to_owned(), value]);
    line(
        "node",
        format!(
            "{} at {} ({}, up {}, {} membership, {} processes)",
            printable(&node.name),
            node.listen_addr,
            if node.ready { "ready" } else { "NOT READY" },
            duration_text(now_ms.saturating_sub(node.started_at_ms)),
            node.membership,
            node.processes,
        ),
    );
    let up = nodes.nodes.items.iter().filter(|row| row.up).count();
    let down: Vec<String> =
        nodes.nodes.items.iter().filter(|row| !row.up).map(|row| printable(&row.name)).collect();
    let mut nodes_line = format!("{up} up, {} down", down.len());
    if !down.is_empty() {
        let _ = write!(nodes_line, " ({})", down.join(", "));
    }
    if nodes.nodes.truncated {
        let _ =
            write!(nodes_line, "; {} known, {} listed", nodes.nodes.total, nodes.nodes.items.len());
    }
    line("nodes", nodes_line);
    line("paxos", paxos_line(paxos));
    let (names, locks) = match (registry.running, &registry.error) {
        (false, _) => ("the registry does not run on this node".to_owned(), "-".to_owned()),
        (true, Some(error)) => (format!("unknown: {}", printable(error)), "unknown".to_owned()),
        (true, None) => (registry.names.total.to_string(), registry.locks.total.to_string()),
    };
    line("names", names);
    line("locks", locks);
    if registry.running && registry.unreachable.total > 0 {
        let unreachable: Vec<String> =
            registry.unreachable.items.iter().map(|name| printable(name)).collect();
        line("unreachable", format!("{} (not in the counts above)", unreachable.join(", ")));
    }
    line(
        "groups",
        if groups.running {
            groups.groups.total.to_string()
        } else {
            "process groups do not run on this node".to_owned()
        },
    );
    let hub_lines: Vec<String> = hubs.all().map(hub_line).collect();
    if hub_lines.is_empty() {
        line("hubs", "none on this node".to_owned());
    }
    for (index, text) in hub_lines.into_iter().enumerate() {
        line(if index == 0 { "hubs" } else { "" }, text);
    }
    table.render()
}

fn paxos_line(paxos: &PaxosView) -> String {
    if !paxos.running {
        return "does not run on this node".to_owned();
    }
    let quorum = if paxos.has_quorum { "quorum" } else { "NO QUORUM" };
    match &paxos.error {
        Some(error) => format!("{quorum}; acceptors unknown: {}", printable(error)),
        None => {
            let acceptors: Vec<String> =
                paxos.acceptors.iter().map(|name| printable(name)).collect();
            let version =
                paxos.version.map_or_else(String::new, |version| format!(", version {version}"));
            format!("{quorum}; acceptors {} ({}{version})", acceptors.join(", "), acceptors.len())
        }
    }
}

fn hub_line(hub: &HubRow) -> String {
    let name = match &hub.supervisor {
        Some(supervisor) => {
            format!("{} (supervisor {})", printable(&hub.id), printable(supervisor))
        }
        None => printable(&hub.id),
    };
    if !hub.running {
        return format!("{name}: not running");
    }
    let placed = hub.per_node.items.iter().filter(|share| share.running > 0).count();
    let mut text =
        format!("{name}: {} children on {placed} of {} nodes", hub.children, hub.nodes.total);
    if hub.unplaced > 0 {
        let _ = write!(text, ", {} unplaced", hub.unplaced);
    }
    if !hub.has_quorum {
        text.push_str(", NO QUORUM");
    }
    if hub.partitioned {
        text.push_str(", PARTITIONED");
    }
    text
}

/// `shoal nodes`: each node, up or down, since when (`now_ms` is the time now, in
/// milliseconds since the Unix epoch), its incarnation and address.
pub(crate) fn nodes(nodes: &NodesView, now_ms: u64) -> String {
    let mut table = Table::new(&[
        ("NODE", Align::Left),
        ("STATE", Align::Left),
        ("SINCE", Align::Left),
        ("INCARNATION", Align::Right),
        ("ADDRESS", Align::Left),
        ("REASON", Align::Left),
    ]);
    for row in &nodes.nodes.items {
        table.row(node_cells(row, now_ms));
    }
    let mut out = table.render();
    out.push_str(&truncation_note(&nodes.nodes, "nodes"));
    out
}

fn node_cells(row: &NodeRow, now_ms: u64) -> Vec<String> {
    let name = if row.this_node {
        format!("{} (this)", printable(&row.name))
    } else {
        printable(&row.name)
    };
    let last = row.history.items.last();
    // The latest change shown is the one that put the node in its state; without one, it
    // has been so since before the dashboard started.
    let since = match last {
        Some(change) if change.up == row.up => {
            format!(
                "{} ({} ago)",
                utc_time(change.at_ms),
                duration_text(now_ms.saturating_sub(change.at_ms))
            )
        }
        _ => "before the dashboard started".to_owned(),
    };
    let reason = match last {
        Some(change) if !row.up && !change.up => {
            change.reason.as_deref().map(printable).unwrap_or_default()
        }
        _ => String::new(),
    };
    vec![
        name,
        (if row.up { "up" } else { "DOWN" }).to_owned(),
        since,
        row.incarnation.map_or_else(|| "-".to_owned(), |incarnation| incarnation.to_string()),
        row.listen_addr.as_deref().map_or_else(|| "-".to_owned(), printable),
        reason,
    ]
}

/// The registry's notes: not running, a listing that did not finish, members that did not
/// answer (whose entries are then missing).
fn registry_notes(registry: &RegistryView) -> String {
    let mut notes = String::new();
    if !registry.running {
        notes.push_str("(the registry does not run on this node)\n");
    }
    if let Some(error) = &registry.error {
        let _ = writeln!(notes, "(the listing is incomplete: {})", printable(error));
    }
    if registry.unreachable.total > 0 {
        let names: Vec<String> =
            registry.unreachable.items.iter().map(|name| printable(name)).collect();
        let _ = writeln!(notes, "(not answering, their entries missing: {})", names.join(", "));
    }
    notes
}

/// `shoal names`: each registered name, its process and node, its fencing token.
pub(crate) fn names(registry: &RegistryView) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("PID", Align::Left),
        ("NODE", Align::Left),
        ("TOKEN", Align::Right),
        ("RESTART", Align::Left),
    ]);
    for name in &registry.names.items {
        table.row(vec![
            printable(&name.name),
            name.pid.as_deref().map_or_else(|| "(starting)".to_owned(), printable),
            printable(&name.host),
            name.token.to_string(),
            printable(&name.restart),
        ]);
    }
    let mut out = table.render();
    out.push_str(&truncation_note(&registry.names, "names"));
    out.push_str(&registry_notes(registry));
    out
}

/// `shoal locks`: each held lock, its holder and node, its fencing token.
pub(crate) fn locks(registry: &RegistryView) -> String {
    let mut table = Table::new(&[
        ("LOCK", Align::Left),
        ("HOLDER", Align::Left),
        ("NODE", Align::Left),
        ("TOKEN", Align::Right),
        ("HELD", Align::Right),
        ("WAITERS", Align::Right),
    ]);
    for lock in &registry.locks.items {
        table.row(vec![
            printable(&lock.key),
            printable(&lock.holder),
            printable(&lock.host),
            lock.token.to_string(),
            lock.count.to_string(),
            lock.waiters.to_string(),
        ]);
    }
    let mut out = table.render();
    out.push_str(&truncation_note(&registry.locks, "locks"));
    out.push_str(&registry_notes(registry));
    out
}

/// `shoal groups`: each group and its members, one member a line.
pub(crate) fn groups(groups: &GroupsView) -> String {
    let mut table =
        Table::new(&[("GROUP", Align::Left), ("MEMBER", Align::Left), ("NODE", Align::Left)]);
    for group in &groups.groups.items {
        let name = printable(&group.name);
        if group.members.items.is_empty() {
            table.row(vec![name.clone(), "(none)".to_owned(), String::new()]);
        }
        for member in &group.members.items {
            let node = member.node.as_deref().map_or_else(|| "?".to_owned(), printable);
            table.row(vec![name.clone(), printable(&member.pid), node]);
        }
        if group.members.truncated {
            let more = group.members.total - group.members.items.len();
            table.row(vec![name, format!("(and {more} more)"), String::new()]);
        }
    }
    let mut out = table.render();
    out.push_str(&truncation_note(&groups.groups, "groups"));
    if !groups.running {
        out.push_str("(process groups do not run on this node)\n");
    }
    out
}

/// `shoal hub ID`: the hub's state, and its children per node of the ring.
pub(crate) fn hub(hub: &HubRow) -> String {
    let mut out = format!("{}\n", hub_line(hub));
    let ring: Vec<&str> = hub.nodes.items.iter().map(String::as_str).collect();
    let mut table = Table::new(&[
        ("NODE", Align::Left),
        ("IN RING", Align::Left),
        ("RUNNING", Align::Right),
        ("OTHER", Align::Right),
    ]);
    for share in &hub.per_node.items {
        let in_ring = if ring.contains(&share.node.as_str()) { "yes" } else { "no" };
        table.row(vec![
            printable(&share.node),
            in_ring.to_owned(),
            share.running.to_string(),
            share.other.to_string(),
        ]);
    }
    out.push_str(&table.render());
    if hub.unplaced > 0 {
        let _ = writeln!(out, "{} children run nowhere now", hub.unplaced);
    }
    out.push_str("(OTHER: copies restarting, moving or suspended there)\n");
    out
}

/// `shoal top`: the processes with the longest mailboxes over the cluster, longest first, at
/// most `limit` of them; then the nodes that did not answer.
pub(crate) fn top(cluster: &ClusterView, limit: usize) -> String {
    let mut rows = Vec::new();
    let mut processes = 0;
    let mut answering = 0;
    for node in &cluster.nodes.items {
        let Some(summary) = node.summary.as_ref().filter(|_| node.answering) else { continue };
        answering += 1;
        processes += summary.processes.count;
        for process in &summary.processes.top {
            rows.push((process.mailbox_len, &node.name, process));
        }
    }
    // Longest first; among equals by node, then pid, so a refresh does not shuffle them.
    rows.sort_by(|a, b| {
        b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)).then_with(|| a.2.pid.cmp(&b.2.pid))
    });
    let mut out =
        format!("{} nodes, {answering} answering, {processes} processes\n", cluster.nodes.total);
    let mut table = Table::new(&[
        ("MAILBOX", Align::Right),
        ("PID", Align::Left),
        ("NODE", Align::Left),
        ("NAME", Align::Left),
    ]);
    for (mailbox_len, node, process) in rows.into_iter().take(limit) {
        table.row(vec![
            mailbox_len.to_string(),
            printable(&process.pid),
            printable(node),
            process.name.as_deref().map(printable).unwrap_or_default(),
        ]);
    }
    out.push_str(&table.render());
    for node in cluster.nodes.items.iter().filter(|node| !node.answering) {
        let why = node.error.as_deref().map_or_else(|| "no answer".to_owned(), printable);
        let _ = writeln!(out, "{}: not answering ({why})", printable(&node.name));
    }
    out.push_str(&truncation_note(&cluster.nodes, "nodes"));
    out
}

/// `at_ms` (milliseconds since the Unix epoch) as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_time(at_ms: u64) -> String {
    let seconds = at_ms / 1000;
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for days on or
/// after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `elapsed_ms` in the two largest units: `42s`, `3m 05s`, `2h 07m`, `4d 01h`.
pub(crate) fn duration_text(elapsed_ms: u64) -> String {
    let seconds = elapsed_ms / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::parse;

    fn read<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
        parse("http://x:1", "/api/test", &json).expect("an answer of the API's shape")
    }

    fn list(items: serde_json::Value, total: usize) -> serde_json::Value {
        let shown = items.as_array().map_or(0, Vec::len);
        json!({ "items": items, "total": total, "truncated": shown < total })
    }

    /// Columns are as wide as their widest cell, numbers right-aligned, no trailing spaces.
    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
        table.row(vec!["a".to_owned(), "7".to_owned()]);
        table.row(vec!["longer".to_owned(), "1234".to_owned()]);
        assert_eq!(table.render(), "NAME       N\na          7\nlonger  1234\n");
    }

    /// A name holding terminal escapes or a line break is shown escaped, not obeyed.
    #[test]
    fn user_text_cannot_drive_the_terminal() {
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(printable("plain é"), "plain é");
    }

    /// Locks show holder, node and fencing token; a cut list says so.
    #[test]
    fn locks_show_holder_and_token() {
        let registry: RegistryView = read(json!({
            "running": true, "error": null,
            "names": list(json!([]), 0),
            "locks": list(json!([{ "key": "nightly", "holder": "<a.3.1>", "host": "a",
                                    "token": 42, "count": 1, "waiters": 2 }]), 3),
            "unreachable": list(json!(["c"]), 1),
        }));
        let text = locks(&registry);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("LOCK     HOLDER   NODE  TOKEN  HELD  WAITERS"));
        assert_eq!(lines.next(), Some("nightly  <a.3.1>  a        42     1        2"));
        assert!(text.contains("(1 of 3 locks shown"), "{text}");
        assert!(text.contains("their entries missing: c"), "{text}");
    }

    /// `top` merges the nodes' lists, longest mailbox first, and names the silent nodes.
    #[test]
    fn top_merges_nodes_longest_first() {
        let node = |name: &str, top: serde_json::Value| {
            let view = json!({
                "name": name, "incarnation": 1, "started_at_ms": 0, "listen_addr": "127.0.0.1:1",
                "ready": true,
                "membership": "full_mesh", "connected": list(json!([]), 0), "members": 2,
                "processes": 10,
                "layers": { "paxos": true, "broadcast": true, "registry": true, "groups": true }
            });
            json!({ "name": name, "answering": true, "error": null, "summary": {
                "node": view, "processes": { "node": name, "count": 10, "top": top } } })
        };
        let cluster: ClusterView = read(json!({ "node": "a", "nodes": list(json!([
            node("a", json!([{ "pid": "<a.1.1>", "name": null, "mailbox_len": 3 }])),
            node("b", json!([{ "pid": "<b.9.1>", "name": "slow", "mailbox_len": 50 },
                             { "pid": "<b.2.1>", "name": null, "mailbox_len": 0 }])),
            { "name": "c", "answering": false, "error": "timed out", "summary": null },
        ]), 3) }));
        assert_eq!(
            top(&cluster, 2),
            "3 nodes, 2 answering, 20 processes\n\
             MAILBOX  PID      NODE  NAME\n\
             \x20    50  <b.9.1>  b     slow\n\
             \x20     3  <a.1.1>  a\n\
             c: not answering (timed out)\n"
        );
    }

    /// Times are UTC dates, and durations the two largest units.
    #[test]
    fn times_read_as_dates_and_durations() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_796_649_551_999), "2026-12-07 13:19:11 UTC");
        assert_eq!(duration_text(999), "0s");
        assert_eq!(duration_text(185_000), "3m 05s");
        assert_eq!(duration_text(7_620_000), "2h 07m");
        assert_eq!(duration_text(349_200_000), "4d 01h");
    }
}
