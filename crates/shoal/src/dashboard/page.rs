//! The page `GET /` serves: one HTML document with its style and script inline, which polls
//! the JSON API every second and draws what it reads (no external fetch, no framework). Text
//! from the API goes into the page as text nodes, never as markup.

/// The page.
pub(super) const HTML: &str = include_str!("page.html");
