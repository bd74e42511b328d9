//! docs/CONFIGURATION.md, generated from the clap definitions: every setting of every
//! subcommand with its environment variable, flag, default and help, and the secrets' help
//! text. The test `docs_configuration_md_is_generated_from_the_settings` (in `settings`)
//! compares it with the committed file, so the document cannot drift.

use super::{CLIENT_SECRETS_HELP, EXECUTOR_SECRETS_HELP, SECRETS_HELP};
use crate::cli::Cli;
use clap::CommandFactory;

/// One setting and the subcommands that read it.
struct Row {
    variable: String,
    flag: String,
    default: String,
    help: String,
    heading: String,
    subcommands: Vec<String>,
}

/// The document's text.
pub(super) fn configuration_reference() -> String {
    let mut rows = Vec::new();
    visit(&Cli::command(), "", &mut rows);
    let mut out = String::from(
        "# Configuration\n\n\
         <!-- GENERATED from src/settings.rs (the clap definitions) by the test\n\
         `docs_configuration_md_is_generated_from_the_settings`; do not edit. After changing a\n\
         setting run: UPDATE_DOCS=1 cargo test -p provisioner --bin provisioner configuration_md -->\n\n\
         Every setting is an environment variable and the same flag (secrets excepted: they are\n\
         read from the environment only). A blank variable counts as unset. `provisioner\n\
         <subcommand> --help` shows the same list for one subcommand.\n",
    );
    let mut headings: Vec<&str> = Vec::new();
    for row in &rows {
        if !headings.contains(&row.heading.as_str()) {
            headings.push(&row.heading);
        }
    }
    for heading in headings {
        out.push_str(&format!(
            "\n## {heading}\n\n| variable | flag | default | read by | what |\n|---|---|---|---|---|\n"
        ));
        for row in rows.iter().filter(|row| row.heading == heading) {
            out.push_str(&format!(
                "| `{}` | `{}` | {} | {} | {} |\n",
                row.variable,
                row.flag,
                if row.default.is_empty() {
                    "—".to_owned()
                } else {
                    format!("`{}`", row.default)
                },
                row.subcommands.join(", "),
                row.help,
            ));
        }
    }
    out.push_str(&format!(
        "\n## Secrets\n\n```text\n{SECRETS_HELP}\n\n{EXECUTOR_SECRETS_HELP}\n\n{CLIENT_SECRETS_HELP}\n```\n"
    ));
    out
}

/// Records the settings of `command` (at `path`, `""` for the root) and of its visible
/// subcommands.
fn visit(command: &clap::Command, path: &str, rows: &mut Vec<Row>) {
    let reader = if path.is_empty() {
        "all".to_owned()
    } else {
        path.to_owned()
    };
    for arg in command.get_arguments() {
        let Some(variable) = arg.get_env() else {
            continue;
        };
        let variable = variable.to_string_lossy().into_owned();
        if let Some(row) = rows.iter_mut().find(|row| row.variable == variable) {
            if !row.subcommands.contains(&reader) {
                row.subcommands.push(reader.clone());
            }
            continue;
        }
        let help = arg
            .get_help()
            .map(|help| help.to_string())
            .unwrap_or_default();
        rows.push(Row {
            variable,
            flag: arg
                .get_long()
                .map(|long| format!("--{long}"))
                .unwrap_or_default(),
            default: arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(","),
            help: help
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|"),
            heading: arg.get_help_heading().unwrap_or("General").to_owned(),
            subcommands: vec![reader.clone()],
        });
    }
    for subcommand in command.get_subcommands() {
        if subcommand.is_hide_set() {
            continue;
        }
        let path = if path.is_empty() {
            subcommand.get_name().to_owned()
        } else {
            format!("{path} {}", subcommand.get_name())
        };
        visit(subcommand, &path, rows);
    }
}
