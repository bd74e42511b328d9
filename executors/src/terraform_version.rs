//! The start-up check of the `aws` provider's Terraform: the configured binary must run and be
//! new enough (S3-native state locking, `use_lockfile`, arrived in Terraform 1.10 and in
//! OpenTofu 1.10). An executor configured for `aws` refuses to start without it, with a message
//! that names the binary, what it found and what to do.

use std::time::Duration;

use nix::sys::signal::Signal;
use semver::Version;

use crate::process::Program;

/// The oldest release of either flavour the rendered configuration works with.
pub const MINIMUM: Version = Version::new(1, 10, 0);
/// How long `version -json` may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Which Terraform the executor runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    #[default]
    Terraform,
    OpenTofu,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Terraform => "Terraform",
            Flavour::OpenTofu => "OpenTofu",
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "terraform" => Ok(Flavour::Terraform),
            "tofu" | "opentofu" => Ok(Flavour::OpenTofu),
            other => Err(format!("unknown flavour {other:?}; use terraform or tofu")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("{flavour} at {program} could not run: {detail}; {hint}", flavour = flavour.name())]
    NotRunnable {
        flavour: Flavour,
        program: String,
        detail: String,
        hint: String,
    },
    #[error(
        "{flavour} at {program} did not tell its version (`version -json`): {detail}",
        flavour = flavour.name()
    )]
    Unreadable {
        flavour: Flavour,
        program: String,
        detail: String,
    },
    #[error(
        "{flavour} at {program} is {found}, older than {MINIMUM} (S3-native state locking); \
         install {flavour} >= {MINIMUM}",
        flavour = flavour.name()
    )]
    TooOld {
        flavour: Flavour,
        program: String,
        found: Version,
    },
}

/// Runs `<program> version -json` and checks the version it reports.
pub async fn check(program: &Program, flavour: Flavour) -> Result<Version, VersionError> {
    let shown = program.path.display().to_string();
    let mut command = child_process::command(&program.path, Signal::SIGKILL, &program.inherit);
    command
        .args(&program.leading_args)
        .args(["version", "-json"])
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(std::process::Stdio::null());
    let not_runnable = |detail: String| VersionError::NotRunnable {
        flavour,
        program: shown.clone(),
        detail,
        hint: program.install_hint.clone(),
    };
    let output = match tokio::time::timeout(TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(not_runnable(e.to_string())),
        Err(_) => return Err(not_runnable(format!("no answer within {TIMEOUT:?}"))),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(not_runnable(format!(
            "{}: {}",
            output.status,
            stderr.trim().chars().take(300).collect::<String>()
        )));
    }
    let found = parse(&output.stdout).map_err(|detail| VersionError::Unreadable {
        flavour,
        program: shown.clone(),
        detail,
    })?;
    if cmp_ignoring_pre(&found, &MINIMUM).is_lt() {
        return Err(VersionError::TooOld {
            flavour,
            program: shown,
            found,
        });
    }
    Ok(found)
}

/// The `terraform_version` of `version -json` (both flavours print that key).
pub fn parse(stdout: &[u8]) -> Result<Version, String> {
    #[derive(serde::Deserialize)]
    struct Output {
        terraform_version: String,
    }
    let output: Output = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    Version::parse(output.terraform_version.trim_start_matches('v')).map_err(|e| e.to_string())
}

/// A pre-release of 1.10.0 has what 1.10.0 has, for this purpose.
fn cmp_ignoring_pre(a: &Version, b: &Version) -> std::cmp::Ordering {
    (a.major, a.minor, a.patch).cmp(&(b.major, b.minor, b.patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_flavours_output() {
        let terraform = br#"{"terraform_version":"1.10.3","platform":"linux_amd64","provider_selections":{},"terraform_outdated":false}"#;
        assert_eq!(parse(terraform).unwrap(), Version::new(1, 10, 3));
        let tofu = br#"{"terraform_version":"1.10.0-beta1","platform":"linux_amd64","provider_selections":{},"terraform_outdated":false}"#;
        let version = parse(tofu).unwrap();
        assert!(cmp_ignoring_pre(&version, &MINIMUM).is_eq());
        assert!(parse(b"Terraform v1.10.3").is_err());
    }

    #[test]
    fn flavours_by_name() {
        assert_eq!("tofu".parse::<Flavour>(), Ok(Flavour::OpenTofu));
        assert_eq!("terraform".parse::<Flavour>(), Ok(Flavour::Terraform));
        assert!("pulumi".parse::<Flavour>().is_err());
    }

    fn script(dir: &std::path::Path, body: &str) -> Program {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("terraform");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Program::new(path, "install it")
    }

    #[tokio::test]
    async fn an_old_terraform_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let old = script(dir.path(), r#"echo '{"terraform_version":"1.9.8"}'"#);
        let error = check(&old, Flavour::Terraform).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, VersionError::TooOld { .. }), "{message}");
        assert!(
            message.contains("1.9.8") && message.contains("1.10.0"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_new_enough_one_passes_and_a_missing_one_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let new = script(dir.path(), r#"echo '{"terraform_version":"1.11.0"}'"#);
        assert_eq!(
            check(&new, Flavour::OpenTofu).await.unwrap(),
            Version::new(1, 11, 0)
        );
        let missing = Program::new(dir.path().join("nope"), "install OpenTofu on PATH");
        let message = check(&missing, Flavour::OpenTofu)
            .await
            .unwrap_err()
            .to_string();
        assert!(message.contains("install OpenTofu on PATH"), "{message}");
        assert!(message.starts_with("OpenTofu at"), "{message}");
    }
}
