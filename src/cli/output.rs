//! How the client verbs answer: `-o table|json|yaml` ([`Format`]), the human tables, the exit
//! codes ([`Exit`], one table, also in `--help`) and the API's errors on stderr. A verb prints its
//! result with one call, [`emit`], and an error becomes its exit code in `main` through
//! [`Exit::of`] and [`describe`].

use super::say;
use comfy_table::{Table, presets};
use command_api::client::{ClientError, StatusCode};
use serde_json::Value;
use std::fmt::Write;

/// How a verb prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and short lines, for people.
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
    /// The API's JSON as YAML.
    Yaml,
}

/// A result that could not be printed in the asked format.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("failed to write JSON")]
    Json(#[source] serde_json::Error),
    #[error("failed to write YAML")]
    Yaml(#[source] serde_saphyr::SerializeError),
}

/// `value` in `format`: JSON and YAML as the API answered it, `table` as `human` draws it.
pub fn render(
    format: Format,
    value: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<String, OutputError> {
    match format {
        Format::Table => Ok(human(value).trim_end().to_owned()),
        Format::Json => serde_json::to_string_pretty(value).map_err(OutputError::Json),
        Format::Yaml => serde_saphyr::to_string(value)
            .map(|yaml| yaml.trim_end().to_owned())
            .map_err(OutputError::Yaml),
    }
}

/// Prints `value` on stdout in `format` (see [`render`]).
pub fn emit(
    format: Format,
    value: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<(), OutputError> {
    say(render(format, value, human)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Exit codes.

/// What the process's exit code says. Clap answers 2 for a bad command line by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Error,
    Usage,
    NotFound,
    Conflict,
    Unauthorized,
    Unreachable,
    EnvironmentFailed,
}

impl Exit {
    pub const ALL: [Exit; 8] = [
        Exit::Ok,
        Exit::Error,
        Exit::Usage,
        Exit::NotFound,
        Exit::Conflict,
        Exit::Unauthorized,
        Exit::Unreachable,
        Exit::EnvironmentFailed,
    ];

    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::NotFound => 3,
            Exit::Conflict => 4,
            Exit::Unauthorized => 5,
            Exit::Unreachable => 6,
            Exit::EnvironmentFailed => 7,
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "done (a watched environment ended ready or destroyed)",
            Exit::Error => "any other error (a refused document, a bad config file, ...)",
            Exit::Usage => "a bad command line",
            Exit::NotFound => "no such environment",
            Exit::Conflict => "a conflict: the name is taken, or not allowed in this status",
            Exit::Unauthorized => "the API refused the token (unknown, or not allowed this)",
            Exit::Unreachable => "the API is unreachable or unavailable, or a --timeout passed",
            Exit::EnvironmentFailed => "the watched environment failed",
        }
    }

    /// The exit code an error of a verb ends the process with.
    pub fn of(error: &anyhow::Error) -> Exit {
        match error.downcast_ref::<ClientError>() {
            Some(ClientError::Connect { .. } | ClientError::Stream(_)) => Exit::Unreachable,
            Some(ClientError::Api { status, .. }) => Exit::of_status(*status),
            _ => Exit::Error,
        }
    }

    fn of_status(status: StatusCode) -> Exit {
        match status.as_u16() {
            404 => Exit::NotFound,
            409 => Exit::Conflict,
            401 | 403 => Exit::Unauthorized,
            502..=504 => Exit::Unreachable,
            _ => Exit::Error,
        }
    }
}

/// The exit codes, as `--help` lists them.
pub fn exit_codes_help() -> String {
    let mut help = String::from("Exit codes:");
    for exit in Exit::ALL {
        let _ = write!(help, "\n  {}  {}", exit.code(), exit.meaning());
    }
    help
}

/// What stderr says of a failed verb: the API's error body in plain words (its code, message
/// and each detail with its path), else the error and its causes.
pub fn describe(error: &anyhow::Error) -> String {
    if let Some(ClientError::Api { status, body }) = error.downcast_ref::<ClientError>() {
        return api_error(*status, body);
    }
    format!("error: {error:#}")
}

/// An error body `{"error": {code, message, details: [{path, message}]}}`, or the raw body
/// when it is not one.
fn api_error(status: StatusCode, body: &str) -> String {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let (Some(code), Some(message)) = (error["code"].as_str(), error["message"].as_str()) else {
        return format!("error: the API answered {status}: {}", body.trim());
    };
    let mut out = format!("error: {code}: {message} ({})", status.as_u16());
    for detail in error["details"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "\n  {}: {}",
            str_of(&detail["path"]),
            str_of(&detail["message"])
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tables.

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A table without borders, a header row and columns separated by spaces (as `kubectl get`).
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    table
}

fn lines_of(table: &Table) -> String {
    table
        .lines()
        .map(|line| line.trim_end().trim_start_matches(' ').to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET /v1/environments`: one row per environment.
pub fn list(value: &Value) -> String {
    let mut rows = table(&["ID", "NAME", "STATUS", "PROVIDER", "COST/MONTH", "CREATED"]);
    let items = value["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for item in items {
        rows.add_row(vec![
            str_of(&item["id"]),
            str_of(&item["name"]),
            str_of(&item["status"]),
            str_of(&item["provider"]),
            &*money(&item["cost"]),
            str_of(&item["created_at"]),
        ]);
    }
    if items.is_empty() {
        return "no environments".to_owned();
    }
    let mut out = lines_of(&rows);
    if let Some(cursor) = value["next_cursor"].as_str() {
        let _ = write!(out, "\n(more: next cursor {cursor})");
    }
    out
}

/// `token list`: one row per token, never the token itself.
pub fn tokens(value: &Value) -> String {
    let items = value["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        return "no tokens".to_owned();
    }
    let mut rows = table(&["ID", "NAME", "TENANT", "ROLE", "EXPIRES", "REVOKED"]);
    for item in items {
        rows.add_row(vec![
            str_of(&item["id"]),
            str_of(&item["name"]),
            str_of(&item["tenant"]),
            str_of(&item["role"]),
            str_of(&item["expires_at"]),
            item["revoked_at"].as_str().unwrap_or("-"),
        ]);
    }
    lines_of(&rows)
}

fn money(cost: &Value) -> String {
    match (cost["monthly_total"].as_str(), cost["currency"].as_str()) {
        (Some(total), Some(currency)) => format!("{total} {currency}"),
        _ => String::new(),
    }
}

/// `GET /v1/environments/{id}`: its fields, conditions and outputs.
pub fn environment(value: &Value) -> String {
    let mut fields = table(&["FIELD", "VALUE"]);
    for field in ["id", "name", "status", "provider"] {
        fields.add_row(vec![field, str_of(&value[field])]);
    }
    if let Some(operation) = value["operation"].as_object() {
        let step = operation
            .get("step")
            .or_else(|| operation.get("phase"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let id = operation
            .get("operation_id")
            .or_else(|| operation.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("");
        fields.add_row(vec!["operation", format!("{step} {id}").trim()]);
    }
    if !value["error"].is_null() {
        let error = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value["error"].to_string());
        fields.add_row(vec!["error", error.as_str()]);
    }
    fields.add_row(vec!["cost/month", &*money(&value["cost"])]);
    for field in ["created_at", "updated_at"] {
        fields.add_row(vec![field, str_of(&value[field])]);
    }
    let mut out = lines_of(&fields);
    if let Some(conditions) = value["conditions"].as_array().filter(|c| !c.is_empty()) {
        out.push_str("\n\n");
        out.push_str(&self::conditions(conditions));
    }
    if let Some(outputs) = value["outputs"].as_object().filter(|o| !o.is_empty()) {
        out.push_str("\n\n");
        out.push_str(&outputs_table(outputs));
    }
    out
}

/// The conditions `[{type, status, reason, message, last_transition_time}]`.
pub fn conditions(conditions: &[Value]) -> String {
    let mut rows = table(&["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"]);
    for condition in conditions {
        rows.add_row(vec![
            str_of(&condition["type"]),
            str_of(&condition["status"]),
            str_of(&condition["reason"]),
            str_of(&condition["last_transition_time"]),
            str_of(&condition["message"]),
        ]);
    }
    lines_of(&rows)
}

fn outputs_table(outputs: &serde_json::Map<String, Value>) -> String {
    let mut rows = table(&["OUTPUT", "VALUE"]);
    for (name, value) in outputs {
        let value = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        rows.add_row(vec![name.as_str(), value.as_str()]);
    }
    lines_of(&rows)
}

/// `GET /v1/environments/{id}/outputs`: `{id, name, status, outputs}`.
pub fn outputs(value: &Value) -> String {
    let header = format!(
        "{} ({}): {}",
        str_of(&value["name"]),
        str_of(&value["id"]),
        str_of(&value["status"])
    );
    match value["outputs"].as_object().filter(|o| !o.is_empty()) {
        Some(outputs) => format!("{header}\n\n{}", outputs_table(outputs)),
        None => format!("{header}\nno outputs yet"),
    }
}

/// `GET /v1/environments/{id}/history`: one row per event.
pub fn history(value: &Value) -> String {
    let mut rows = table(&["SEQ", "TYPE", "ACTOR", "RECORDED AT", "DETAIL"]);
    for event in value.as_array().into_iter().flatten() {
        let payload = &event["payload"];
        let detail = [
            payload["operation_id"].as_str().map(str::to_owned),
            payload["phase"].as_str().map(|p| format!("phase={p}")),
            payload["error"].as_str().map(|e| format!("error={e:?}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        rows.add_row(vec![
            event["sequence"].to_string(),
            str_of(&event["type"]).to_owned(),
            str_of(&event["metadata"]["actor"]).to_owned(),
            str_of(&event["recorded_at"]).to_owned(),
            detail,
        ]);
    }
    lines_of(&rows)
}

/// The answer of an accepted command (create, delete, retry): `{id, name, status, links}`.
pub fn accepted(value: &Value) -> String {
    format!(
        "{} {}: {}",
        str_of(&value["id"]),
        str_of(&value["name"]),
        str_of(&value["status"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn environment_json() -> Value {
        json!({
            "id": "env_01JDEMO", "name": "demo", "status": "ready", "provider": "sandbox",
            "operation": null, "error": null,
            "cost": {"currency": "USD", "monthly_total": "0.00"},
            "created_at": "2026-11-30T07:00:00.000000Z",
            "updated_at": "2026-11-30T07:00:09.000000Z",
            "conditions": [
                {"type": "InfraReady", "status": "True", "reason": "Applied", "message": "",
                 "last_transition_time": "2026-11-30T07:00:04.000000Z"},
                {"type": "AppReady", "status": "Unknown", "reason": "Requested", "message": "",
                 "last_transition_time": "2026-11-30T07:00:00.000000Z"}
            ],
            "outputs": {"endpoint": "https://demo.example.com", "cluster_name": "demo"}
        })
    }

    #[test]
    fn an_environment_is_a_table_of_fields_conditions_and_outputs() {
        insta::assert_snapshot!(environment(&environment_json()));
    }

    #[test]
    fn a_list_has_headers_and_a_row_per_environment() {
        let list = json!({"items": [environment_json()], "next_cursor": null});
        insta::assert_snapshot!(self::list(&list));
        assert_eq!(self::list(&json!({"items": []})), "no environments");
    }

    #[test]
    fn history_shows_each_event_with_its_operation_and_error() {
        let history = json!([
            {"sequence": 1, "type": "EnvironmentRequested", "payload": {},
             "metadata": {"actor": "admin"}, "recorded_at": "2026-11-30T07:00:00.000000Z"},
            {"sequence": 2, "type": "InfraApplyFailed",
             "payload": {"operation_id": "op_1", "error": "boom"},
             "metadata": {"actor": "executor"}, "recorded_at": "2026-11-30T07:00:03.000000Z"}
        ]);
        insta::assert_snapshot!(self::history(&history));
    }

    #[test]
    fn json_and_yaml_render_the_value_itself() {
        let value = environment_json();
        let json = render(Format::Json, &value, |_| unreachable!()).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), value);
        let yaml = render(Format::Yaml, &value, |_| unreachable!()).unwrap();
        assert_eq!(serde_saphyr::from_str::<Value>(&yaml).unwrap(), value);
        let table = render(Format::Table, &value, environment).unwrap();
        assert!(table.starts_with("FIELD"), "{table}");
    }

    #[test]
    fn an_api_error_is_printed_with_its_code_message_and_paths() {
        let body = r#"{"error": {"code": "validation_failed", "message": "the document is invalid",
            "details": [{"path": "name", "message": "use lowercase letters"}]}}"#;
        let error = anyhow::Error::new(ClientError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: body.to_owned(),
        });
        assert_eq!(
            describe(&error),
            "error: validation_failed: the document is invalid (422)\n  name: use lowercase letters"
        );
        assert_eq!(Exit::of(&error), Exit::Error);
        let raw = anyhow::Error::new(ClientError::Api {
            status: StatusCode::BAD_GATEWAY,
            body: "<html>bad gateway</html>".to_owned(),
        });
        assert!(describe(&raw).contains("<html>bad gateway</html>"));
        assert_eq!(Exit::of(&raw), Exit::Unreachable);
    }

    #[test]
    fn each_status_has_its_exit_code() {
        for (status, exit) in [
            (StatusCode::NOT_FOUND, 3),
            (StatusCode::CONFLICT, 4),
            (StatusCode::UNAUTHORIZED, 5),
            (StatusCode::FORBIDDEN, 5),
            (StatusCode::SERVICE_UNAVAILABLE, 6),
            (StatusCode::BAD_REQUEST, 1),
        ] {
            let error = anyhow::Error::new(ClientError::Api {
                status,
                body: String::new(),
            });
            assert_eq!(Exit::of(&error).code(), exit, "{status}");
        }
        let help = exit_codes_help();
        for exit in Exit::ALL {
            assert!(help.contains(&format!("  {}  ", exit.code())), "{help}");
        }
    }
}
