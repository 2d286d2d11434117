//! The `groups` commands: the default scope of `shoal-registry`'s process groups on this node
//! ([`Groups::start`]), and idle member processes to put in them.
//!
//! Every `groups join` spawns fresh members, one process per join, so a pid is in one group
//! only and the cluster test can say, from the pids each node answered, which members every
//! node should see. Members are left alone until a `groups leave` or `groups exit` names them
//! by count (the lowest pids first), or the node dies with them.

use shoal::prelude::*;
use shoal::transport::Node;

use crate::parse_value;

/// The default scope of groups on this node.
pub(crate) struct GroupCommands {
    groups: Groups,
}

/// A group member that does nothing but live.
struct Member;

impl Process for Member {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn handle_cast(&mut self, (): (), _: &mut Context<Self>) {}

    async fn handle_call(&mut self, (): (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        reply.send(());
    }
}

impl GroupCommands {
    /// Starts the default scope on `node`, with its default configuration.
    pub(crate) async fn start(node: &Node) -> Result<Self, String> {
        let groups = Groups::start(node, GroupsConfig::default())
            .await
            .map_err(|error| format!("cannot start the groups: {error}"))?;
        Ok(GroupCommands { groups })
    }

    /// The scope (for the dashboard's view of this node).
    #[cfg(feature = "dashboard")]
    pub(crate) fn groups(&self) -> &Groups {
        &self.groups
    }

    /// `groups join GROUP N`: spawns `N` members and joins them to `GROUP` at once; their pids.
    pub(crate) fn join(&self, node: &Node, group: &str, count: &str) -> Result<String, String> {
        let count: usize = parse_value("groups join", count)?;
        let pids: Vec<Pid> = (0..count).map(|_| node.runtime().spawn(Member).pid()).collect();
        if let Err(error) = self.groups.join_many(group, &pids) {
            for &pid in &pids {
                node.runtime().kill(pid);
            }
            return Err(error.to_string());
        }
        Ok(words(&pids))
    }

    /// `groups leave GROUP N`: the `N` lowest local members of `GROUP` leave it (and live on);
    /// their pids.
    pub(crate) fn leave(&self, group: &str, count: &str) -> Result<String, String> {
        let pids = self.lowest_local(group, count, "groups leave")?;
        for &pid in &pids {
            self.groups.leave(group, pid).map_err(|error| error.to_string())?;
        }
        Ok(words(&pids))
    }

    /// `groups exit GROUP N`: the `N` lowest local members of `GROUP` are killed (their
    /// memberships go as they exit); their pids.
    pub(crate) fn exit(&self, node: &Node, group: &str, count: &str) -> Result<String, String> {
        let pids = self.lowest_local(group, count, "groups exit")?;
        for &pid in &pids {
            node.runtime().kill(pid);
        }
        Ok(words(&pids))
    }

    /// `groups members [GROUP...]`: the named groups (every group, if none is named) as this
    /// node sees them now, `GROUP=PID,PID,...`, in name order, each pid once per join, in
    /// pid order; a group without members is left out.
    pub(crate) fn members(&self, names: &[&str]) -> String {
        let all = self.groups.all();
        let shown =
            all.iter().filter(|(name, _)| names.is_empty() || names.contains(&name.as_str()));
        let shown: Vec<String> = shown
            .map(|(name, pids)| {
                let pids: Vec<String> = pids.iter().map(Pid::to_string).collect();
                format!("{name}={}", pids.join(","))
            })
            .collect();
        shown.join(" ")
    }

    /// The `count` lowest members of `group` on this node; an error if it has fewer.
    fn lowest_local(&self, group: &str, count: &str, command: &str) -> Result<Vec<Pid>, String> {
        let count: usize = parse_value(command, count)?;
        let mut local = self.groups.local_members(group);
        local.dedup();
        if local.len() < count {
            return Err(format!("{group} has {} members here, not {count}", local.len()));
        }
        local.truncate(count);
        Ok(local)
    }
}

/// The pids, separated by spaces.
fn words(pids: &[Pid]) -> String {
    pids.iter().map(Pid::to_string).collect::<Vec<_>>().join(" ")
}
