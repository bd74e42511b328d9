//! The terraform stand-in's saved plans (`plan -out=FILE`, then `apply FILE`).
//!
//! A plan file holds what real ones hold, as JSON: the planned actions, a snapshot of the
//! configuration they were planned from (an apply of the file uses that snapshot, not the
//! workdir's current `main.tf.json`), and the prior state they were planned against — its
//! lineage and serial. An apply refuses a plan whose state changed since, with terraform's
//! diagnostics ("Saved plan is stale", "Saved plan does not match the given state").

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fsutil::{read_json, write_json_atomic};
use super::tfmodel::{Action, Config, State};
use super::{Error, Result};

/// Marks a file as one of the stand-in's plans.
pub const FORMAT: &str = "terraform-standin-plan/1";

/// One saved plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub terraform_version: String,
    /// Planned with `plan -destroy`: the apply destroys, and keeps no outputs.
    pub destroy: bool,
    pub prior_state: PriorState,
    /// The configuration the plan was made from (`None` for a destroy plan).
    pub config: Option<Value>,
    /// Exactly what the apply does, in order.
    pub actions: Vec<Action>,
}

/// The identity of a state snapshot, as terraform compares it between a plan and its apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorState {
    pub lineage: String,
    pub serial: u64,
}

impl PriorState {
    /// The workdir's state as a plan sees it: no state file yet is the empty lineage at serial
    /// 0, as in a real plan made before the first apply.
    pub fn of(state: &State, state_file_exists: bool) -> Self {
        if state_file_exists {
            PriorState {
                lineage: state.lineage.clone(),
                serial: state.serial,
            }
        } else {
            PriorState {
                lineage: String::new(),
                serial: 0,
            }
        }
    }

    /// Whether this is the state before any apply (a "first plan").
    fn is_empty(&self) -> bool {
        self.lineage.is_empty() && self.serial == 0
    }
}

impl SavedPlan {
    pub fn new(
        destroy: bool,
        prior_state: PriorState,
        config: Option<&Config>,
        actions: Vec<Action>,
    ) -> Self {
        SavedPlan {
            format: FORMAT.to_owned(),
            terraform_version: super::terraform::VERSION.to_owned(),
            destroy,
            prior_state,
            config: config.map(Config::to_value),
            actions,
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    /// Reads the plan at `path`; `given` is the path as the command line gave it, for the
    /// diagnostic terraform prints when a file is missing or not a plan.
    pub fn read(path: &Path, given: &str) -> Result<Self> {
        let failed = |detail: String| Error::Failed {
            summary: format!("Failed to load {given:?} as a plan file"),
            detail: vec![format!("Error: {detail}")],
        };
        if path.is_dir() {
            return Err(Error::Failed {
                summary: format!("Failed to load {given:?} as a plan file"),
                detail: vec![
                    "The specified path is a directory, not a plan file. You can use the global \
                     -chdir flag to use this directory as the configuration root."
                        .to_owned(),
                ],
            });
        }
        let plan: Option<Value> = read_json(path).map_err(|e| match e {
            Error::Json { .. } => failed("the file is not a saved plan".to_owned()),
            other => other,
        })?;
        let Some(plan) = plan else {
            return Err(failed(format!("stat {given}: no such file or directory")));
        };
        if plan.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(failed("the file is not a saved plan".to_owned()));
        }
        serde_json::from_value(plan).map_err(|e| failed(format!("invalid plan: {e}")))
    }

    /// Refuses to apply this plan to `current` when the state changed since the plan was made,
    /// with terraform's own diagnostics.
    pub fn check_still_current(&self, current: &PriorState) -> Result<()> {
        let planned = &self.prior_state;
        if !planned.is_empty() && planned.lineage != current.lineage {
            return Err(Error::Failed {
                summary: "Saved plan does not match the given state".to_owned(),
                detail: vec![
                    "The given plan file can not be applied because it was created from a \
                     different state lineage."
                        .to_owned(),
                ],
            });
        }
        if planned.serial != current.serial {
            return Err(Error::Failed {
                summary: "Saved plan is stale".to_owned(),
                detail: vec![
                    "The given plan file can no longer be applied because the state was changed \
                     by another operation after the plan was created."
                        .to_owned(),
                ],
            });
        }
        Ok(())
    }

    /// The configuration snapshot, parsed.
    pub fn config(&self) -> Result<Option<Config>> {
        self.config
            .as_ref()
            .map(|value| Config::parse(&value.to_string()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_against(lineage: &str, serial: u64) -> SavedPlan {
        SavedPlan::new(
            false,
            PriorState {
                lineage: lineage.to_owned(),
                serial,
            },
            None,
            Vec::new(),
        )
    }

    fn state(lineage: &str, serial: u64) -> PriorState {
        PriorState {
            lineage: lineage.to_owned(),
            serial,
        }
    }

    #[test]
    fn a_plan_applies_only_to_the_state_it_was_made_against() {
        let plan = plan_against("l1", 3);
        plan.check_still_current(&state("l1", 3)).unwrap();
        let stale = plan.check_still_current(&state("l1", 4)).unwrap_err();
        assert_eq!(stale.to_string(), "Saved plan is stale");
        let other = plan.check_still_current(&state("l2", 3)).unwrap_err();
        assert_eq!(
            other.to_string(),
            "Saved plan does not match the given state"
        );
    }

    #[test]
    fn a_first_plan_is_stale_once_anything_was_applied() {
        let plan = plan_against("", 0);
        plan.check_still_current(&state("", 0)).unwrap();
        let stale = plan.check_still_current(&state("l1", 1)).unwrap_err();
        assert_eq!(stale.to_string(), "Saved plan is stale");
    }

    #[test]
    fn missing_and_foreign_files_are_not_plans() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SavedPlan::read(&dir.path().join("nope"), "nope").unwrap_err();
        let Error::Failed { summary, detail } = missing else {
            panic!("{missing:?}")
        };
        assert_eq!(summary, "Failed to load \"nope\" as a plan file");
        assert_eq!(detail, ["Error: stat nope: no such file or directory"]);
        std::fs::write(dir.path().join("x.json"), r#"{"resource": {}}"#).unwrap();
        assert!(SavedPlan::read(&dir.path().join("x.json"), "x.json").is_err());
        std::fs::write(dir.path().join("garbage"), "PK\u{3}\u{4}").unwrap();
        assert!(SavedPlan::read(&dir.path().join("garbage"), "garbage").is_err());
        assert!(SavedPlan::read(dir.path(), ".").is_err());
    }

    #[test]
    fn a_plan_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(r#"{"resource": {"aws_vpc": {"main": {}}}}"#).unwrap();
        let plan = SavedPlan::new(false, state("l", 2), Some(&config), Vec::new());
        let path = dir.path().join("tfplan");
        plan.write(&path).unwrap();
        let read = SavedPlan::read(&path, "tfplan").unwrap();
        assert_eq!(read, plan);
        assert_eq!(
            read.config().unwrap().unwrap().to_value(),
            config.to_value()
        );
    }
}
