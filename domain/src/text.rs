//! Client values as they appear in messages: quoted, escaped and cut short, so an error never
//! echoes a huge or unprintable input back.

/// The most characters of a client's text a message shows.
pub const SHOWN_MAX_CHARS: usize = 40;

/// A client's text quoted for a message (control characters escaped), cut short when long.
pub fn shown(text: &str) -> String {
    let head = truncated(text, SHOWN_MAX_CHARS);
    if head.len() == text.len() {
        format!("{text:?}")
    } else {
        format!("{head:?}...")
    }
}

/// The first `max_chars` characters of `text` (all of it when shorter).
pub fn truncated(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A number for a message: as written when short, in exponent notation when it would be long
/// (`1e308`, not 309 digits).
pub fn number(value: f64) -> String {
    const MAX_PLAIN_CHARS: usize = 20;
    let plain = value.to_string();
    if plain.len() <= MAX_PLAIN_CHARS {
        plain
    } else {
        format!("{value:e}")
    }
}

/// An error and its sources, `: `-separated: a one-line reason for logs and records.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_cuts_long_text_and_escapes_control_characters() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"x".repeat(50)), format!("\"{}\"...", "x".repeat(40)));
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncated("héllo", 2), "hé");
        assert_eq!(truncated("hé", 5), "hé");
        assert_eq!(truncated("", 0), "");
    }

    #[test]
    fn numbers_are_short_whatever_their_magnitude() {
        assert_eq!(number(600.0), "600");
        assert_eq!(number(-1.5), "-1.5");
        assert_eq!(number(1e308), "1e308");
        assert_eq!(number(-1.2345678901234568e29), "-1.2345678901234568e29");
        assert_eq!(number(5e-324), "5e-324");
    }

    #[test]
    fn an_error_chain_names_every_source_in_order() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner(#[source] std::io::Error);
        let error = Outer(Inner(std::io::Error::other("root")));
        assert_eq!(error_chain(&error), "outer: inner: root");
    }
}
