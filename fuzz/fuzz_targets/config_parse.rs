//! Arbitrary bytes through the MetaConfig parser (`domain::config::parse`), as YAML and as JSON.
//!
//! Beyond "it does not panic", every input is held to what the API promises about the parser:
//! - the size limit: `TooLarge` exactly when the text is longer than `MAX_DOCUMENT_BYTES`;
//! - an accepted document's spec, written back as JSON and as YAML, parses to the same spec
//!   (the spec is stored in events as JSON and shown back to users as YAML);
//! - a text accepted as JSON is accepted as YAML too, as the same spec (YAML 1.2 reads JSON);
//! - every field error names its path — empty only for a document-level error, which is then
//!   the only one — and its message is short and worded like the others;
//! - a syntax error says which format failed and is short (client text in it is cut short).
#![no_main]

use domain::config::{ConfigError, FieldError, Format, MAX_DOCUMENT_BYTES, parse};
use domain::spec::EnvironmentSpec;
use libfuzzer_sys::fuzz_target;

/// The longest message an error may have: the longest fixed text (the list of AWS regions) and
/// a quoted client value cut short fit well within it.
const MAX_MESSAGE_CHARS: usize = 1024;
/// The longest path: three levels of schema and one unknown key, quoted and cut short.
const MAX_PATH_CHARS: usize = 128;
/// The top-level fields; any other first path segment is an unknown field.
const TOP_LEVEL: &[&str] = &["name", "cloud", "cluster", "data", "beta9"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let from_yaml = check(&text, Format::Yaml);
    let from_json = check(&text, Format::Json);
    if let Ok(spec) = &from_json {
        assert_eq!(
            from_yaml.as_ref(),
            Ok(spec),
            "accepted as JSON but not as the same spec as YAML"
        );
    }
    // The limit counts bytes, whatever they are: one more than the limit is refused unread.
    if data.len().is_multiple_of(64) {
        let mut over = text.into_owned();
        over.extend(std::iter::repeat_n(
            ' ',
            (MAX_DOCUMENT_BYTES + 1).saturating_sub(over.len()),
        ));
        for format in [Format::Yaml, Format::Json] {
            assert_eq!(
                parse(&over, format),
                Err(ConfigError::TooLarge {
                    limit: MAX_DOCUMENT_BYTES
                })
            );
        }
    }
});

/// Parses `text` as `format` and checks the answer's properties; hands back the answer.
fn check(text: &str, format: Format) -> Result<EnvironmentSpec, ConfigError> {
    let result = parse(text, format);
    let too_large = matches!(result, Err(ConfigError::TooLarge { .. }));
    assert_eq!(
        too_large,
        text.len() > MAX_DOCUMENT_BYTES,
        "{format:?}: {result:?}"
    );
    match &result {
        Ok(spec) => round_trip(spec),
        Err(ConfigError::TooLarge { limit }) => assert_eq!(*limit, MAX_DOCUMENT_BYTES),
        Err(ConfigError::Syntax(message)) => {
            let prefix = match format {
                Format::Yaml => "invalid yaml: ",
                Format::Json => "invalid json: ",
            };
            assert!(message.starts_with(prefix), "{format:?}: {message:?}");
            assert_short(message, MAX_MESSAGE_CHARS, "syntax error");
        }
        Err(ConfigError::Invalid(errors)) => field_errors(errors),
    }
    result
}

/// The spec written as JSON and as YAML reads back as itself.
fn round_trip(spec: &EnvironmentSpec) {
    let json = serde_json::to_string(spec).expect("a spec serializes to json");
    assert_eq!(
        parse(&json, Format::Json).as_ref(),
        Ok(spec),
        "json: {json}"
    );
    let yaml = serde_saphyr::to_string(spec).expect("a spec serializes to yaml");
    assert_eq!(
        parse(&yaml, Format::Yaml).as_ref(),
        Ok(spec),
        "yaml: {yaml}"
    );
}

fn field_errors(errors: &[FieldError]) {
    assert!(!errors.is_empty(), "invalid without a reason");
    for error in errors {
        let FieldError { path, message } = error;
        if path.is_empty() {
            assert_eq!(
                errors.len(),
                1,
                "a document-level error among others: {errors:?}"
            );
        } else if !TOP_LEVEL
            .iter()
            .any(|top| path == top || path.starts_with(&format!("{top}.")))
        {
            assert!(message.starts_with("unknown field"), "{error:?}");
        }
        assert_short(path, MAX_PATH_CHARS, "path");
        assert!(!message.is_empty(), "{error:?}");
        assert!(
            !message.starts_with(char::is_uppercase),
            "messages start lowercase: {error:?}"
        );
        assert_short(message, MAX_MESSAGE_CHARS, "field error");
    }
}

fn assert_short(text: &str, max_chars: usize, what: &str) {
    let chars = text.chars().count();
    assert!(
        chars <= max_chars,
        "{what} of {chars} characters: {text:.300}..."
    );
}
