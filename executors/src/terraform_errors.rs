//! What a failed terraform run says: whether trying again can help ([`classify`]), and the lines
//! worth reporting ([`relevant_lines`]).
//!
//! Terraform prints each problem as a diagnostic on stderr — with `-no-color`:
//!
//! ```text
//! Error: creating EC2 VPC: operation error EC2: CreateVpc, https response error StatusCode: 503, ...
//!
//!   with aws_vpc.main,
//!   on main.tf.json line 1:
//!    1: {"resource": ...}
//!
//! <detail>
//! ```
//!
//! The AWS provider (on the AWS SDK for Go v2) puts the service's error code and message into
//! the summary line (`api error <Code>: <message>`); older texts (SDK v1) read `<Code>: <message>
//! status code: NNN`. Both are matched by the patterns of [`PATTERNS`], one table.
//!
//! Terraform's exit status says nothing more (1 for every error); a terraform killed by a signal
//! printed no diagnostic and is classified by what it printed, like any other run: nothing known
//! means permanent.

use crate::driver::StepError;
use crate::process::{Finished, MESSAGE_LINES};

/// Whether a failed terraform run is worth running again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A throttled, unavailable or unreachable cloud, or a state lock still held by a live
    /// run: the same command can succeed a little later.
    Retryable(Cause),
    /// Running it again changes nothing (invalid configuration, missing permission, exhausted
    /// quota — or a failure this table does not know, `None`).
    Permanent(Option<Cause>),
}

/// Why a run failed, as far as its diagnostics say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Throttling,
    ServerError,
    Network,
    LockHeld,
    StalePlan,
    Validation,
    Permission,
    Quota,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Throttling => "the cloud API throttled the request",
            Cause::ServerError => "the cloud API had a server error",
            Cause::Network => "the cloud API could not be reached",
            Cause::LockHeld => "another run still holds the state lock",
            Cause::StalePlan => "the state changed between the plan and its apply",
            Cause::Validation => "a value or argument is invalid",
            Cause::Permission => "a permission is missing",
            Cause::Quota => "an account limit is reached",
        }
    }

    fn retryable(self) -> bool {
        matches!(
            self,
            Cause::Throttling
                | Cause::ServerError
                | Cause::Network
                | Cause::LockHeld
                | Cause::StalePlan
        )
    }
}

/// What to look for in a diagnostic.
#[derive(Clone, Copy, Debug)]
enum Needle {
    /// The text, case-sensitive.
    Text(&'static str),
    /// The text followed by an HTTP 5xx status (`StatusCode: 503`).
    Http5xx(&'static str),
}

impl Needle {
    fn found_in(self, text: &str) -> bool {
        match self {
            Needle::Text(needle) => text.contains(needle),
            Needle::Http5xx(prefix) => text.match_indices(prefix).any(|(at, _)| {
                let status = &text.as_bytes()[at + prefix.len()..];
                status.len() >= 3
                    && status[0] == b'5'
                    && status[1].is_ascii_digit()
                    && status[2].is_ascii_digit()
                    && status.get(3).is_none_or(|b| !b.is_ascii_digit())
            }),
        }
    }
}

/// The diagnostics this module knows, in the order they are tried: in each diagnostic the first
/// pattern found decides. The transient ones come first: `RequestLimitExceeded` (throttling)
/// must win over `LimitExceeded` (a quota).
const PATTERNS: &[(Needle, Cause)] = &[
    // `api error Throttling: Rate exceeded` (Route 53, IAM, EKS, ...); `ThrottlingException`.
    (Needle::Text("Throttling"), Cause::Throttling),
    // EC2's throttling code, answered with HTTP 503: `RequestLimitExceeded: Request limit
    // exceeded.`
    (Needle::Text("RequestLimitExceeded"), Cause::Throttling),
    // `TooManyRequestsException` (Lambda, API Gateway, ...).
    (Needle::Text("TooManyRequests"), Cause::Throttling),
    // HTTP 429 in the SDK v2's `https response error StatusCode: 429`.
    (Needle::Text("StatusCode: 429"), Cause::Throttling),
    // The message of the `Throttling` code, when a service names its code otherwise.
    (Needle::Text("Rate exceeded"), Cause::Throttling),
    // S3's throttling: `api error SlowDown: Please reduce your request rate.`
    (Needle::Text("SlowDown"), Cause::Throttling),
    // The SDK v2's client-side retry budget ran out (`failed to get rate limit token, retry
    // quota exceeded, 0 available, 5 requested`): it refills with time.
    (Needle::Text("retry quota exceeded"), Cause::Throttling),
    // A 5xx answer: SDK v2 `https response error StatusCode: 503`, SDK v1 `status code: 500`.
    (Needle::Http5xx("StatusCode: "), Cause::ServerError),
    (Needle::Http5xx("status code: "), Cause::ServerError),
    // Error codes of a server-side failure: `InternalError` (EC2), `InternalFailure` (the
    // common one), `InternalServerError` (SSM, ...), `ServiceUnavailable`.
    (Needle::Text("InternalError"), Cause::ServerError),
    (Needle::Text("InternalFailure"), Cause::ServerError),
    (Needle::Text("InternalServerError"), Cause::ServerError),
    (Needle::Text("ServiceUnavailable"), Cause::ServerError),
    // Go's network errors under `request send failed, Post "https://...": ...`.
    (Needle::Text("connection reset"), Cause::Network),
    (Needle::Text("i/o timeout"), Cause::Network),
    // `dial tcp: lookup sts.us-east-1.amazonaws.com ...: no such host` — usually a resolver
    // hiccup; a wrong endpoint fails the same way every time, and the retries are bounded.
    (Needle::Text("no such host"), Cause::Network),
    (Needle::Text("TLS handshake timeout"), Cause::Network),
    // Terraform's `Error acquiring the state lock` after `-lock-timeout`, a lock the driver did
    // not force open: its holder is not known to be dead, and may finish.
    (
        Needle::Text("Error acquiring the state lock"),
        Cause::LockHeld,
    ),
    // Another run changed the state between our plan and its apply: planning again (the retry
    // runs plan and apply together) sees that change.
    (Needle::Text("Saved plan is stale"), Cause::StalePlan),
    // Terraform's own validation diagnostics.
    (Needle::Text("Invalid value"), Cause::Validation),
    (Needle::Text("Unsupported argument"), Cause::Validation),
    (Needle::Text("Missing required argument"), Cause::Validation),
    // AWS's `InvalidParameterValue`, `InvalidParameterCombination`, `InvalidParameterException`.
    (Needle::Text("InvalidParameter"), Cause::Validation),
    // `ValidationError` (IAM, CloudFormation), `ValidationException` (EKS, ...).
    (Needle::Text("ValidationError"), Cause::Validation),
    (Needle::Text("ValidationException"), Cause::Validation),
    // `AccessDenied`, `AccessDeniedException`.
    (Needle::Text("AccessDenied"), Cause::Permission),
    // EC2: `UnauthorizedOperation: You are not authorized to perform this operation.`
    (Needle::Text("UnauthorizedOperation"), Cause::Permission),
    // IAM policy denials: `User: arn:aws:sts::...:assumed-role/... is not authorized to perform:
    // eks:CreateCluster on resource: ...`.
    (Needle::Text("not authorized to perform"), Cause::Permission),
    // Quotas: `VcpuLimitExceeded`, `AddressLimitExceeded`, `VpcLimitExceeded`,
    // `LimitExceededException` (EKS, IAM, ...).
    (Needle::Text("LimitExceeded"), Cause::Quota),
    // Quotas said in words: `You have exceeded your ...`.
    (Needle::Text("exceeded your"), Cause::Quota),
];

/// Classifies a failed run by its stderr: retryable only when every error diagnostic is known
/// to be transient; permanent as soon as one is not (trying again cannot fix that one).
pub fn classify(stderr: &str) -> Class {
    let diagnostics = split_diagnostics(stderr);
    let texts: Vec<String> = if diagnostics.is_empty() {
        vec![stderr.to_owned()]
    } else {
        diagnostics.iter().map(Diagnostic::text).collect()
    };
    let mut first_transient = None;
    for text in &texts {
        match cause_of(text) {
            Some(cause) if cause.retryable() => {
                first_transient.get_or_insert(cause);
            }
            other => return Class::Permanent(other),
        }
    }
    match first_transient {
        Some(cause) => Class::Retryable(cause),
        None => Class::Permanent(None),
    }
}

fn cause_of(diagnostic: &str) -> Option<Cause> {
    PATTERNS
        .iter()
        .find(|(needle, _)| needle.found_in(diagnostic))
        .map(|(_, cause)| *cause)
}

/// One `Error:` diagnostic: its summary and the lines after it.
#[derive(Debug, PartialEq, Eq)]
struct Diagnostic<'a> {
    summary: &'a str,
    body: Vec<&'a str>,
}

impl Diagnostic<'_> {
    fn text(&self) -> String {
        let mut text = self.summary.to_owned();
        for line in &self.body {
            text.push('\n');
            text.push_str(line);
        }
        text
    }
}

/// A line without the box terraform draws around diagnostics on a terminal (`╷`, `│ `, `╵`).
fn unboxed(line: &str) -> &str {
    let line = line.trim_end();
    match ['│', '╷', '╵'].iter().find_map(|c| line.strip_prefix(*c)) {
        Some(inside) => inside.strip_prefix(' ').unwrap_or(inside),
        None => line,
    }
}

/// The `Error:` diagnostics of terraform's output, each up to the next `Error:` or `Warning:`.
fn split_diagnostics(stderr: &str) -> Vec<Diagnostic<'_>> {
    let mut diagnostics: Vec<Diagnostic<'_>> = Vec::new();
    let mut in_error = false;
    for line in stderr.lines().map(unboxed) {
        if line.starts_with("Error: ") {
            diagnostics.push(Diagnostic {
                summary: line,
                body: Vec::new(),
            });
            in_error = true;
        } else if line.starts_with("Warning: ") {
            in_error = false;
        } else if in_error && let Some(last) = diagnostics.last_mut() {
            last.body.push(line);
        }
    }
    diagnostics
}

/// Whether a body line is part of the source snippet (`on main.tf.json line 1:` and the quoted
/// lines under it), which says nothing the `with <address>` line does not.
fn is_source_context(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.starts_with("on ") && trimmed.contains(" line ") {
        return true;
    }
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && trimmed[digits..].starts_with(':')
}

/// The first relevant lines of a failed run's stderr, at most [`MESSAGE_LINES`]: every `Error:`
/// summary first (the whole story of most AWS failures), then the diagnostics' details in order
/// (without the source snippets). `None` when there is no `Error:` diagnostic.
pub fn relevant_lines(stderr: &str) -> Option<String> {
    let diagnostics = split_diagnostics(stderr);
    if diagnostics.is_empty() {
        return None;
    }
    let mut lines: Vec<&str> = diagnostics.iter().map(|d| d.summary).collect();
    lines.dedup();
    for diagnostic in &diagnostics {
        let mut body: Vec<&str> = diagnostic
            .body
            .iter()
            .copied()
            .filter(|line| !line.trim().is_empty() && !is_source_context(line))
            .collect();
        if body.is_empty() {
            continue;
        }
        lines.push("");
        lines.append(&mut body);
    }
    if lines.len() > MESSAGE_LINES {
        lines.truncate(MESSAGE_LINES - 1);
        lines.push("...");
    }
    Some(lines.join("\n"))
}

/// The failure of a terraform run, as the step reports it: its relevant lines, or the tail of its
/// output when it printed no diagnostic.
pub fn failure(finished: &Finished) -> StepError {
    let message =
        relevant_lines(&finished.stderr_text()).unwrap_or_else(|| finished.error_message());
    StepError::failed(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A permission failure of an apply, as the AWS provider v5 prints it with `-no-color`: a
    /// resource that was created, the diagnostic with its source snippet, and a second one.
    const ACCESS_DENIED: &str = "\
aws_vpc.main: Creation complete after 2s [id=vpc-0a1b2c3d]
aws_eks_cluster.main: Creating...

Error: creating EKS Cluster (beta9-demo): operation error EKS: CreateCluster, https response error StatusCode: 403, RequestID: 5e1e8c3a-0000-4000-8000-000000000001, api error AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/provisioner/provisioner-env_1 is not authorized to perform: eks:CreateCluster on resource: arn:aws:eks:us-east-1:123456789012:cluster/beta9-demo

  with aws_eks_cluster.main,
  on main.tf.json line 1:
   1: {\"output\":{\"cluster_name\":{\"value\":\"${aws_eks_cluster.main.name}\"}}}


Error: creating IAM Role (beta9-demo-nodes): operation error IAM: CreateRole, https response error StatusCode: 403, RequestID: 5e1e8c3a-0000-4000-8000-000000000002, api error AccessDenied: User is not authorized to perform: iam:CreateRole

  with aws_iam_role.nodes,
  on main.tf.json line 1:
   1: {\"output\":{}}

";

    const THROTTLED: &str = "
Error: reading EC2 VPC (vpc-0a1b2c3d): operation error EC2: DescribeVpcs, exceeded maximum number of attempts, 25, https response error StatusCode: 503, RequestID: 00000000-0000-4000-8000-000000000003, api error RequestLimitExceeded: Request limit exceeded.

  with aws_vpc.main,
  on main.tf.json line 1:
   1: {}
";

    fn class(stderr: &str) -> Class {
        classify(stderr)
    }

    #[test]
    fn throttling_server_errors_and_network_failures_are_retryable() {
        let retryable = [
            (THROTTLED, Cause::Throttling),
            (
                "Error: creating Route 53 Record: operation error Route 53: ChangeResourceRecordSets, https response error StatusCode: 400, RequestID: x, api error Throttling: Rate exceeded",
                Cause::Throttling,
            ),
            (
                "Error: updating Lambda Function: TooManyRequestsException: Rate exceeded",
                Cause::Throttling,
            ),
            (
                "Error: putting S3 object: operation error S3: PutObject, https response error StatusCode: 503, api error SlowDown: Please reduce your request rate.",
                Cause::Throttling,
            ),
            (
                "Error: creating EKS Node Group: operation error EKS: CreateNodegroup, https response error StatusCode: 500, RequestID: x, api error ServerException: internal",
                Cause::ServerError,
            ),
            (
                "Error: describing SSM parameter: InternalServerError: No Content-Type received. Service returned the HTTP status code: 500",
                Cause::ServerError,
            ),
            (
                "Error: reading EC2 Instance: RequestError: send request failed\ncaused by: Post \"https://ec2.us-east-1.amazonaws.com/\": read tcp 10.0.0.2:51234->52.94.1.1:443: read: connection reset by peer",
                Cause::Network,
            ),
            (
                "Error: configuring Terraform AWS Provider: validating provider credentials: retrieving caller identity from STS: operation error STS: GetCallerIdentity, https response error StatusCode: 0, RequestID: , request send failed, Post \"https://sts.us-east-1.amazonaws.com/\": dial tcp: lookup sts.us-east-1.amazonaws.com on 10.0.0.2:53: no such host",
                Cause::Network,
            ),
            (
                "Error: reading IAM Role: Post \"https://iam.amazonaws.com/\": net/http: TLS handshake timeout",
                Cause::Network,
            ),
            (
                "the state is locked by another run (lock abc) that is not known to be dead; retry once it has finished. Error: Error acquiring the state lock\n\nError message: resource temporarily unavailable\nLock Info:\n  ID:        abc",
                Cause::LockHeld,
            ),
            (
                "Error: Saved plan is stale\n\nThe given plan file can no longer be applied because the state was changed by another operation after the plan was created.",
                Cause::StalePlan,
            ),
        ];
        for (stderr, cause) in retryable {
            assert_eq!(class(stderr), Class::Retryable(cause), "{stderr}");
        }
    }

    #[test]
    fn validation_permission_and_quota_failures_are_permanent() {
        let permanent = [
            (ACCESS_DENIED, Cause::Permission),
            (
                "Error: launching EC2 Instance: UnauthorizedOperation: You are not authorized to perform this operation. Encoded authorization failure message: abc\n\tstatus code: 403, request id: x",
                Cause::Permission,
            ),
            (
                "Error: creating EC2 Instance: operation error EC2: RunInstances, https response error StatusCode: 400, RequestID: x, api error VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to.",
                Cause::Quota,
            ),
            (
                "Error: creating EC2 EIP: AddressLimitExceeded: The maximum number of addresses has been reached.\n\tstatus code: 400, request id: x",
                Cause::Quota,
            ),
            (
                "Error: Invalid value for input variable\n\n  on main.tf.json line 3:\n\nThe given value is not suitable.",
                Cause::Validation,
            ),
            (
                "Error: Unsupported argument\n\n  on main.tf.json line 1:\n   1: {}\n\nAn argument named \"foo\" is not expected here.",
                Cause::Validation,
            ),
            (
                "Error: creating RDS DB Instance: operation error RDS: CreateDBInstance, https response error StatusCode: 400, RequestID: x, api error InvalidParameterCombination: Cannot find version 99.1 for postgres",
                Cause::Validation,
            ),
        ];
        for (stderr, cause) in permanent {
            assert_eq!(class(stderr), Class::Permanent(Some(cause)), "{stderr}");
        }
    }

    #[test]
    fn one_permanent_diagnostic_makes_the_run_permanent_and_unknown_is_permanent() {
        let mixed = format!("{THROTTLED}\n{ACCESS_DENIED}");
        assert_eq!(class(&mixed), Class::Permanent(Some(Cause::Permission)));
        assert_eq!(
            class("Error: simulated infra failure (attempt 1 of 1)"),
            Class::Permanent(None)
        );
        assert_eq!(class(""), Class::Permanent(None));
        // Throttling's code wins over the quota pattern it contains.
        assert_eq!(
            class("Error: RequestLimitExceeded: Request limit exceeded."),
            Class::Retryable(Cause::Throttling)
        );
        // A 4xx is not a server error, and a 5xx needs exactly three digits.
        assert_eq!(
            class("Error: x: https response error StatusCode: 404, api error NotFound"),
            Class::Permanent(None)
        );
        assert_eq!(class("Error: StatusCode: 5000"), Class::Permanent(None));
    }

    #[test]
    fn boxed_diagnostics_of_a_terminal_are_read_the_same() {
        let boxed = "╷\n│ Error: reading EC2 VPC: api error Throttling: Rate exceeded\n│ \n│   with aws_vpc.main,\n╵\n";
        assert_eq!(class(boxed), Class::Retryable(Cause::Throttling));
        assert_eq!(
            relevant_lines(boxed).unwrap(),
            "Error: reading EC2 VPC: api error Throttling: Rate exceeded\n\n  with aws_vpc.main,"
        );
    }

    #[test]
    fn relevant_lines_put_every_error_summary_first_then_the_details_without_snippets() {
        let lines = relevant_lines(ACCESS_DENIED).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert!(
            lines[0].starts_with("Error: creating EKS Cluster (beta9-demo)"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("Error: creating IAM Role (beta9-demo-nodes)"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[2..],
            [
                "",
                "  with aws_eks_cluster.main,",
                "",
                "  with aws_iam_role.nodes,"
            ]
        );
        assert!(!lines.iter().any(|l| l.contains("Creation complete")));
    }

    #[test]
    fn relevant_lines_keep_the_detail_and_are_bounded() {
        let stderr = "\nError: Invalid value\n\n  on main.tf.json line 2:\n   2: \"x\"\n\nThe value must be a number.\n";
        assert_eq!(
            relevant_lines(stderr).unwrap(),
            "Error: Invalid value\n\nThe value must be a number."
        );
        let many: String = (0..30).map(|n| format!("Error: problem {n}\n")).collect();
        let lines = relevant_lines(&many).unwrap();
        assert_eq!(lines.lines().count(), MESSAGE_LINES);
        assert!(lines.starts_with("Error: problem 0\n"));
        assert!(lines.ends_with("\n..."));
        assert_eq!(relevant_lines("plain failure\n"), None);
    }

    #[test]
    fn warnings_are_not_part_of_an_error() {
        let stderr = "Warning: Argument is deprecated\n\nuse something else\n\nError: Unsupported argument\n\nAn argument named \"x\" is not expected here.\n\nWarning: Deprecated\n\nRate exceeded in a warning\n";
        assert_eq!(class(stderr), Class::Permanent(Some(Cause::Validation)));
        assert_eq!(
            relevant_lines(stderr).unwrap(),
            "Error: Unsupported argument\n\nAn argument named \"x\" is not expected here."
        );
    }
}
