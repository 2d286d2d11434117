//! A linearisability checker for histories of operations on a sequential model.
//!
//! Placeholder: the checker arrives with the Paxos issue.
