//! antwort's sandbox agent: the small server inside every sandbox image.
//!
//! # Layout
//! - [`search`]: file search (index + ranked chunks) and web search (providers, offline mode).

pub mod search;
