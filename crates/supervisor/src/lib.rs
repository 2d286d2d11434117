//! Supervisors (being written).
