//! Rules for single values: each returns what is wrong, in words a user can act on.

use crate::text::shown;

/// AWS commercial regions an environment may be created in.
pub const AWS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
];

/// The sandbox's own region, its default.
pub const SANDBOX_REGION: &str = "sandbox-local";

const NAME_MAX_CHARS: usize = 40;
const ROLE_NAME_MAX_CHARS: usize = 64;
const ROLE_PATH_MAX_CHARS: usize = 512;
const EXTERNAL_ID_CHARS: std::ops::RangeInclusive<usize> = 2..=1224;
const DOMAIN_MAX_CHARS: usize = 253;
const LABEL_MAX_CHARS: usize = 63;
const EXAMPLE_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/Beta9Provisioner";

/// 1-40 chars of `[a-z0-9-]`, starting with a letter, not ending with `-`: `Err` says what is
/// wrong.
pub fn environment_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(format!(
            "must be at most {NAME_MAX_CHARS} characters, got {chars}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "may contain only lowercase letters, digits and '-', found {c:?}"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".to_owned());
    }
    if name.ends_with('-') {
        return Err("must not end with '-'".to_owned());
    }
    Ok(())
}

pub(super) fn aws_region(region: &str) -> Result<(), String> {
    if AWS_REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a supported aws region, expected one of: {}",
            shown(region),
            AWS_REGIONS.join(", ")
        ))
    }
}

/// The sandbox accepts its own region or any AWS one (to mimic a real environment's shape).
pub(super) fn sandbox_region(region: &str) -> Result<(), String> {
    if region == SANDBOX_REGION || AWS_REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a supported region, expected {SANDBOX_REGION} or one of: {}",
            shown(region),
            AWS_REGIONS.join(", ")
        ))
    }
}

pub(super) fn account_id(account: &str) -> Result<(), String> {
    if is_account_id(account) {
        Ok(())
    } else {
        Err(format!("must be exactly 12 digits, got {}", shown(account)))
    }
}

fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:aws:iam::<12 digits>:role/<optional/path/><name>`; returns the account it names.
pub(super) fn role_arn(arn: &str) -> Result<&str, String> {
    let rest = arn.strip_prefix("arn:aws:iam::").ok_or_else(|| {
        format!(
            "must be an iam role arn like {EXAMPLE_ROLE_ARN:?}, got {}",
            shown(arn)
        )
    })?;
    let (account, resource) = rest
        .split_once(':')
        .ok_or_else(|| format!("must be an iam role arn like {EXAMPLE_ROLE_ARN:?}"))?;
    if !is_account_id(account) {
        return Err(format!(
            "the account in the arn must be 12 digits, got {}",
            shown(account)
        ));
    }
    let role = resource.strip_prefix("role/").ok_or_else(|| {
        format!(
            "must name a role (\"...:role/<name>\"), got {}",
            shown(resource)
        )
    })?;
    // `role/name` or `role/path/to/name`: every segment, path ones included, is non-empty.
    let (path, name) = match role.rsplit_once('/') {
        Some((path, name)) => (Some(path), name),
        None => (None, role),
    };
    if !is_role_name(name) {
        return Err(format!(
            "the role name must be 1-{ROLE_NAME_MAX_CHARS} letters, digits or any of +=,.@_-, got {}",
            shown(name)
        ));
    }
    if let Some(path) = path
        && (path.len() >= ROLE_PATH_MAX_CHARS || !path.split('/').all(is_role_name))
    {
        return Err(format!(
            "the role path must be segments of letters, digits or any of +=,.@_- separated by '/', got {}",
            shown(path)
        ));
    }
    Ok(account)
}

fn is_role_name(name: &str) -> bool {
    (1..=ROLE_NAME_MAX_CHARS).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// The STS external id: 2-1224 chars of `[A-Za-z0-9+=,.@:/_-]`.
pub(super) fn external_id(id: &str) -> Result<(), String> {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c));
    if EXTERNAL_ID_CHARS.contains(&id.len()) && valid_chars {
        Ok(())
    } else {
        Err(format!(
            "must be {}-{} letters, digits or any of +=,.@:/_-",
            EXTERNAL_ID_CHARS.start(),
            EXTERNAL_ID_CHARS.end()
        ))
    }
}

/// A lowercase DNS name of at least two labels, e.g. `api.beta9.example.com`.
pub(super) fn domain_name(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if domain.len() > DOMAIN_MAX_CHARS {
        return Err(format!(
            "must be at most {DOMAIN_MAX_CHARS} characters, got {}",
            domain.len()
        ));
    }
    if domain.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("must be lowercase, got {}", shown(domain)));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "may contain only lowercase letters, digits, '-' and '.', found {c:?}"
        ));
    }
    if !domain.contains('.') {
        return Err(format!(
            "must have at least two labels, e.g. \"api.example.com\", got {}",
            shown(domain)
        ));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("must not have empty labels (leading, trailing or double dots)".to_owned());
        }
        if label.len() > LABEL_MAX_CHARS {
            return Err(format!(
                "each label must be at most {LABEL_MAX_CHARS} characters, {} is longer",
                shown(label)
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "labels must not start or end with '-', got {}",
                shown(label)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_returns_the_account_it_names() {
        assert_eq!(
            role_arn("arn:aws:iam::123456789012:role/a/b/Name"),
            Ok("123456789012")
        );
        assert!(role_arn("arn:aws:iam::123456789012:role/a/b/").is_err());
        assert!(role_arn("arn:aws:iam::123456789012:role/a//Name").is_err());
        assert!(
            role_arn(&format!(
                "arn:aws:iam::123456789012:role/{}",
                "r".repeat(64)
            ))
            .is_ok()
        );
    }

    #[test]
    fn domain_name_accepts_the_longest_legal_name_and_no_longer() {
        let label = "a".repeat(LABEL_MAX_CHARS);
        let longest = [label.as_str(), &label, &label, &"b".repeat(61)].join(".");
        assert_eq!(longest.len(), DOMAIN_MAX_CHARS);
        assert_eq!(domain_name(&longest), Ok(()));
        assert!(domain_name(&format!("{longest}c")).is_err());
        assert_eq!(domain_name("a-1.b2"), Ok(()));
    }

    #[test]
    fn external_id_bounds_are_inclusive() {
        assert_eq!(external_id("ab"), Ok(()));
        assert_eq!(external_id(&"a".repeat(1224)), Ok(()));
        assert!(external_id(&"a".repeat(1225)).is_err());
    }

    #[test]
    fn sandbox_accepts_its_own_region_and_aws_ones() {
        assert_eq!(sandbox_region("sandbox-local"), Ok(()));
        assert_eq!(sandbox_region("ap-south-1"), Ok(()));
        assert!(aws_region("sandbox-local").is_err());
    }
}
