//! Exactly-once delivery to handlers and bounded anti-entropy (issue 15, points 3, 4 and 7).
