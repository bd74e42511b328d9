//! The terraform stand-in: `version`, `init`, `plan`, `apply`, `destroy`, `output`,
//! `force-unlock`, over the files of a workdir (see the module docs of [`super`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::faults::{self, Simulation, Step, take_failure};
use super::interrupt::{Interrupt, SLICE};
use super::overlap::{Outcome, Run};
use super::planfile::{PriorState, SavedPlan};
use super::state_lock::{LockError, LockInfo, StateLock, UnlockError, force_unlock};
use super::tfmodel::{
    Action, ActionKind, Config, Instance, Resolver, STATE_FILE, State, StateOutput, destroy_all,
    diff,
};
use super::{Console, Error, Result, parse_go_duration};

/// The terraform version the stand-in claims to be.
pub const VERSION: &str = "1.10.5";
/// Marks an initialized workdir.
pub const INIT_DIR: &str = ".terraform";
/// How often a running change prints `Still creating...`.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

const OPERATION_APPLY: &str = "OperationTypeApply";
const OPERATION_PLAN: &str = "OperationTypePlan";

const USAGE: &str = "\
Usage: terraform-standin [-chdir=DIR] <command> [flags]

Commands:
  version [-json]
  init [-input=false] [-no-color] [-upgrade] [-reconfigure] [-backend-config=KEY=VALUE]...
  plan [-input=false] [-no-color] [-lock-timeout=D] [-detailed-exitcode] [-destroy] [-out=FILE]
  apply [-input=false] [-no-color] [-lock-timeout=D] PLANFILE
  apply -auto-approve [-input=false] [-no-color] [-lock-timeout=D] [-destroy]
  destroy -auto-approve [-input=false] [-no-color] [-lock-timeout=D]
  output [-json] [-no-color] [NAME]
  force-unlock -force LOCK_ID

D is a Go duration (0s, 500ms, 60s, 5m); the default lock timeout is 0s.
A saved plan applies exactly its actions, and only to the state it was planned against.
Without a plan file, apply and destroy need -auto-approve: the stand-in reads no approval.
Fault injection and timing: simulate.json in the working directory.";

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Version {
        json: bool,
    },
    Help,
    Init,
    Plan {
        destroy: bool,
        lock_timeout: Duration,
        detailed_exitcode: bool,
        /// `-out=FILE`: where to save the plan.
        out: Option<PathBuf>,
    },
    /// `apply`, or `destroy` (= `apply -destroy`).
    Apply {
        destroy: bool,
        lock_timeout: Duration,
        auto_approve: bool,
        /// `apply FILE`: a saved plan to apply.
        plan: Option<PathBuf>,
    },
    Output {
        json: bool,
        name: Option<String>,
    },
    ForceUnlock {
        id: String,
    },
}

/// Runs one terraform command line in `cwd`; returns the exit code: 0 success, 1 error, 2 from
/// `plan -detailed-exitcode` when there are changes.
pub fn run(args: &[String], cwd: &Path, interrupt: &Interrupt, console: &mut Console<'_>) -> u8 {
    let (chdir, command) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => return report(&e, console),
    };
    let workdir = match chdir {
        Some(dir) => {
            let dir = cwd.join(dir);
            if !dir.is_dir() {
                let e = Error::failed(format!(
                    "Error handling -chdir option: chdir {}: no such file or directory",
                    dir.display()
                ));
                return report(&e, console);
            }
            dir
        }
        None => cwd.to_owned(),
    };
    match execute(command, &workdir, interrupt, console) {
        Ok(code) => code,
        Err(e) => report(&e, console),
    }
}

/// Prints an error as terraform does with `-no-color` and returns exit code 1.
fn report(error: &Error, console: &mut Console<'_>) -> u8 {
    match error {
        Error::Usage(message) => {
            console.err(format!("Error: {message}"));
            console.err("");
            console.err(USAGE);
        }
        Error::Interrupted => {
            console.out("Interrupt received. Gracefully shutting down...");
            console.err("");
            console.err("Error: execution halted");
        }
        Error::Failed { summary, detail } => {
            console.err("");
            console.err(format!("Error: {summary}"));
            if !detail.is_empty() {
                console.err("");
                for line in detail {
                    console.err(line);
                }
            }
            console.err("");
        }
        other => {
            console.err("");
            console.err(format!("Error: {other}"));
            console.err("");
        }
    }
    1
}

/// Parses the arguments after the program name: an optional leading `-chdir=DIR`, a command and
/// its flags, which may come in any order and with one or two dashes.
pub fn parse(args: &[String]) -> Result<(Option<PathBuf>, Command)> {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut chdir = None;
    if let Some(dir) = args.first().and_then(|a| a.strip_prefix("-chdir=")) {
        chdir = Some(PathBuf::from(dir));
        args.remove(0);
    }
    let Some((&command, rest)) = args.split_first() else {
        return Err(Error::Usage("no command given".to_owned()));
    };
    let command = match command {
        "version" | "-version" | "--version" | "-v" => {
            let flags = Flags::parse(command, rest, &["-json", "-no-color"])?;
            flags.no_positional()?;
            Command::Version { json: flags.json }
        }
        "help" | "-help" | "--help" | "-h" => Command::Help,
        "init" => {
            let flags = Flags::parse(
                command,
                rest,
                &[
                    "-input",
                    "-no-color",
                    "-upgrade",
                    "-reconfigure",
                    "-backend-config",
                ],
            )?;
            flags.no_positional()?;
            Command::Init
        }
        "plan" => {
            let flags = Flags::parse(
                command,
                rest,
                &[
                    "-input",
                    "-no-color",
                    "-lock-timeout",
                    "-detailed-exitcode",
                    "-destroy",
                    "-out",
                ],
            )?;
            flags.no_positional()?;
            Command::Plan {
                destroy: flags.destroy,
                lock_timeout: flags.lock_timeout,
                detailed_exitcode: flags.detailed_exitcode,
                out: flags.out.map(PathBuf::from),
            }
        }
        "apply" | "destroy" => {
            let allowed: &[&str] = if command == "apply" {
                &[
                    "-auto-approve",
                    "-input",
                    "-no-color",
                    "-lock-timeout",
                    "-destroy",
                ]
            } else {
                &["-auto-approve", "-input", "-no-color", "-lock-timeout"]
            };
            let flags = Flags::parse(command, rest, allowed)?;
            let plan = match flags.positional.as_slice() {
                [] => None,
                [_] if command == "destroy" => {
                    return Err(Error::Usage(
                        "destroy can't be called with a plan file: apply a plan made with \
                         plan -destroy -out=FILE"
                            .to_owned(),
                    ));
                }
                [_] if flags.destroy => {
                    return Err(Error::Usage(
                        "apply: a saved plan already says whether it destroys: drop -destroy"
                            .to_owned(),
                    ));
                }
                [file] => Some(PathBuf::from(file)),
                _ => {
                    return Err(Error::Usage("apply takes at most one PLANFILE".to_owned()));
                }
            };
            Command::Apply {
                destroy: command == "destroy" || flags.destroy,
                lock_timeout: flags.lock_timeout,
                auto_approve: flags.auto_approve,
                plan,
            }
        }
        "output" => {
            let flags = Flags::parse(command, rest, &["-json", "-no-color"])?;
            if flags.positional.len() > 1 {
                return Err(Error::Usage("output takes at most one NAME".to_owned()));
            }
            Command::Output {
                json: flags.json,
                name: flags.positional.first().map(|n| (*n).to_owned()),
            }
        }
        "force-unlock" => {
            let flags = Flags::parse(command, rest, &["-force"])?;
            if !flags.force {
                return Err(Error::Usage(
                    "force-unlock needs -force: the stand-in never asks for confirmation"
                        .to_owned(),
                ));
            }
            let [id] = flags.positional.as_slice() else {
                return Err(Error::Usage(
                    "force-unlock takes exactly one LOCK_ID".to_owned(),
                ));
            };
            Command::ForceUnlock {
                id: (*id).to_owned(),
            }
        }
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    Ok((chdir, command))
}

#[derive(Default)]
struct Flags<'a> {
    json: bool,
    auto_approve: bool,
    destroy: bool,
    detailed_exitcode: bool,
    force: bool,
    lock_timeout: Duration,
    out: Option<String>,
    positional: Vec<&'a str>,
}

impl<'a> Flags<'a> {
    fn parse(command: &str, args: &[&'a str], allowed: &[&str]) -> Result<Self> {
        let mut flags = Flags::default();
        for &arg in args {
            let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
                flags.positional.push(arg);
                continue;
            };
            let flag = format!("-{}", flag.strip_prefix('-').unwrap_or(flag));
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag.as_str(), None),
            };
            let unknown = || Error::Usage(format!("{command}: unsupported flag {arg:?}"));
            if !allowed.contains(&name) {
                return Err(unknown());
            }
            match (name, value) {
                ("-lock-timeout", _) => {
                    flags.lock_timeout = value.and_then(parse_go_duration).ok_or_else(|| {
                        Error::Usage(format!(
                            "{command}: invalid {arg:?}: expected a duration such as 60s or 5m"
                        ))
                    })?;
                }
                ("-out", Some(file)) if !file.is_empty() => flags.out = Some(file.to_owned()),
                ("-out", _) => {
                    return Err(Error::Usage(format!(
                        "{command}: -out needs a file name: -out=FILE"
                    )));
                }
                // The backend's partial configuration: the stand-in keeps its state in the
                // workdir whatever the backend says, but takes the flag as terraform does.
                ("-backend-config", Some(pair)) if pair.contains('=') => {}
                ("-backend-config", _) => {
                    return Err(Error::Usage(format!(
                        "{command}: -backend-config needs KEY=VALUE"
                    )));
                }
                ("-input", Some("false")) => {}
                ("-input", _) => {
                    return Err(Error::Usage(format!(
                        "{command}: only -input=false is supported: the stand-in never prompts"
                    )));
                }
                (_, None | Some("true" | "false")) => {
                    let on = value != Some("false");
                    match name {
                        "-json" => flags.json = on,
                        "-auto-approve" => flags.auto_approve = on,
                        "-destroy" => flags.destroy = on,
                        "-detailed-exitcode" => flags.detailed_exitcode = on,
                        "-force" => flags.force = on,
                        _ => {} // -no-color, -upgrade, -reconfigure: nothing to do
                    }
                }
                (_, Some(_)) => return Err(unknown()),
            }
        }
        Ok(flags)
    }

    fn no_positional(&self) -> Result<()> {
        match self.positional.first() {
            Some(extra) => Err(Error::Usage(format!("unexpected argument {extra:?}"))),
            None => Ok(()),
        }
    }
}

fn execute(
    command: Command,
    workdir: &Path,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<u8> {
    match command {
        Command::Version { json: false } => {
            console.out(format!("Terraform v{VERSION} (standin)"));
            Ok(0)
        }
        Command::Version { json: true } => {
            console.out(pretty(&json!({
                "terraform_version": VERSION,
                "platform": "linux_amd64",
                "provider_selections": {},
                "terraform_outdated": false,
            })));
            Ok(0)
        }
        Command::Help => {
            console.out(USAGE);
            Ok(0)
        }
        Command::Init => init(workdir, console),
        Command::Plan {
            destroy,
            lock_timeout,
            detailed_exitcode,
            out,
        } => plan(
            workdir,
            PlanOptions {
                destroy,
                lock_timeout,
                detailed_exitcode,
                out,
            },
            interrupt,
            console,
        ),
        Command::Apply {
            destroy,
            lock_timeout,
            auto_approve,
            plan: None,
        } => apply(
            workdir,
            Apply::Direct {
                destroy,
                auto_approve,
            },
            lock_timeout,
            interrupt,
            console,
        ),
        Command::Apply {
            lock_timeout,
            plan: Some(file),
            ..
        } => apply(
            workdir,
            Apply::Saved(file),
            lock_timeout,
            interrupt,
            console,
        ),
        Command::Output { json, name } => output(workdir, json, name.as_deref(), console),
        Command::ForceUnlock { id } => unlock(workdir, &id, console),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn init(workdir: &Path, console: &mut Console<'_>) -> Result<u8> {
    Config::load(workdir)?;
    let dir = workdir.join(INIT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {INIT_DIR}"), e))?;
    console.out("");
    console.out("Initializing the backend...");
    console.out("");
    console.out("Initializing provider plugins...");
    console.out("");
    console.out("Terraform has been successfully initialized!");
    Ok(0)
}

fn require_initialized(workdir: &Path) -> Result<()> {
    if workdir.join(INIT_DIR).is_dir() {
        return Ok(());
    }
    Err(Error::Failed {
        summary: "Backend initialization required, please run \"terraform init\"".to_owned(),
        detail: vec![format!(
            "Reason: {} has no {INIT_DIR} directory.",
            workdir.display()
        )],
    })
}

/// The name that makes fake ids differ between workdirs (environments).
fn scope_of(workdir: &Path) -> String {
    let path = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_owned());
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Terraform's own diagnostic for a state it cannot lock, word for word as the local backend
/// prints it: it says nothing of whether the holder lives (real terraform cannot know; the
/// executor decides from its leases). The stand-in does not wait out `-lock-timeout` for a
/// holder it can see is dead, which real terraform would; the output is the same.
fn lock_error(error: LockError) -> Error {
    let info = match error {
        LockError::Interrupted => return Error::Interrupted,
        LockError::Io(e) => return e,
        LockError::Held { info, .. } | LockError::Stale { info } => info,
    };
    Error::Failed {
        summary: "Error acquiring the state lock".to_owned(),
        detail: lock_detail("resource temporarily unavailable", &info),
    }
}

/// The body of terraform's lock diagnostic; the `ID:` line is what `force-unlock` needs.
fn lock_detail(message: &str, info: &LockInfo) -> Vec<String> {
    vec![
        format!("Error message: {message}"),
        "Lock Info:".to_owned(),
        format!("  ID:        {}", info.id),
        format!("  Path:      {}", info.path),
        format!("  Operation: {}", info.operation),
        format!("  Who:       {}", info.who),
        format!("  Version:   {}", info.version),
        format!("  Created:   {}", info.created),
        format!("  Info:      {}", info.info),
        String::new(),
        "Terraform acquires a state lock to protect the state from being written".to_owned(),
        "by multiple users at the same time. Please resolve the issue above and try".to_owned(),
        "again. For most commands, you can disable locking with the \"-lock=false\"".to_owned(),
        "flag, but this is not recommended.".to_owned(),
    ]
}

/// The actions an apply (or destroy) would take now.
fn pending_actions(
    state: &State,
    config: Option<&Config>,
    resolver: &Resolver<'_>,
    destroy: bool,
) -> Vec<Action> {
    let current = state.instances();
    match config {
        Some(config) if !destroy => diff(&current, &config.desired(resolver)),
        _ => destroy_all(&current),
    }
}

#[derive(Default)]
struct Counts {
    added: usize,
    changed: usize,
    destroyed: usize,
}

impl Counts {
    fn of(actions: &[Action]) -> Self {
        let mut counts = Counts::default();
        for action in actions {
            counts.count(action.kind);
        }
        counts
    }

    fn count(&mut self, kind: ActionKind) {
        match kind {
            ActionKind::Create => self.added += 1,
            ActionKind::Update => self.changed += 1,
            ActionKind::Delete => self.destroyed += 1,
        }
    }
}

fn print_plan(actions: &[Action], destroy: bool, console: &mut Console<'_>) {
    console.out("");
    if actions.is_empty() {
        if destroy {
            console.out("No changes. No objects need to be destroyed.");
        } else {
            console.out("No changes. Your infrastructure matches the configuration.");
        }
        console.out("");
        return;
    }
    console.out("Terraform will perform the following actions:");
    console.out("");
    for action in actions {
        let what = match action.kind {
            ActionKind::Create => "will be created",
            ActionKind::Update => "will be updated in-place",
            ActionKind::Delete => "will be destroyed",
        };
        console.out(format!("  # {} {what}", action.instance.address()));
    }
    console.out("");
    let counts = Counts::of(actions);
    console.out(format!(
        "Plan: {} to add, {} to change, {} to destroy.",
        counts.added, counts.changed, counts.destroyed
    ));
    console.out("");
}

/// `plan`'s flags.
struct PlanOptions {
    destroy: bool,
    lock_timeout: Duration,
    detailed_exitcode: bool,
    out: Option<PathBuf>,
}

fn plan(
    workdir: &Path,
    options: PlanOptions,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<u8> {
    require_initialized(workdir)?;
    let simulate = faults::load(workdir)?;
    let config = Config::load(workdir)?;
    under_lock(
        workdir,
        ("plan", OPERATION_PLAN),
        options.lock_timeout,
        interrupt,
        || plan_locked(workdir, &options, &simulate, &config, console),
    )
}

/// The plan, under the state lock.
fn plan_locked(
    workdir: &Path,
    options: &PlanOptions,
    simulate: &Simulation,
    config: &Config,
    console: &mut Console<'_>,
) -> Result<u8> {
    let state_exists = workdir.join(STATE_FILE).exists();
    let state = State::load(workdir)?;
    let current = state.instances();
    print_refreshing(&current, console);
    fail_if_transient(workdir, simulate, current.first())?;
    let scope = scope_of(workdir);
    let resolver = Resolver::new(&scope, Some(config));
    let actions = pending_actions(&state, Some(config), &resolver, options.destroy);
    print_plan(&actions, options.destroy, console);
    if let Some(out) = &options.out {
        let saved = SavedPlan::new(
            options.destroy,
            PriorState::of(&state, state_exists),
            (!options.destroy).then_some(config),
            actions.clone(),
        );
        saved.write(&workdir.join(out))?;
        console.out("\u{2500}".repeat(77));
        console.out("");
        console.out(format!("Saved the plan to: {}", out.display()));
        console.out("");
        console.out("To perform exactly these actions, run the following command to apply:");
        console.out(format!("    terraform apply \"{}\"", out.display()));
    }
    Ok(if options.detailed_exitcode && !actions.is_empty() {
        2
    } else {
        0
    })
}

/// `Refreshing state...` for each instance in state, as plans and direct applies print it.
fn print_refreshing(instances: &[Instance], console: &mut Console<'_>) {
    for instance in instances {
        console.out(format!(
            "{}: Refreshing state... [id={}]",
            instance.address(),
            instance.id()
        ));
    }
}

/// Fails a run that talks to the cloud while `simulate.transient_failures` says so, before it
/// changes anything, with the throttling error a retry gets past.
fn fail_if_transient(
    workdir: &Path,
    simulate: &Simulation,
    instance: Option<&Instance>,
) -> Result<()> {
    match faults::take_transient(workdir, simulate)? {
        None => Ok(()),
        Some(failure) => Err(Error::Failed {
            summary: failure.summary(),
            detail: instance
                .map(|i| vec![format!("  with {},", i.address())])
                .unwrap_or_default(),
        }),
    }
}

/// What an `apply` applies.
enum Apply {
    /// Plans and applies at once (`apply [-destroy]`, `destroy`); without `auto_approve` it
    /// asks for approval, which the stand-in (like terraform without a terminal) cannot read.
    Direct { destroy: bool, auto_approve: bool },
    /// Applies a saved plan (`apply FILE`, the path relative to the workdir).
    Saved(PathBuf),
}

fn apply(
    workdir: &Path,
    how: Apply,
    lock_timeout: Duration,
    interrupt: &Interrupt,
    console: &mut Console<'_>,
) -> Result<u8> {
    require_initialized(workdir)?;
    let simulate = faults::load(workdir)?;
    let (destroy, config, saved, must_confirm) = match how {
        Apply::Direct {
            destroy,
            auto_approve,
        } => {
            let config = if destroy {
                None
            } else {
                Some(Config::load(workdir)?)
            };
            (destroy, config, None, !auto_approve)
        }
        Apply::Saved(file) => {
            let saved = SavedPlan::read(&workdir.join(&file), &file.display().to_string())?;
            (saved.destroy, saved.config()?, Some(saved), false)
        }
    };
    let kind = if destroy { "destroy" } else { "apply" };
    let changes = Changes {
        workdir,
        simulate: &simulate,
        config: config.as_ref(),
        destroy,
        saved: saved.as_ref(),
        must_confirm,
        interrupt,
    };
    under_lock(
        workdir,
        (kind, OPERATION_APPLY),
        lock_timeout,
        interrupt,
        || changes.run(console),
    )
}

/// Runs `body` under the state lock (terraform's `operation` in the lock info), recorded as a
/// run of `kind` in the workdir's run log ([`super::overlap`]).
fn under_lock(
    workdir: &Path,
    (kind, operation): (&str, &str),
    lock_timeout: Duration,
    interrupt: &Interrupt,
    body: impl FnOnce() -> Result<u8>,
) -> Result<u8> {
    // Recorded before asking for the lock, so a run that has to wait for it is seen waiting.
    let mut run = Run::start(workdir, kind)?;
    let lock = match StateLock::acquire(workdir, operation, lock_timeout, interrupt) {
        Ok(lock) => lock,
        Err(error) => {
            let outcome = match error {
                LockError::Interrupted => Outcome::Interrupted,
                _ => Outcome::Failed,
            };
            run.finish(outcome)?;
            return Err(lock_error(error));
        }
    };
    run.enter_section();
    let result = body();
    let outcome = match &result {
        Ok(_) => Outcome::Succeeded,
        Err(Error::Interrupted) => Outcome::Interrupted,
        Err(_) => Outcome::Failed,
    };
    // The section ends while the lock is still held; the run ends after its release.
    run.leave_section();
    drop(lock);
    run.finish(outcome)?;
    result
}

/// One apply or destroy, under the lock.
struct Changes<'a> {
    workdir: &'a Path,
    simulate: &'a Simulation,
    config: Option<&'a Config>,
    destroy: bool,
    /// The saved plan being applied, if any: its actions instead of a fresh plan.
    saved: Option<&'a SavedPlan>,
    /// A direct apply without `-auto-approve`: stops at the approval prompt.
    must_confirm: bool,
    interrupt: &'a Interrupt,
}

impl Changes<'_> {
    fn run(&self, console: &mut Console<'_>) -> Result<u8> {
        let state_existed = self.workdir.join(STATE_FILE).exists();
        let mut state = State::load(self.workdir)?;
        let scope = scope_of(self.workdir);
        let resolver = Resolver::new(&scope, self.config);
        let mut live = state.instances();
        let actions = match self.saved {
            Some(saved) => {
                saved.check_still_current(&PriorState::of(&state, state_existed))?;
                fail_if_transient(self.workdir, self.simulate, live.first())?;
                saved.actions.clone()
            }
            None => {
                print_refreshing(&live, console);
                fail_if_transient(self.workdir, self.simulate, live.first())?;
                let actions = pending_actions(&state, self.config, &resolver, self.destroy);
                print_plan(&actions, self.destroy, console);
                if self.must_confirm && !actions.is_empty() {
                    return Err(self.approval_unreadable(console));
                }
                actions
            }
        };

        let step = if self.destroy {
            Step::Destroy
        } else {
            Step::Infra
        };
        let duration = faults::step_duration(self.simulate);
        if actions.is_empty() {
            self.sleep(duration)?;
            self.fail_if_injected(step, None)?;
        }
        let share = duration / u32::try_from(actions.len().max(1)).unwrap_or(u32::MAX);
        let mut done = Counts::default();
        for (i, action) in actions.iter().enumerate() {
            let started = Instant::now();
            self.perform(action, share, console)?;
            if i + 1 == actions.len() {
                self.fail_if_injected(step, Some(&action.instance))?;
            }
            let address = action.instance.address();
            live.retain(|have| have.address() != address);
            if action.kind != ActionKind::Delete {
                live.push(action.instance.clone());
            }
            state.set_instances(&live);
            state.save(self.workdir)?;
            console.out(completion(action, started.elapsed()));
            done.count(action.kind);
        }

        let outputs = match self.config {
            Some(config) if !self.destroy => config.outputs(&resolver),
            _ => Default::default(),
        };
        if !state_existed || !actions.is_empty() || outputs != state.outputs {
            state.outputs = outputs;
            state.save(self.workdir)?;
        }
        console.out("");
        if self.destroy {
            console.out(format!(
                "Destroy complete! Resources: {} destroyed.",
                done.destroyed
            ));
            return Ok(0);
        }
        console.out(format!(
            "Apply complete! Resources: {} added, {} changed, {} destroyed.",
            done.added, done.changed, done.destroyed
        ));
        if !state.outputs.is_empty() {
            console.out("");
            console.out("Outputs:");
            console.out("");
            print_outputs(&state.outputs, console);
        }
        Ok(0)
    }

    /// Terraform's approval prompt, then its error when there is no input to read the answer
    /// from (`-input=false`, no terminal): nothing is changed.
    fn approval_unreadable(&self, console: &mut Console<'_>) -> Error {
        let (query, description) = if self.destroy {
            (
                "Do you really want to destroy all resources?",
                [
                    "Terraform will destroy all your managed infrastructure, as shown above.",
                    "There is no undo. Only 'yes' will be accepted to confirm.",
                ],
            )
        } else {
            (
                "Do you want to perform these actions?",
                [
                    "Terraform will perform the actions described above.",
                    "Only 'yes' will be accepted to approve.",
                ],
            )
        };
        console.out(query);
        for line in description {
            console.out(format!("  {line}"));
        }
        console.out("");
        console.out("  Enter a value: ");
        Error::failed("error asking for approval: EOF")
    }

    fn sleep(&self, duration: Duration) -> Result<()> {
        self.interrupt
            .sleep(duration)
            .map_err(|_| Error::Interrupted)
    }

    fn fail_if_injected(&self, step: Step, instance: Option<&Instance>) -> Result<()> {
        match take_failure(self.workdir, self.simulate, step)? {
            None => Ok(()),
            Some(failure) => Err(Error::Failed {
                summary: failure.to_string(),
                detail: instance
                    .map(|i| vec![format!("  with {},", i.address())])
                    .unwrap_or_default(),
            }),
        }
    }

    /// Prints the start of `action`, then progress every [`PROGRESS_EVERY`] until `duration`
    /// has passed.
    fn perform(
        &self,
        action: &Action,
        duration: Duration,
        console: &mut Console<'_>,
    ) -> Result<()> {
        let address = action.instance.address();
        let id = action.instance.id();
        console.out(match action.kind {
            ActionKind::Create => format!("{address}: Creating..."),
            ActionKind::Update => format!("{address}: Modifying... [id={id}]"),
            ActionKind::Delete => format!("{address}: Destroying... [id={id}]"),
        });
        let started = Instant::now();
        let mut reported = Duration::ZERO;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= duration {
                return Ok(());
            }
            self.sleep((duration - elapsed).min(SLICE))?;
            let elapsed = started.elapsed();
            if elapsed < duration && elapsed >= reported + PROGRESS_EVERY {
                reported += PROGRESS_EVERY;
                let seconds = reported.as_secs();
                console.out(match action.kind {
                    ActionKind::Create => {
                        format!("{address}: Still creating... [{seconds}s elapsed]")
                    }
                    ActionKind::Update => {
                        format!("{address}: Still modifying... [id={id}, {seconds}s elapsed]")
                    }
                    ActionKind::Delete => {
                        format!("{address}: Still destroying... [id={id}, {seconds}s elapsed]")
                    }
                });
            }
        }
    }
}

fn completion(action: &Action, took: Duration) -> String {
    let address = action.instance.address();
    let id = action.instance.id();
    let seconds = took.as_secs();
    match action.kind {
        ActionKind::Create => format!("{address}: Creation complete after {seconds}s [id={id}]"),
        ActionKind::Update => {
            format!("{address}: Modifications complete after {seconds}s [id={id}]")
        }
        ActionKind::Delete => format!("{address}: Destruction complete after {seconds}s"),
    }
}

fn output(workdir: &Path, json: bool, name: Option<&str>, console: &mut Console<'_>) -> Result<u8> {
    let outputs = State::load(workdir)?.outputs;
    if let Some(name) = name {
        let output = outputs.get(name).ok_or_else(|| Error::Failed {
            summary: format!("Output {name:?} not found"),
            detail: vec![
                "The output variable requested could not be found in the state file.".to_owned(),
            ],
        })?;
        console.out(if json {
            pretty(&output.value)
        } else {
            output.value.to_string()
        });
        return Ok(0);
    }
    if json {
        let shown: serde_json::Map<String, Value> = outputs
            .iter()
            .map(|(name, output)| {
                (
                    name.clone(),
                    json!({"sensitive": output.sensitive, "type": output.kind, "value": output.value}),
                )
            })
            .collect();
        console.out(pretty(&Value::Object(shown)));
        return Ok(0);
    }
    if outputs.is_empty() {
        console.err("");
        console.err("Warning: No outputs found");
        console.err("");
        return Ok(0);
    }
    print_outputs(&outputs, console);
    Ok(0)
}

/// The `NAME = VALUE` lines of human-readable output, sensitive values hidden.
fn print_outputs(outputs: &BTreeMap<String, StateOutput>, console: &mut Console<'_>) {
    for (name, output) in outputs {
        let shown = if output.sensitive {
            "<sensitive>".to_owned()
        } else {
            output.value.to_string()
        };
        console.out(format!("{name} = {shown}"));
    }
}

fn unlock(workdir: &Path, id: &str, console: &mut Console<'_>) -> Result<u8> {
    match force_unlock(workdir, id) {
        Ok(_) => {
            console.out("Terraform state has been successfully unlocked!");
            console.out("");
            console
                .out("The state has been unlocked, and Terraform commands should now be able to");
            console.out("obtain a new lock on the remote state.");
            Ok(0)
        }
        Err(UnlockError::Other(e)) => Err(e),
        Err(e) => Err(Error::failed(format!("Failed to unlock state: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_lock::LOCK_FILE;
    use crate::test_support::{self, Run, args, assert_usage_errors, interrupt_after, simulate};

    fn run_in(dir: &Path, line: &str) -> Run {
        test_support::run_in(run, dir, line)
    }

    /// An instant workdir with `config` as its `main.tf.json`.
    fn workdir(config: Value) -> tempfile::TempDir {
        let dir = test_support::workdir();
        std::fs::write(dir.path().join("main.tf.json"), config.to_string()).unwrap();
        dir
    }

    fn vpc_config() -> Value {
        json!({
            "resource": {"aws_vpc": {"main": {"cidr_block": "10.0.0.0/16"}}},
            "output": {"vpc_id": {"value": "${aws_vpc.main.id}"}}
        })
    }

    #[test]
    fn init_takes_the_backends_partial_configuration_as_terraform_does() {
        assert_eq!(
            parse(&args(
                "init -input=false -no-color -backend-config=bucket=acme-state -backend-config=region=eu-west-1"
            ))
            .unwrap()
            .1,
            Command::Init
        );
        assert!(parse(&args("init -backend-config=bucket")).is_err());
    }

    #[test]
    fn flags_parse_in_any_order_with_one_or_two_dashes() {
        let (chdir, command) = parse(&args(
            "-chdir=env apply -no-color --lock-timeout=60s -input=false -auto-approve",
        ))
        .unwrap();
        assert_eq!(chdir, Some(PathBuf::from("env")));
        assert_eq!(
            command,
            Command::Apply {
                destroy: false,
                lock_timeout: Duration::from_secs(60),
                auto_approve: true,
                plan: None,
            }
        );
        assert_eq!(
            parse(&args("destroy -auto-approve")).unwrap().1,
            Command::Apply {
                destroy: true,
                lock_timeout: Duration::ZERO,
                auto_approve: true,
                plan: None,
            }
        );
        assert_eq!(
            parse(&args("apply -input=false tfplan")).unwrap().1,
            Command::Apply {
                destroy: false,
                lock_timeout: Duration::ZERO,
                auto_approve: false,
                plan: Some(PathBuf::from("tfplan")),
            }
        );
        assert_eq!(
            parse(&args("plan -out=tfplan -destroy")).unwrap().1,
            Command::Plan {
                destroy: true,
                lock_timeout: Duration::ZERO,
                detailed_exitcode: false,
                out: Some(PathBuf::from("tfplan")),
            }
        );
        assert_eq!(
            parse(&args("force-unlock -force abc")).unwrap().1,
            Command::ForceUnlock { id: "abc".into() }
        );
    }

    #[test]
    fn unknown_commands_flags_and_missing_approval_are_usage_errors() {
        assert_usage_errors(
            parse,
            &[
                "",
                "frobnicate",
                "apply -auto-approve -bogus",
                "apply a.tfplan b.tfplan",
                "apply -destroy a.tfplan",
                "destroy a.tfplan",
                "plan -out",
                "plan -out=",
                "apply -auto-approve -lock-timeout=soon",
                "apply -auto-approve -input=true",
                "init extra",
                "force-unlock abc",
                "force-unlock -force",
                "output a b",
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path(), "apply -wat");
        assert_eq!(run.code, 1);
        assert!(run.err.contains("Usage: terraform-standin"), "{}", run.err);
    }

    #[test]
    fn version_prints_the_standin_version() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path(), "version");
        assert_eq!(
            (run.code, run.out.trim()),
            (0, "Terraform v1.10.5 (standin)")
        );
        assert_eq!(run_in(dir.path(), "-version").out, run.out);
    }

    #[test]
    fn init_needs_the_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path(), "init -input=false -no-color");
        assert_eq!(run.code, 1);
        assert!(run.err.contains("No configuration files"), "{}", run.err);
        assert!(!dir.path().join(".terraform").exists());
    }

    #[test]
    fn apply_before_init_asks_for_init() {
        let dir = workdir(vpc_config());
        let run = run_in(dir.path(), "apply -auto-approve");
        assert_eq!(run.code, 1);
        assert!(run.err.contains("terraform init"), "{}", run.err);
    }

    #[test]
    fn apply_creates_state_and_outputs_then_a_second_apply_changes_nothing() {
        let dir = workdir(vpc_config());
        assert_eq!(run_in(dir.path(), "init -input=false -no-color").code, 0);
        let first = run_in(dir.path(), "apply -auto-approve -input=false -no-color");
        assert_eq!(first.code, 0, "{}", first.err);
        assert!(
            first.out.contains("aws_vpc.main: Creating..."),
            "{}",
            first.out
        );
        assert!(
            first
                .out
                .contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.")
        );
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap())
                .unwrap();
        assert_eq!(state["version"], 4);
        assert_eq!(state["resources"][0]["type"], "aws_vpc");
        let vpc_id = state["resources"][0]["instances"][0]["attributes"]["id"].clone();
        assert_eq!(state["outputs"]["vpc_id"]["value"], vpc_id);

        let second = run_in(dir.path(), "apply -auto-approve");
        assert_eq!(second.code, 0);
        assert!(
            second
                .out
                .contains("Resources: 0 added, 0 changed, 0 destroyed.")
        );
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn a_changed_configuration_updates_and_removes_instances() {
        let dir = workdir(json!({"resource": {
            "aws_vpc": {"main": {"cidr_block": "10.0.0.0/16"}},
            "aws_eip": {"nat": {"domain": "vpc"}}
        }}));
        run_in(dir.path(), "init");
        assert_eq!(run_in(dir.path(), "apply -auto-approve").code, 0);
        std::fs::write(
            dir.path().join("main.tf.json"),
            json!({"resource": {"aws_vpc": {"main": {"cidr_block": "10.1.0.0/16"}}}}).to_string(),
        )
        .unwrap();
        let plan = run_in(dir.path(), "plan -detailed-exitcode");
        assert_eq!(plan.code, 2);
        assert!(
            plan.out
                .contains("Plan: 0 to add, 1 to change, 1 to destroy."),
            "{}",
            plan.out
        );
        let run = run_in(dir.path(), "apply -auto-approve");
        assert!(
            run.out
                .contains("Resources: 0 added, 1 changed, 1 destroyed."),
            "{}",
            run.out
        );
        assert_eq!(run_in(dir.path(), "plan -detailed-exitcode").code, 0);
    }

    #[test]
    fn destroy_removes_resources_and_outputs() {
        let dir = workdir(vpc_config());
        run_in(dir.path(), "init");
        run_in(dir.path(), "apply -auto-approve");
        let run = run_in(dir.path(), "destroy -auto-approve");
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(
            run.out
                .contains("Destroy complete! Resources: 1 destroyed.")
        );
        let state = State::load(dir.path()).unwrap();
        assert!(state.resources.is_empty() && state.outputs.is_empty());
        assert_eq!(run_in(dir.path(), "output -json").out.trim(), "{}");
    }

    #[test]
    fn output_json_shows_sensitive_values_and_a_single_name() {
        let dir = workdir(json!({"output": {
            "endpoint": {"value": "https://x"},
            "password": {"value": "hunter2", "sensitive": true}
        }}));
        run_in(dir.path(), "init");
        assert_eq!(run_in(dir.path(), "output -json").out.trim(), "{}");
        run_in(dir.path(), "apply -auto-approve");
        let all: Value = serde_json::from_str(&run_in(dir.path(), "output -json").out).unwrap();
        assert_eq!(
            all,
            json!({
                "endpoint": {"sensitive": false, "type": "string", "value": "https://x"},
                "password": {"sensitive": true, "type": "string", "value": "hunter2"}
            })
        );
        assert_eq!(
            run_in(dir.path(), "output -json endpoint").out.trim(),
            "\"https://x\""
        );
        assert_eq!(run_in(dir.path(), "output -json nope").code, 1);
        assert!(
            run_in(dir.path(), "output")
                .out
                .contains("password = <sensitive>")
        );
    }

    #[test]
    fn an_injected_infra_failure_keeps_finished_resources_for_the_retry() {
        let dir = workdir(json!({"resource": {
            "aws_vpc": {"main": {}},
            "aws_subnet": {"a": {}}
        }}));
        simulate(
            dir.path(),
            r#"{"apply_seconds": 0, "fail": "infra", "fail_times": 1}"#,
        );
        run_in(dir.path(), "init");
        let failed = run_in(dir.path(), "apply -auto-approve");
        assert_eq!(failed.code, 1);
        assert!(
            failed
                .err
                .contains("Error: simulated infra failure (attempt 1 of 1)"),
            "{}",
            failed.err
        );
        assert_eq!(State::load(dir.path()).unwrap().instances().len(), 1);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let retried = run_in(dir.path(), "apply -auto-approve");
        assert_eq!(retried.code, 0, "{}", retried.err);
        assert!(
            retried.out.contains("Resources: 1 added"),
            "{}",
            retried.out
        );
    }

    #[test]
    fn an_interrupted_apply_keeps_what_it_created_and_releases_the_lock() {
        let dir = workdir(json!({"resource": {
            "aws_vpc": {"main": {}},
            "aws_subnet": {"a": {}, "b": {}}
        }}));
        simulate(dir.path(), r#"{"apply_seconds": 3}"#);
        run_in(dir.path(), "init");
        let interrupt = interrupt_after(Duration::from_millis(1300));
        let started = Instant::now();
        let Run { code, out, .. } =
            test_support::run_with(run, dir.path(), "apply -auto-approve", &interrupt);
        assert_eq!(code, 1);
        assert!(started.elapsed() < Duration::from_millis(1600));
        assert!(
            out.contains("Interrupt received. Gracefully shutting down..."),
            "{out}"
        );
        assert_eq!(State::load(dir.path()).unwrap().instances().len(), 1);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let runs = crate::overlap::runs(dir.path()).unwrap();
        assert_eq!(runs[0].outcome, Outcome::Interrupted);
    }

    #[test]
    fn a_saved_plan_applies_exactly_its_actions_with_its_own_configuration() {
        let dir = workdir(vpc_config());
        run_in(dir.path(), "init");
        let plan = run_in(dir.path(), "plan -input=false -out=tfplan");
        assert_eq!(plan.code, 0, "{}", plan.err);
        assert!(
            plan.out.contains("Saved the plan to: tfplan"),
            "{}",
            plan.out
        );
        // A configuration changed after the plan does not change what the plan applies.
        std::fs::write(
            dir.path().join("main.tf.json"),
            json!({"resource": {"aws_eip": {"nat": {}}}}).to_string(),
        )
        .unwrap();
        let applied = run_in(dir.path(), "apply -input=false -no-color tfplan");
        assert_eq!(applied.code, 0, "{}", applied.err);
        assert!(
            applied
                .out
                .contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed."),
            "{}",
            applied.out
        );
        let state = State::load(dir.path()).unwrap();
        assert_eq!(state.instances()[0].address(), "aws_vpc.main");
        assert!(state.outputs.contains_key("vpc_id"));
    }

    #[test]
    fn a_plan_is_stale_once_another_apply_changed_the_state() {
        let dir = workdir(vpc_config());
        run_in(dir.path(), "init");
        assert_eq!(run_in(dir.path(), "plan -out=first.tfplan").code, 0);
        assert_eq!(run_in(dir.path(), "plan -out=second.tfplan").code, 0);
        assert_eq!(run_in(dir.path(), "apply first.tfplan").code, 0);
        let serial = State::load(dir.path()).unwrap().serial;
        let stale = run_in(dir.path(), "apply second.tfplan");
        assert_eq!(stale.code, 1);
        assert!(
            stale.err.contains("Error: Saved plan is stale"),
            "{}",
            stale.err
        );
        assert!(
            stale
                .err
                .contains("the state was changed by another operation after the plan was created"),
            "{}",
            stale.err
        );
        assert_eq!(
            State::load(dir.path()).unwrap().serial,
            serial,
            "nothing changed"
        );
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn a_destroy_plan_destroys_and_a_missing_plan_file_is_named() {
        let dir = workdir(vpc_config());
        run_in(dir.path(), "init");
        run_in(dir.path(), "apply -auto-approve");
        assert_eq!(run_in(dir.path(), "plan -destroy -out=gone").code, 0);
        let run = run_in(dir.path(), "apply gone");
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(
            run.out
                .contains("Destroy complete! Resources: 1 destroyed."),
            "{}",
            run.out
        );
        let missing = run_in(dir.path(), "apply nope.tfplan");
        assert_eq!(missing.code, 1);
        assert!(
            missing
                .err
                .contains("Error: Failed to load \"nope.tfplan\" as a plan file"),
            "{}",
            missing.err
        );
    }

    #[test]
    fn apply_without_a_plan_or_approval_stops_at_the_prompt_and_changes_nothing() {
        let dir = workdir(vpc_config());
        run_in(dir.path(), "init");
        let run = run_in(dir.path(), "apply -input=false");
        assert_eq!(run.code, 1);
        assert!(
            run.out.contains("Do you want to perform these actions?"),
            "{}",
            run.out
        );
        assert!(
            run.err.contains("Error: error asking for approval: EOF"),
            "{}",
            run.err
        );
        assert!(State::load(dir.path()).unwrap().instances().is_empty());
        // Nothing to change needs no approval.
        let destroy = run_in(dir.path(), "destroy -input=false");
        assert_eq!(destroy.code, 0, "{}", destroy.err);
    }

    #[test]
    fn transient_failures_fail_the_first_runs_before_any_change() {
        let dir = workdir(vpc_config());
        simulate(
            dir.path(),
            r#"{"apply_seconds": 0, "transient_failures": 2}"#,
        );
        run_in(dir.path(), "init");
        let plan = run_in(dir.path(), "plan -out=tfplan");
        assert_eq!(plan.code, 1);
        assert!(
            plan.err.contains("api error Throttling: Rate exceeded"),
            "{}",
            plan.err
        );
        assert!(!dir.path().join("tfplan").exists());
        let apply = run_in(dir.path(), "apply -auto-approve");
        assert_eq!(apply.code, 1);
        assert!(
            apply.err.contains("transient failure 2 of 2"),
            "{}",
            apply.err
        );
        assert!(State::load(dir.path()).unwrap().instances().is_empty());
        assert_eq!(run_in(dir.path(), "plan -out=tfplan").code, 0);
        assert_eq!(run_in(dir.path(), "apply tfplan").code, 0);
    }

    #[test]
    fn chdir_runs_in_another_directory() {
        let dir = workdir(vpc_config());
        let parent = dir.path().parent().unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy();
        let run = run_in(parent, &format!("-chdir={name} init"));
        assert_eq!(run.code, 0, "{}", run.err);
        assert!(dir.path().join(".terraform").is_dir());
        assert_eq!(run_in(parent, "-chdir=does-not-exist-here init").code, 1);
    }
}
