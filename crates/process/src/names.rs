//! Local name registration: a name points at one live process of this node; a process has at
//! most one name, freed when it exits.

use std::sync::PoisonError;

use crate::error::valid_name;
use crate::{Pid, RegisterError, Runtime};

impl Runtime {
    /// Registers `pid` under `name` on this node.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        if !valid_name(name) {
            return Err(RegisterError::InvalidName(name.to_owned()));
        }
        let mut names = self.names().write().unwrap_or_else(PoisonError::into_inner);
        if let Some(holder) = names.get(name) {
            return Err(RegisterError::NameTaken { name: name.to_owned(), holder: *holder });
        }
        let cell = self.lookup(pid).ok_or(RegisterError::NoProc(pid))?;
        // The process's own record is what `finish` reads, under the process's lock: once it
        // has exited this fails, so a name can never outlive its process.
        cell.control().set_name(name).map_err(|current| match current {
            Some(current) => RegisterError::AlreadyNamed { pid, name: current },
            None => RegisterError::NoProc(pid),
        })?;
        names.insert(name.to_owned(), pid);
        Ok(())
    }

    /// Removes `name`; returns the process it pointed at.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        let pid = self.names().write().unwrap_or_else(PoisonError::into_inner).remove(name)?;
        if let Some(cell) = self.lookup(pid) {
            cell.control().clear_name();
        }
        Some(pid)
    }

    /// The process registered under `name` on this node.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.names().read().unwrap_or_else(PoisonError::into_inner).get(name).copied()
    }

    /// Every registered name with its process, sorted by name.
    pub fn registered(&self) -> Vec<(String, Pid)> {
        let names = self.names().read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = names.iter().map(|(name, pid)| (name.clone(), *pid)).collect();
        all.sort();
        all
    }

    /// Removes `name` if it still points at `pid` (which has exited).
    pub(crate) fn forget_name(&self, name: &str, pid: Pid) {
        let mut names = self.names().write().unwrap_or_else(PoisonError::into_inner);
        if names.get(name) == Some(&pid) {
            names.remove(name);
        }
    }
}
