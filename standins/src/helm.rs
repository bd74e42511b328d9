//! The helm stand-in: `version`, `upgrade --install`, `rollback`, `uninstall`, `status`, `list`,
//! with releases kept in `.standin/helm-releases.json` of the working directory, and every run
//! recorded in `.standin/helm-invocations.json` ([`helm_invocations`]).
//!
//! As Helm 3 does, an upgrade records its release as `pending-install` or `pending-upgrade`
//! before it works and `deployed` or `failed` at its end; a run killed in between (SIGKILL)
//! leaves it pending, and every later upgrade of it fails with [`PENDING_ERROR`] until a
//! `rollback` (to the revision kept before the upgrade) or an `uninstall` clears it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::{self, Step, take_failure};
use super::fsutil::{WorkdirMutex, now_rfc3339, read_json, standin_path, write_json_atomic};
use super::helm_invocations;
use super::interrupt::Interrupt;
use super::overlap::{Outcome, Run};
use super::{Console, Error, Result, parse_go_duration};

/// The helm version the stand-in claims to be.
pub const VERSION: &str = "v3.16.2+standin";
pub const RELEASES_FILE: &str = "helm-releases.json";
/// The release whose install is the bootstrap step: it takes `apply_seconds` and fails when
/// `simulate.fail` is `bootstrap`.
pub const BOOTSTRAP_RELEASE: &str = "beta9";
/// How long installing or removing any other release takes.
pub const QUICK_STEP: Duration = Duration::from_millis(50);
/// Helm's default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Helm's error for an upgrade of a release that another operation left pending.
pub const PENDING_ERROR: &str = "another operation (install/upgrade/rollback) is in progress";
/// Namespaces every cluster has.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

const USAGE: &str = "\
Usage: helm-standin <command> [flags]

Commands:
  version [--short]
  upgrade [--install|-i] RELEASE CHART [--namespace|-n NS] [--create-namespace]
          [--repo URL] [--values|-f FILE]... [--set k=v]... [--version V] [--wait] [--atomic]
          [--timeout D] [--kubeconfig PATH]
  rollback RELEASE [REVISION] [--namespace|-n NS] [--kubeconfig PATH] [--wait] [--timeout D]
  uninstall RELEASE [--namespace|-n NS] [--kubeconfig PATH] [--wait] [--timeout D]
            [--ignore-not-found]
  status RELEASE [--namespace|-n NS] [--kubeconfig PATH] [-o|--output json|table]
  list [--all-namespaces|-A] [--namespace|-n NS] [--kubeconfig PATH] [-o|--output json|table]

Flags take their value as the next argument or after '='. D is a Go duration (5m0s).
Timing and fault injection: simulate.json in the working directory.";

/// One installed release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub release: String,
    pub namespace: String,
    /// The chart's name (`beta9` for `beta9/beta9`, `./charts/beta9` or `beta9-1.0.0.tgz`).
    pub chart: String,
    /// The chart as given on the command line.
    pub chart_ref: String,
    pub chart_version: String,
    pub revision: u32,
    /// `deployed`, `failed`, or while an upgrade works (or after it was killed)
    /// `pending-install` / `pending-upgrade`.
    pub status: String,
    pub values_files: Vec<String>,
    pub set: Vec<String>,
    pub first_deployed: String,
    pub updated: String,
    pub description: String,
    /// The revision before this one (without its own previous), which `rollback` restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Release>>,
}

impl Release {
    /// Set while an upgrade works on it, and after one was killed.
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending-")
    }

    /// This release as the previous revision of the next one.
    fn as_previous(&self) -> Box<Release> {
        Box::new(Release {
            previous: None,
            ..self.clone()
        })
    }
}

/// The contents of `.standin/helm-releases.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    #[serde(default)]
    pub releases: Vec<Release>,
    /// Namespaces created with `--create-namespace`.
    #[serde(default)]
    pub namespaces: BTreeSet<String>,
}

impl Store {
    pub fn load(workdir: &Path) -> Result<Self> {
        Ok(read_json(&standin_path(workdir, RELEASES_FILE)?)?.unwrap_or_default())
    }

    /// Writes the store (tests set up a cluster's releases with it).
    pub fn save(&self, workdir: &Path) -> Result<()> {
        write_json_atomic(&standin_path(workdir, RELEASES_FILE)?, self)
    }

    pub fn find(&self, namespace: &str, release: &str) -> Option<&Release> {
        self.releases
            .iter()
            .find(|r| r.namespace == namespace && r.release == release)
    }

    fn position(&self, namespace: &str, release: &str) -> Option<usize> {
        self.releases
            .iter()
            .position(|r| r.namespace == namespace && r.release == release)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        BUILTIN_NAMESPACES.contains(&namespace) || self.namespaces.contains(namespace)
    }

    /// Loads, changes and saves the store under the workdir mutex.
    fn update<T>(workdir: &Path, change: impl FnOnce(&mut Store) -> T) -> Result<T> {
        let _mutex = WorkdirMutex::lock(workdir)?;
        let mut store = Store::load(workdir)?;
        let result = change(&mut store);
        store.save(workdir)?;
        Ok(result)
    }
}

/// `helm upgrade` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upgrade {
    pub release: String,
    pub chart: String,
    pub namespace: String,
    pub install: bool,
    pub create_namespace: bool,
    pub values: Vec<PathBuf>,
    pub set: Vec<String>,
    pub chart_version: Option<String>,
    pub wait: bool,
    pub atomic: bool,
    pub timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Version {
        short: bool,
    },
    Help,
    Upgrade(Upgrade),
    Uninstall {
        release: String,
        namespace: String,
        kubeconfig: Option<PathBuf>,
        ignore_not_found: bool,
    },
    Rollback {
        release: String,
        /// `None` or `Some(0)`: the previous revision.
        revision: Option<u32>,
        namespace: String,
        kubeconfig: Option<PathBuf>,
    },
    Status {
        release: String,
        namespace: String,
        kubeconfig: Option<PathBuf>,
        json: bool,
    },
    List {
        all_namespaces: bool,
        namespace: String,
        kubeconfig: Option<PathBuf>,
        json: bool,
    },
}

/// Runs one helm command line in `cwd`, recorded first ([`helm_invocations`]); returns 0 on
/// success, 1 on any error.
pub fn run(args: &[String], cwd: &Path, interrupt: &Interrupt, console: &mut Console<'_>) -> u8 {
    let parsed = parse(args);
    let values_files = match &parsed {
        Ok(Command::Upgrade(upgrade)) => upgrade.values.as_slice(),
        _ => &[],
    };
    let result = helm_invocations::record(cwd, args, values_files)
        .and(parsed)
        .and_then(|command| execute(command, cwd, interrupt, console));
    match result {
        Ok(()) => 0,
        Err(Error::Usage(message)) => {
            console.err(format!("Error: {message}"));
            console.err("");
            console.err(USAGE);
            1
        }
        Err(Error::Interrupted) => {
            console.err("Error: context canceled");
            1
        }
        Err(Error::Failed { summary, detail }) => {
            console.err(format!("Error: {summary}"));
            for line in detail {
                console.err(line);
            }
            1
        }
        Err(other) => {
            console.err(format!("Error: {other}"));
            1
        }
    }
}

/// Flags that take a value: (long name, short name).
const VALUE_FLAGS: [(&str, Option<&str>); 8] = [
    ("namespace", Some("n")),
    ("values", Some("f")),
    ("set", None),
    ("timeout", None),
    ("kubeconfig", None),
    ("version", None),
    ("repo", None),
    ("output", Some("o")),
];
/// Boolean flags: (long name, short name).
const BOOL_FLAGS: [(&str, Option<&str>); 7] = [
    ("install", Some("i")),
    ("create-namespace", None),
    ("wait", None),
    ("atomic", None),
    ("all-namespaces", Some("A")),
    ("short", None),
    ("ignore-not-found", None),
];

/// The command line split into positional arguments and flags (by long name), flags anywhere.
#[derive(Default)]
struct Args {
    positional: Vec<String>,
    flags: Vec<(&'static str, Option<String>)>,
}

impl Args {
    fn split(args: &[String]) -> Result<Self> {
        let mut parsed = Args::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
                match long.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (long, None),
                }
            } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                match short.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (short, None),
                }
            } else {
                parsed.positional.push(arg.clone());
                continue;
            };
            let lookup = |table: &[(&'static str, Option<&str>)]| {
                table
                    .iter()
                    .find(|(long, short)| {
                        if arg.starts_with("--") {
                            *long == name
                        } else {
                            *short == Some(name)
                        }
                    })
                    .map(|(long, _)| *long)
            };
            if let Some(long) = lookup(&VALUE_FLAGS) {
                let value = match inline {
                    Some(value) => value,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| Error::Usage(format!("flag needs an argument: {arg}")))?,
                };
                parsed.flags.push((long, Some(value)));
            } else if let Some(long) = lookup(&BOOL_FLAGS) {
                match inline.as_deref() {
                    None | Some("true") => parsed.flags.push((long, None)),
                    Some("false") => {}
                    Some(_) => return Err(Error::Usage(format!("invalid flag value: {arg}"))),
                }
            } else {
                return Err(Error::Usage(format!("unknown flag: {arg}")));
            }
        }
        Ok(parsed)
    }

    /// Fails on any flag the command does not take.
    fn allow(&self, command: &str, allowed: &[&str]) -> Result<()> {
        match self.flags.iter().find(|(name, _)| !allowed.contains(name)) {
            Some((name, _)) => Err(Error::Usage(format!(
                "unknown flag for {command}: --{name}"
            ))),
            None => Ok(()),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }

    /// The last value of a flag, as with helm.
    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn namespace(&self) -> String {
        self.value("namespace").unwrap_or("default").to_owned()
    }

    fn kubeconfig(&self) -> Option<PathBuf> {
        self.value("kubeconfig").map(PathBuf::from)
    }

    /// `-o json` → true, `-o table` or none → false.
    fn json_output(&self) -> Result<bool> {
        match self.value("output") {
            None | Some("table") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(Error::Usage(format!(
                "invalid output format {other:?}: the stand-in supports json and table"
            ))),
        }
    }

    /// The positional arguments after the command; exactly `N` of them.
    fn exactly<const N: usize>(&self, usage: &str) -> Result<[String; N]> {
        <[String; N]>::try_from(self.positional[1..].to_vec())
            .map_err(|_| Error::Usage(format!("expected: {usage}")))
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command> {
    let args = Args::split(args)?;
    let Some(command) = args.positional.first() else {
        return Err(Error::Usage("no command given".to_owned()));
    };
    let command = match command.as_str() {
        "version" => {
            args.allow("version", &["short"])?;
            args.exactly::<0>("version [--short]")?;
            Command::Version {
                short: args.has("short"),
            }
        }
        "help" => Command::Help,
        "upgrade" => {
            args.allow(
                "upgrade",
                &[
                    "install",
                    "namespace",
                    "create-namespace",
                    "values",
                    "set",
                    "version",
                    "repo",
                    "wait",
                    "atomic",
                    "timeout",
                    "kubeconfig",
                ],
            )?;
            let [release, chart] = args.exactly::<2>("upgrade RELEASE CHART [flags]")?;
            let timeout = match args.value("timeout") {
                None => DEFAULT_TIMEOUT,
                Some(text) => parse_go_duration(text).ok_or_else(|| {
                    Error::Usage(format!("invalid --timeout {text:?}: expected e.g. 10m0s"))
                })?,
            };
            Command::Upgrade(Upgrade {
                release,
                chart,
                namespace: args.namespace(),
                install: args.has("install"),
                create_namespace: args.has("create-namespace"),
                values: args
                    .values("values")
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                set: args.values("set"),
                chart_version: args.value("version").map(str::to_owned),
                wait: args.has("wait"),
                atomic: args.has("atomic"),
                timeout,
                kubeconfig: args.kubeconfig(),
            })
        }
        "uninstall" => {
            args.allow(
                "uninstall",
                &[
                    "namespace",
                    "kubeconfig",
                    "wait",
                    "timeout",
                    "ignore-not-found",
                ],
            )?;
            let [release] = args.exactly::<1>("uninstall RELEASE [flags]")?;
            Command::Uninstall {
                release,
                namespace: args.namespace(),
                kubeconfig: args.kubeconfig(),
                ignore_not_found: args.has("ignore-not-found"),
            }
        }
        "rollback" => {
            args.allow("rollback", &["namespace", "kubeconfig", "wait", "timeout"])?;
            let usage = "rollback RELEASE [REVISION] [flags]";
            let (release, revision) = match &args.positional[1..] {
                [release] => (release.clone(), None),
                [release, revision] => {
                    let revision = revision.parse::<u32>().map_err(|_| {
                        Error::Usage(format!("invalid revision {revision:?}: expected a number"))
                    })?;
                    (release.clone(), Some(revision))
                }
                _ => return Err(Error::Usage(format!("expected: {usage}"))),
            };
            if let Some(text) = args.value("timeout")
                && parse_go_duration(text).is_none()
            {
                return Err(Error::Usage(format!(
                    "invalid --timeout {text:?}: expected e.g. 10m0s"
                )));
            }
            Command::Rollback {
                release,
                revision,
                namespace: args.namespace(),
                kubeconfig: args.kubeconfig(),
            }
        }
        "status" => {
            args.allow("status", &["namespace", "kubeconfig", "output"])?;
            let [release] = args.exactly::<1>("status RELEASE [flags]")?;
            Command::Status {
                release,
                namespace: args.namespace(),
                kubeconfig: args.kubeconfig(),
                json: args.json_output()?,
            }
        }
        "list" | "ls" => {
            args.allow(
                "list",
                &["all-namespaces", "namespace", "kubeconfig", "output"],
            )?;
            args.exactly::<0>("list [flags]")?;
            Command::List {
                all_namespaces: args.has("all-namespaces"),
                namespace: args.namespace(),
                kubeconfig: args.kubeconfig(),
                json: args.json_output()?,
            }
        }
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    Ok(command)
}

fn execute(
    command: Command,
    workdir: &Path,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<()> {
    match command {
        Command::Version { short: true } => console.out(VERSION),
        Command::Version { short: false } => console.out(format!(
            "version.BuildInfo{{Version:\"{VERSION}\", GitCommit:\"\", GitTreeState:\"clean\", GoVersion:\"go1.22.7\"}}"
        )),
        Command::Help => console.out(USAGE),
        Command::Upgrade(upgrade) => return upgrade_install(&upgrade, workdir, interrupt, console),
        Command::Uninstall {
            release,
            namespace,
            kubeconfig,
            ignore_not_found,
        } => {
            reach_cluster(workdir, kubeconfig.as_deref())?;
            return uninstall(
                workdir,
                &release,
                &namespace,
                ignore_not_found,
                interrupt,
                console,
            );
        }
        Command::Rollback {
            release,
            revision,
            namespace,
            kubeconfig,
        } => {
            reach_cluster(workdir, kubeconfig.as_deref())?;
            return rollback(workdir, &release, revision, &namespace, interrupt, console);
        }
        Command::Status {
            release,
            namespace,
            kubeconfig,
            json,
        } => {
            reach_cluster(workdir, kubeconfig.as_deref())?;
            let store = Store::load(workdir)?;
            let release = store
                .find(&namespace, &release)
                .ok_or_else(|| Error::failed("release: not found"))?;
            if json {
                console.out(status_json(release));
            } else {
                print_release(release, console);
            }
        }
        Command::List {
            all_namespaces,
            namespace,
            kubeconfig,
            json,
        } => {
            reach_cluster(workdir, kubeconfig.as_deref())?;
            let mut releases = Store::load(workdir)?.releases;
            releases.retain(|r| all_namespaces || r.namespace == namespace);
            releases.sort_by(|a, b| (&a.release, &a.namespace).cmp(&(&b.release, &b.namespace)));
            if json {
                let rows: Vec<Value> = releases.iter().map(list_row).collect();
                console.out(Value::Array(rows));
            } else {
                console.out("NAME\tNAMESPACE\tREVISION\tUPDATED\tSTATUS\tCHART\tAPP VERSION");
                for r in &releases {
                    console.out(format!(
                        "{}\t{}\t{}\t{}\t{}\t{}-{}\t",
                        r.release, r.namespace, r.revision, r.updated, r.status, r.chart, r.chart_version
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A kubeconfig given on the command line (or in `$KUBECONFIG`) must exist.
fn reach_cluster(workdir: &Path, kubeconfig: Option<&Path>) -> Result<()> {
    let from_env = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let candidates: Vec<PathBuf> = match (kubeconfig, &from_env) {
        (Some(path), _) => vec![workdir.join(path)],
        (None, Some(list)) => std::env::split_paths(list).collect(),
        (None, None) => return Ok(()),
    };
    if candidates.iter().any(|p| p.is_file()) {
        return Ok(());
    }
    Err(Error::failed(format!(
        "Kubernetes cluster unreachable: stat {}: no such file or directory",
        candidates
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    )))
}

/// `beta9` from `beta9/beta9`, `./charts/beta9/`, `oci://registry/beta9` or `beta9-1.2.3.tgz`.
fn chart_name(chart: &str) -> String {
    let last = chart
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(chart);
    let Some(stem) = last.strip_suffix(".tgz") else {
        return last.to_owned();
    };
    // name-1.2.3.tgz: drop the version after the last dash that precedes a digit.
    match stem.rfind('-') {
        Some(i) if stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => stem[..i].to_owned(),
        _ => stem.to_owned(),
    }
}

/// Checks the `--values` files and `--set` entries before anything changes.
fn check_inputs(upgrade: &Upgrade, workdir: &Path) -> Result<()> {
    for file in &upgrade.values {
        let path = workdir.join(file);
        match std::fs::metadata(&path) {
            Err(_) => {
                return Err(Error::failed(format!(
                    "open {}: no such file or directory",
                    file.display()
                )));
            }
            Ok(meta) if !meta.is_file() || meta.len() == 0 => {
                return Err(Error::failed(format!(
                    "failed to parse {}: the values file is empty",
                    file.display()
                )));
            }
            Ok(_) => {}
        }
    }
    match upgrade.set.iter().find(|s| !s.contains('=')) {
        Some(bad) => Err(Error::failed(format!(
            "failed parsing --set data: key {bad:?} has no value"
        ))),
        None => Ok(()),
    }
}

/// Why an upgrade did not complete.
enum Stop {
    Interrupted,
    TimedOut,
    Injected(String),
}

impl Stop {
    /// The error helm reports for it.
    fn reason(&self) -> &str {
        match self {
            Stop::Interrupted => "context canceled",
            Stop::TimedOut => "context deadline exceeded",
            Stop::Injected(message) => message,
        }
    }
}

fn upgrade_install(
    upgrade: &Upgrade,
    workdir: &Path,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<()> {
    reach_cluster(workdir, upgrade.kubeconfig.as_deref())?;
    check_inputs(upgrade, workdir)?;
    let simulate = faults::load(workdir)?;
    let name = &upgrade.release;
    let (exists, namespace_exists) = {
        let store = Store::load(workdir)?;
        (
            store.find(&upgrade.namespace, name).is_some(),
            store.namespace_exists(&upgrade.namespace),
        )
    };
    if !exists && !upgrade.install {
        return Err(Error::failed(format!(
            "UPGRADE FAILED: {name:?} has no deployed releases"
        )));
    }
    if !exists && !namespace_exists && !upgrade.create_namespace {
        return Err(Error::failed(format!(
            "INSTALLATION FAILED: create: failed to create: namespaces {:?} not found",
            upgrade.namespace
        )));
    }

    // Helm takes no state lock: its whole run changes the workdir's releases. Pending first,
    // as helm records it: a run killed from here on leaves the release pending.
    mark_pending(workdir, upgrade, &now_rfc3339())?;
    let mut run = Run::start(workdir, &format!("helm-upgrade:{name}"))?;
    run.enter_section();
    if !exists {
        console.out(format!(
            "Release {name:?} does not exist. Installing it now."
        ));
    }
    let bootstrap = name == BOOTSTRAP_RELEASE;
    let duration = if bootstrap {
        faults::step_duration(&simulate)
    } else {
        QUICK_STEP
    };
    let waits = upgrade.wait || upgrade.atomic;
    let stop = if waits && duration > upgrade.timeout {
        match interrupt.sleep(upgrade.timeout) {
            Ok(()) => Some(Stop::TimedOut),
            Err(_) => Some(Stop::Interrupted),
        }
    } else if interrupt.sleep(duration).is_err() {
        Some(Stop::Interrupted)
    } else if bootstrap {
        take_failure(workdir, &simulate, Step::Bootstrap)?.map(|f| Stop::Injected(f.to_string()))
    } else {
        None
    };

    let now = now_rfc3339();
    let recorded = Store::update(workdir, |store| record(store, upgrade, &now, stop.as_ref()));
    let outcome = match (&stop, &recorded) {
        (_, Err(_)) => Outcome::Failed,
        (None, Ok(_)) => Outcome::Succeeded,
        (Some(Stop::Interrupted), _) => Outcome::Interrupted,
        (Some(_), _) => Outcome::Failed,
    };
    run.finish(outcome)?;
    let release = recorded?;

    let reason = match &stop {
        None => {
            if exists {
                console.out(format!(
                    "Release {name:?} has been upgraded. Happy Helming!"
                ));
            }
            if let Some(release) = &release {
                print_release(release, console);
            }
            return Ok(());
        }
        Some(stop) => {
            if let Stop::Interrupted = stop {
                console.out(format!("Release {name} has been cancelled."));
            }
            stop.reason()
        }
    };
    let reason = if upgrade.atomic {
        format!(
            "release {name} failed, and has been {} due to atomic being set: {reason}",
            if exists { "rolled back" } else { "uninstalled" }
        )
    } else {
        reason.to_owned()
    };
    Err(Error::failed(format!("UPGRADE FAILED: {reason}")))
}

/// Records the release as `pending-install` or `pending-upgrade` before the upgrade works (with
/// the namespace, which helm creates first); fails, changing nothing, when another operation left
/// it pending.
fn mark_pending(workdir: &Path, upgrade: &Upgrade, now: &str) -> Result<()> {
    let _mutex = WorkdirMutex::lock(workdir)?;
    let mut store = Store::load(workdir)?;
    let position = store.position(&upgrade.namespace, &upgrade.release);
    let current = position.map(|i| &store.releases[i]);
    if current.is_some_and(Release::is_pending) {
        return Err(Error::failed(format!("UPGRADE FAILED: {PENDING_ERROR}")));
    }
    let (status, description) = match current {
        None => ("pending-install", "Initial install underway"),
        Some(_) => ("pending-upgrade", "Preparing upgrade"),
    };
    let pending = next_revision(upgrade, current, now, status, description.to_owned());
    match position {
        Some(i) => store.releases[i] = pending,
        None => store.releases.push(pending),
    }
    if upgrade.create_namespace {
        store.namespaces.insert(upgrade.namespace.clone());
    }
    store.save(workdir)
}

/// The revision an upgrade makes of `previous` (none for an install).
fn next_revision(
    upgrade: &Upgrade,
    previous: Option<&Release>,
    now: &str,
    status: &str,
    description: String,
) -> Release {
    Release {
        release: upgrade.release.clone(),
        namespace: upgrade.namespace.clone(),
        chart: chart_name(&upgrade.chart),
        chart_ref: upgrade.chart.clone(),
        chart_version: upgrade
            .chart_version
            .clone()
            .or_else(|| previous.map(|p| p.chart_version.clone()))
            .unwrap_or_else(|| "0.1.0".to_owned()),
        revision: previous.map_or(1, |p| p.revision + 1),
        status: status.to_owned(),
        values_files: upgrade
            .values
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        set: upgrade.set.clone(),
        first_deployed: previous.map_or_else(|| now.to_owned(), |p| p.first_deployed.clone()),
        updated: now.to_owned(),
        description,
        previous: previous.map(Release::as_previous),
    }
}

/// Records the upgrade's result in the store, over its pending revision; returns the release as
/// it now stands.
fn record(store: &mut Store, upgrade: &Upgrade, now: &str, stop: Option<&Stop>) -> Option<Release> {
    let position = store.position(&upgrade.namespace, &upgrade.release);
    // The release before this upgrade, kept by its pending revision.
    let previous = position.and_then(|i| store.releases[i].previous.as_deref().cloned());
    if stop.is_some() && upgrade.atomic {
        // Rolled back: a new revision that restores the previous one; a first install is removed.
        let Some(mut restored) = previous.clone() else {
            if let Some(i) = position {
                store.releases.remove(i);
            }
            return None;
        };
        restored.revision += 2;
        restored.status = "deployed".to_owned();
        restored.description = format!("Rollback to {}", restored.revision - 2);
        restored.updated = now.to_owned();
        restored.previous = previous.as_ref().map(Release::as_previous);
        match position {
            Some(i) => store.releases[i] = restored.clone(),
            None => store.releases.push(restored.clone()),
        }
        return Some(restored);
    }
    let verb = if previous.is_some() {
        "Upgrade"
    } else {
        "Install"
    };
    let (status, description) = match stop.map(Stop::reason) {
        None => ("deployed", format!("{verb} complete")),
        Some(reason) => (
            "failed",
            format!("{verb} {:?} failed: {reason}", upgrade.release),
        ),
    };
    let release = next_revision(upgrade, previous.as_ref(), now, status, description);
    match position {
        Some(i) => store.releases[i] = release.clone(),
        None => store.releases.push(release.clone()),
    }
    Some(release)
}

/// `helm rollback`: a new revision with the contents of the previous one (the only one the
/// stand-in keeps: `REVISION` must be it, or 0 or none for it); the current one is superseded.
/// This is how a release left pending is cleared.
fn rollback(
    workdir: &Path,
    name: &str,
    revision: Option<u32>,
    namespace: &str,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<()> {
    let store = Store::load(workdir)?;
    let current = store
        .find(namespace, name)
        .ok_or_else(|| Error::failed("release: not found"))?;
    let wanted = match revision {
        None | Some(0) => current.revision.saturating_sub(1),
        Some(revision) => revision,
    };
    let target = current
        .previous
        .as_deref()
        .filter(|previous| previous.revision == wanted)
        .cloned()
        .ok_or_else(|| Error::failed(format!("release has no {wanted} version")))?;
    let mut run = Run::start(workdir, &format!("helm-rollback:{name}"))?;
    run.enter_section();
    if interrupt.sleep(QUICK_STEP).is_err() {
        run.finish(Outcome::Interrupted)?;
        return Err(Error::Interrupted);
    }
    let now = now_rfc3339();
    let rolled_back = Store::update(workdir, |store| {
        let Some(i) = store.position(namespace, name) else {
            return;
        };
        let mut superseded = store.releases[i].as_previous();
        superseded.status = "superseded".to_owned();
        store.releases[i] = Release {
            revision: superseded.revision + 1,
            status: "deployed".to_owned(),
            description: format!("Rollback to {}", target.revision),
            first_deployed: superseded.first_deployed.clone(),
            updated: now,
            previous: Some(superseded),
            ..target
        };
    });
    run.finish(if rolled_back.is_ok() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    })?;
    rolled_back?;
    console.out("Rollback was a success! Happy Helming!");
    Ok(())
}

fn uninstall(
    workdir: &Path,
    name: &str,
    namespace: &str,
    ignore_not_found: bool,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<()> {
    if Store::load(workdir)?.find(namespace, name).is_none() {
        if ignore_not_found {
            console.out(format!("release {name:?} not found, nothing to uninstall"));
            return Ok(());
        }
        return Err(Error::failed(format!(
            "uninstall: Release not loaded: {name}: release: not found"
        )));
    }
    let mut run = Run::start(workdir, &format!("helm-uninstall:{name}"))?;
    run.enter_section();
    if interrupt.sleep(QUICK_STEP).is_err() {
        run.finish(Outcome::Interrupted)?;
        return Err(Error::Interrupted);
    }
    let removed = Store::update(workdir, |store| {
        store
            .releases
            .retain(|r| !(r.namespace == namespace && r.release == name));
    });
    run.finish(if removed.is_ok() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    })?;
    removed?;
    console.out(format!("release {name:?} uninstalled"));
    Ok(())
}

/// `Mon Jan  2 15:04:05 2006`, as helm prints LAST DEPLOYED.
fn helm_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
        .format("%a %b %e %H:%M:%S %Y")
        .to_string()
}

fn print_release(release: &Release, console: &mut Console<'_>) {
    console.out(format!("NAME: {}", release.release));
    console.out(format!("LAST DEPLOYED: {}", helm_time(&release.updated)));
    console.out(format!("NAMESPACE: {}", release.namespace));
    console.out(format!("STATUS: {}", release.status));
    console.out(format!("REVISION: {}", release.revision));
    console.out("TEST SUITE: None");
}

fn status_json(release: &Release) -> Value {
    json!({
        "name": release.release,
        "namespace": release.namespace,
        "version": release.revision,
        "info": {
            "status": release.status,
            "first_deployed": release.first_deployed,
            "last_deployed": release.updated,
            "description": release.description,
            "notes": "",
        },
        "chart": {
            "metadata": {"name": release.chart, "version": release.chart_version},
        },
    })
}

fn list_row(release: &Release) -> Value {
    json!({
        "name": release.release,
        "namespace": release.namespace,
        "revision": release.revision.to_string(),
        "updated": release.updated,
        "status": release.status,
        "chart": format!("{}-{}", release.chart, release.chart_version),
        "app_version": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{self, Run, args, assert_usage_errors, simulate};

    fn run_in(dir: &Path, line: &str) -> Run {
        test_support::run_in(run, dir, line)
    }

    /// An instant workdir with a kubeconfig and a values file.
    fn workdir() -> tempfile::TempDir {
        let dir = test_support::workdir();
        std::fs::write(dir.path().join("kubeconfig"), "apiVersion: v1\n").unwrap();
        std::fs::write(dir.path().join("values.yaml"), "replicas: 1\n").unwrap();
        dir
    }

    #[test]
    fn a_chart_can_come_from_a_repository_url_at_a_version() {
        let command = parse(&args(
            "upgrade --install ingress-nginx ingress-nginx \
             --repo https://kubernetes.github.io/ingress-nginx --version 4.12.1",
        ))
        .unwrap();
        let Command::Upgrade(upgrade) = command else {
            panic!("not an upgrade: {command:?}");
        };
        assert_eq!(upgrade.chart, "ingress-nginx");
        assert_eq!(upgrade.chart_version.as_deref(), Some("4.12.1"));
    }

    #[test]
    fn flags_parse_anywhere_in_long_short_and_equals_forms() {
        let command = parse(&args(
            "upgrade -n beta9 --install beta9 ./charts/beta9 -f a.yaml --values=b.yaml \
             --set x=1 --set y=2 --wait --timeout 10m0s --kubeconfig=kc --atomic --create-namespace",
        ))
        .unwrap();
        let Command::Upgrade(upgrade) = command else {
            panic!("not an upgrade: {command:?}");
        };
        assert_eq!(upgrade.release, "beta9");
        assert_eq!(upgrade.chart, "./charts/beta9");
        assert_eq!(upgrade.namespace, "beta9");
        assert!(upgrade.install && upgrade.wait && upgrade.atomic && upgrade.create_namespace);
        assert_eq!(
            upgrade.values,
            [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        );
        assert_eq!(upgrade.set, ["x=1", "y=2"]);
        assert_eq!(upgrade.timeout, Duration::from_secs(600));
        assert_eq!(upgrade.kubeconfig, Some(PathBuf::from("kc")));
        assert_eq!(
            parse(&args("status x -o json")).unwrap(),
            Command::Status {
                release: "x".into(),
                namespace: "default".into(),
                kubeconfig: None,
                json: true
            }
        );
    }

    #[test]
    fn unknown_commands_and_flags_are_usage_errors() {
        assert_usage_errors(
            parse,
            &[
                "",
                "rollback",
                "rollback x one",
                "rollback x 1 2",
                "rollback x --atomic",
                "upgrade x",
                "upgrade x chart --bogus",
                "status x --create-namespace",
                "status x -o yaml",
                "upgrade x chart --timeout soon",
                "list --namespace",
            ],
        );
    }

    #[test]
    fn chart_names_come_from_any_chart_reference() {
        assert_eq!(chart_name("beta9/beta9"), "beta9");
        assert_eq!(chart_name("./charts/beta9/"), "beta9");
        assert_eq!(chart_name("oci://ghcr.io/org/beta9"), "beta9");
        assert_eq!(chart_name("ingress-nginx-4.11.3.tgz"), "ingress-nginx");
    }

    #[test]
    fn install_then_upgrade_bumps_the_revision() {
        let dir = workdir();
        let first = run_in(
            dir.path(),
            "upgrade --install web charts/web --kubeconfig kubeconfig --values values.yaml",
        );
        assert_eq!(first.code, 0, "{}", first.err);
        assert!(
            first
                .out
                .contains("Release \"web\" does not exist. Installing it now.")
        );
        assert!(first.out.contains("REVISION: 1"));
        let second = run_in(dir.path(), "upgrade --install web charts/web");
        assert!(
            second
                .out
                .contains("Release \"web\" has been upgraded. Happy Helming!")
        );
        assert!(second.out.contains("REVISION: 2"));
        let status: Value =
            serde_json::from_str(&run_in(dir.path(), "status web -o json").out).unwrap();
        assert_eq!(status["version"], 2);
        assert_eq!(status["info"]["status"], "deployed");
        assert_eq!(status["chart"]["metadata"]["name"], "web");
    }

    #[test]
    fn missing_kubeconfig_or_values_file_fails_before_anything_changes() {
        let dir = workdir();
        let run = run_in(dir.path(), "upgrade --install web c --kubeconfig nope");
        assert_eq!(run.code, 1);
        assert!(
            run.err.starts_with("Error: Kubernetes cluster unreachable"),
            "{}",
            run.err
        );
        let run = run_in(dir.path(), "upgrade --install web c -f missing.yaml");
        assert!(run.err.contains("open missing.yaml"), "{}", run.err);
        std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
        assert_eq!(
            run_in(dir.path(), "upgrade --install web c -f empty.yaml").code,
            1
        );
        assert!(Store::load(dir.path()).unwrap().releases.is_empty());
    }

    #[test]
    fn a_new_namespace_needs_create_namespace() {
        let dir = workdir();
        let run = run_in(dir.path(), "upgrade --install web c -n apps");
        assert_eq!(run.code, 1);
        assert!(
            run.err.contains("namespaces \"apps\" not found"),
            "{}",
            run.err
        );
        assert_eq!(
            run_in(
                dir.path(),
                "upgrade --install web c -n apps --create-namespace"
            )
            .code,
            0
        );
        assert_eq!(
            run_in(dir.path(), "upgrade --install other c -n apps").code,
            0
        );
    }

    #[test]
    fn upgrade_without_install_needs_an_existing_release() {
        let dir = workdir();
        let run = run_in(dir.path(), "upgrade web c");
        assert_eq!(run.code, 1);
        assert!(run.err.contains("has no deployed releases"), "{}", run.err);
    }

    #[test]
    fn bootstrap_failure_marks_the_release_failed_until_fail_times_is_used_up() {
        let dir = workdir();
        simulate(
            dir.path(),
            r#"{"apply_seconds": 0, "fail": "bootstrap", "fail_times": 1}"#,
        );
        assert_eq!(run_in(dir.path(), "upgrade --install other c").code, 0);
        let failed = run_in(dir.path(), "upgrade --install beta9 c");
        assert_eq!(failed.code, 1);
        assert_eq!(
            failed.err.trim(),
            "Error: UPGRADE FAILED: simulated bootstrap failure (attempt 1 of 1)"
        );
        let store = Store::load(dir.path()).unwrap();
        assert_eq!(store.find("default", "beta9").unwrap().status, "failed");
        let ok = run_in(dir.path(), "upgrade --install beta9 c");
        assert_eq!(ok.code, 0, "{}", ok.err);
        assert!(ok.out.contains("REVISION: 2"));
    }

    #[test]
    fn an_atomic_first_install_that_fails_is_removed() {
        let dir = workdir();
        simulate(dir.path(), r#"{"apply_seconds": 0, "fail": "bootstrap"}"#);
        let failed = run_in(dir.path(), "upgrade --install beta9 c --atomic");
        assert!(
            failed.err.contains("has been uninstalled due to atomic"),
            "{}",
            failed.err
        );
        assert!(Store::load(dir.path()).unwrap().releases.is_empty());
    }

    #[test]
    fn waiting_longer_than_the_timeout_fails_with_deadline_exceeded() {
        let dir = workdir();
        simulate(dir.path(), r#"{"apply_seconds": 5}"#);
        let run = run_in(
            dir.path(),
            "upgrade --install beta9 c --wait --timeout 100ms",
        );
        assert_eq!(run.code, 1);
        assert!(run.err.contains("context deadline exceeded"), "{}", run.err);
    }

    #[test]
    fn uninstall_removes_and_reports_absent_releases() {
        let dir = workdir();
        run_in(dir.path(), "upgrade --install web c");
        let run = run_in(dir.path(), "uninstall web --wait");
        assert_eq!(
            (run.code, run.out.trim()),
            (0, "release \"web\" uninstalled")
        );
        let again = run_in(dir.path(), "uninstall web");
        assert_eq!(again.code, 1);
        assert_eq!(
            again.err.trim(),
            "Error: uninstall: Release not loaded: web: release: not found"
        );
        assert_eq!(
            run_in(dir.path(), "uninstall web --ignore-not-found").code,
            0
        );
        let status = run_in(dir.path(), "status web -o json");
        assert_eq!(
            (status.code, status.err.trim()),
            (1, "Error: release: not found")
        );
    }

    /// Writes `release` into the store as a helm killed mid-upgrade leaves it: `status`, the
    /// revision after `previous`, which is kept.
    fn left_pending(dir: &Path, release: &str, status: &str) {
        let mut store = Store::load(dir).unwrap();
        let position = store.position("default", release);
        let previous = position.map(|i| store.releases[i].clone());
        let upgrade = Upgrade {
            release: release.into(),
            chart: "c".into(),
            namespace: "default".into(),
            ..Upgrade::default()
        };
        let pending = next_revision(
            &upgrade,
            previous.as_ref(),
            "2026-01-01T00:00:00Z",
            status,
            String::new(),
        );
        match position {
            Some(i) => store.releases[i] = pending,
            None => store.releases.push(pending),
        }
        store.save(dir).unwrap();
    }

    fn status_of(dir: &Path, release: &str) -> Value {
        let run = run_in(dir, &format!("status {release} -o json"));
        assert_eq!(run.code, 0, "{}", run.err);
        serde_json::from_str(&run.out).unwrap()
    }

    #[test]
    fn an_upgrade_is_pending_while_it_works_and_deployed_at_its_end() {
        let dir = workdir();
        simulate(dir.path(), r#"{"apply_seconds": 30}"#);
        let interrupt = Interrupt::new();
        let installing = {
            let dir = dir.path().to_owned();
            let interrupt = interrupt.clone();
            std::thread::spawn(move || {
                test_support::run_with(run, &dir, "upgrade --install beta9 c", &interrupt).code
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Store::load(dir.path())
            .unwrap()
            .find("default", "beta9")
            .is_none()
        {
            assert!(std::time::Instant::now() < deadline, "never marked pending");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            status_of(dir.path(), "beta9")["info"]["status"],
            "pending-install"
        );
        // Stopped by a signal, helm marks it failed; only a kill leaves it pending.
        interrupt.trigger();
        assert_eq!(installing.join().unwrap(), 1);
        assert_eq!(status_of(dir.path(), "beta9")["info"]["status"], "failed");
    }

    #[test]
    fn an_upgrade_of_a_release_left_pending_fails_as_helms_and_changes_nothing() {
        let dir = workdir();
        for status in ["pending-install", "pending-upgrade", "pending-rollback"] {
            left_pending(dir.path(), "web", status);
            let before = Store::load(dir.path()).unwrap();
            let run = run_in(dir.path(), "upgrade --install web c");
            assert_eq!(run.code, 1);
            assert_eq!(
                run.err.trim(),
                "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"
            );
            assert_eq!(Store::load(dir.path()).unwrap(), before);
            assert_eq!(status_of(dir.path(), "web")["info"]["status"], status);
            assert_eq!(run_in(dir.path(), "uninstall web").code, 0);
        }
    }

    #[test]
    fn uninstall_clears_a_pending_install_so_the_next_install_starts_afresh() {
        let dir = workdir();
        left_pending(dir.path(), "web", "pending-install");
        assert_eq!(
            run_in(dir.path(), "rollback web").err.trim(),
            "Error: release has no 0 version"
        );
        assert_eq!(
            run_in(dir.path(), "uninstall web --wait --timeout 10m0s").code,
            0
        );
        let run = run_in(dir.path(), "upgrade --install web c");
        assert_eq!(run.code, 0, "{}", run.err);
        let status = status_of(dir.path(), "web");
        assert_eq!(
            (status["version"].clone(), status["info"]["status"].clone()),
            (json!(1), json!("deployed"))
        );
    }

    #[test]
    fn rollback_restores_the_revision_before_a_pending_upgrade() {
        let dir = workdir();
        run_in(dir.path(), "upgrade --install web c --version 1.0.0");
        let deployed = Store::load(dir.path())
            .unwrap()
            .find("default", "web")
            .unwrap()
            .clone();
        left_pending(dir.path(), "web", "pending-upgrade");
        assert_eq!(
            status_of(dir.path(), "web")["info"]["status"],
            "pending-upgrade"
        );
        assert_eq!(
            run_in(dir.path(), "rollback web 3").err.trim(),
            "Error: release has no 3 version"
        );
        let run = run_in(dir.path(), "rollback web 1 --wait --timeout 10m0s");
        assert_eq!(
            (run.code, run.out.trim()),
            (0, "Rollback was a success! Happy Helming!"),
            "{}",
            run.err
        );
        let restored = Store::load(dir.path())
            .unwrap()
            .find("default", "web")
            .unwrap()
            .clone();
        assert_eq!(
            (restored.revision, restored.status.as_str()),
            (3, "deployed")
        );
        assert_eq!(restored.description, "Rollback to 1");
        assert_eq!(restored.chart_version, deployed.chart_version);
        assert_eq!(restored.previous.unwrap().status, "superseded");
        let upgraded = run_in(dir.path(), "upgrade --install web c");
        assert_eq!(upgraded.code, 0, "{}", upgraded.err);
        assert!(upgraded.out.contains("REVISION: 4"));
        assert_eq!(
            run_in(dir.path(), "rollback nope").err.trim(),
            "Error: release: not found"
        );
    }

    #[test]
    fn list_filters_by_namespace_unless_all_namespaces() {
        let dir = workdir();
        run_in(dir.path(), "upgrade --install a c");
        run_in(dir.path(), "upgrade --install b c -n kube-system");
        let default: Value = serde_json::from_str(&run_in(dir.path(), "list -o json").out).unwrap();
        assert_eq!(default.as_array().unwrap().len(), 1);
        let all: Value = serde_json::from_str(&run_in(dir.path(), "list -A -o json").out).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2);
        assert_eq!(all[0]["revision"], "1");
        assert_eq!(all[1]["chart"], "c-0.1.0");
    }

    #[test]
    fn version_short_prints_the_standin_version() {
        let dir = workdir();
        assert_eq!(run_in(dir.path(), "version --short").out.trim(), VERSION);
    }
}
