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
}
