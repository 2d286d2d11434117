//! The overlay heals after any partition or loss (issue 15, points 1, 2 and 5).
