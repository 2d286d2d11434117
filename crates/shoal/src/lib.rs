//! The Shoal facade (being written).
