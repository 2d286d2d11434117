//! [`RegistryKey`]: a name or a lock key, checked once when it is made.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest key, in bytes of UTF-8. A key names a Paxos register and travels in every request
/// about it, so it is bounded like everything else that comes from a user.
pub const MAX_KEY_BYTES: usize = 1024;

/// A key of the registry (a name or a lock): non-empty UTF-8 of at most [`MAX_KEY_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistryKey(String);

/// Why a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("a registry key may not be empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("a registry key of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// [`MAX_KEY_BYTES`].
        max: usize,
    },
}

impl RegistryKey {
    /// `key`, if it is not empty and within [`MAX_KEY_BYTES`].
    ///
    /// ```
    /// use shoal_registry::core::{KeyError, RegistryKey};
    ///
    /// assert_eq!(RegistryKey::new("room/42").unwrap().as_str(), "room/42");
    /// assert_eq!(RegistryKey::new(""), Err(KeyError::Empty));
    /// assert!(matches!(RegistryKey::new("x".repeat(2000)), Err(KeyError::TooLong { .. })));
    /// ```
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong { len: key.len(), max: MAX_KEY_BYTES });
        }
        Ok(Self(key))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RegistryKey {
    type Error = KeyError;

    fn try_from(key: String) -> Result<Self, KeyError> {
        Self::new(key)
    }
}

impl From<RegistryKey> for String {
    fn from(key: RegistryKey) -> String {
        key.0
    }
}

impl fmt::Display for RegistryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
