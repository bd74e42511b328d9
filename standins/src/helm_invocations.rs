//! The helm stand-in's record of its invocations, a test-tool feature: every run appends one
//! entry to `.standin/helm-invocations.json` (a JSON array, rewritten atomically under the
//! workdir mutex) before it does anything else — its arguments, and for each `--values` file
//! its path, its file mode and its values with every string leaf replaced by
//! `sha256:<hex>` of the string. Tests see which secret reached helm by comparing hashes, and
//! no secret lands in the clear in the workdir (which the sandbox keeps after a destroy).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Result;
use super::fsutil::{WorkdirMutex, now_rfc3339, read_json, standin_path, write_json_atomic};

pub const INVOCATIONS_FILE: &str = "helm-invocations.json";

/// One run of the helm stand-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// The arguments after the program name, as given.
    pub args: Vec<String>,
    pub pid: u32,
    pub invoked_at: String,
    /// One per `--values` file of an `upgrade`, in order.
    #[serde(default)]
    pub values_files: Vec<ValuesFile>,
}

/// A `--values` file as helm found it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValuesFile {
    /// As given on the command line.
    pub path: String,
    /// Its permission bits in octal (`"0600"`); `None` when it could not be read.
    pub mode: Option<String>,
    /// Its JSON values, hashed ([`hashed`]); a file that is not JSON: the hash of its whole
    /// text, as one string; `None` when it could not be read.
    pub values: Option<Value>,
}

impl ValuesFile {
    /// Reads the file at `path` (relative to `workdir`).
    fn read(workdir: &Path, path: &Path) -> Self {
        let full = workdir.join(path);
        let mode = std::fs::metadata(&full)
            .ok()
            .map(|meta| format!("{:04o}", meta.permissions().mode() & 0o7777));
        let values = std::fs::read_to_string(&full).ok().map(|text| {
            serde_json::from_str::<Value>(&text)
                .map_or_else(|_| Value::String(sha256(&text)), |values| hashed(&values))
        });
        ValuesFile {
            path: path.display().to_string(),
            mode,
            values,
        }
    }
}

/// `sha256:<lower-case hex>` of `text`.
pub fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// `value` with every string leaf replaced by its [`sha256`]; keys, numbers, booleans and
/// nulls kept.
pub fn hashed(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(sha256(text)),
        Value::Array(items) => Value::Array(items.iter().map(hashed).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), hashed(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Appends this run to the record of `workdir`.
pub fn record(workdir: &Path, args: &[String], values_files: &[PathBuf]) -> Result<()> {
    let invocation = Invocation {
        args: args.to_vec(),
        pid: std::process::id(),
        invoked_at: now_rfc3339(),
        values_files: values_files
            .iter()
            .map(|path| ValuesFile::read(workdir, path))
            .collect(),
    };
    let _mutex = WorkdirMutex::lock(workdir)?;
    let path = standin_path(workdir, INVOCATIONS_FILE)?;
    let mut invocations: Vec<Invocation> = read_json(&path)?.unwrap_or_default();
    invocations.push(invocation);
    write_json_atomic(&path, &invocations)
}

/// Every recorded run of `workdir`, oldest first; none when helm never ran there.
pub fn read(workdir: &Path) -> Result<Vec<Invocation>> {
    let path = workdir.join(super::STANDIN_DIR).join(INVOCATIONS_FILE);
    Ok(read_json(&path)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_leaves_are_hashed_and_the_shape_kept() {
        let values = json!({
            "config": {"password": "s3cret", "port": 5432, "tls": true, "hosts": ["a", null]},
        });
        assert_eq!(
            hashed(&values),
            json!({
                "config": {
                    "password": sha256("s3cret"),
                    "port": 5432,
                    "tls": true,
                    "hosts": [sha256("a"), null],
                },
            })
        );
        // The well-known digest of "abc".
        assert_eq!(
            sha256("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn each_run_is_appended_with_its_values_files_mode_and_hashed_values() {
        let dir = tempfile::tempdir().unwrap();
        let values = dir.path().join("v.json");
        std::fs::write(&values, r#"{"password": "s3cret"}"#).unwrap();
        std::fs::set_permissions(&values, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("v.yaml"), "password: s3cret\n").unwrap();
        let args = |line: &str| -> Vec<String> { line.split(' ').map(str::to_owned).collect() };
        record(dir.path(), &args("version"), &[]).unwrap();
        record(
            dir.path(),
            &args("upgrade x c -f v.json -f v.yaml -f gone.json"),
            &["v.json", "v.yaml", "gone.json"].map(PathBuf::from),
        )
        .unwrap();
        let runs = read(dir.path()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].args, ["version"]);
        let files = &runs[1].values_files;
        assert_eq!(files[0].path, "v.json");
        assert_eq!(files[0].mode.as_deref(), Some("0600"));
        assert_eq!(files[0].values, Some(json!({"password": sha256("s3cret")})));
        assert_eq!(files[1].values, Some(json!(sha256("password: s3cret\n"))));
        assert_eq!((files[2].mode.as_deref(), &files[2].values), (None, &None));
        let text =
            std::fs::read_to_string(dir.path().join(".standin").join(INVOCATIONS_FILE)).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
    }
}
