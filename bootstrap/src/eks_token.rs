//! The bearer token an EKS cluster accepts, made in memory as `aws-iam-authenticator` (and
//! `aws eks get-token`) make it: a presigned STS `GetCallerIdentity` URL, with the
//! `x-k8s-aws-id: <cluster name>` header signed in, SigV4 with the assumed customer-role
//! credentials, valid 60 s for STS; the token is `k8s-aws-v1.` and the URL in base64url without
//! padding. EKS accepts a token for about 15 minutes; [`TokenSource`] makes a new one after
//! [`TokenSource::REFRESH_AFTER`]. Nothing of it is written anywhere, and neither the token nor
//! the credentials have a `Display` or an unredacted `Debug`.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

/// What every EKS token starts with.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// How long STS honours the presigned URL (aws-iam-authenticator's value).
pub const URL_EXPIRES: Duration = Duration::from_secs(60);

/// The assumed customer-role session: kept in memory only, the secret parts as secrets.
#[derive(Clone)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Always present for an assumed role; `None` only for long-term keys.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where and for which cluster tokens are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenTarget {
    pub cluster_name: String,
    pub region: String,
    /// STS's base URL when it is not `https://sts.<region>.amazonaws.com` (a local STS in
    /// tests); the signature covers its host.
    pub sts_endpoint: Option<String>,
}

impl TokenTarget {
    /// `https://sts.<region>.amazonaws.com`, or the configured endpoint, without a final `/`.
    pub fn sts_base(&self) -> String {
        match &self.sts_endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None => format!("https://sts.{}.amazonaws.com", self.region),
        }
    }
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the EKS token for cluster {cluster}: {detail}")]
pub struct TokenError {
    cluster: String,
    detail: String,
}

/// The presigned `GetCallerIdentity` URL, as of `now`.
pub fn presigned_url(
    target: &TokenTarget,
    credentials: &SessionCredentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let fail = |detail: String| TokenError {
        cluster: target.cluster_name.clone(),
        detail,
    };
    let url = format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        target.sts_base()
    );
    let identity = Credentials::new(
        &credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|token| token.expose_secret().to_owned()),
        None,
        "customer-role",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_EXPIRES);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&target.region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| fail(e.to_string()))?
        .into();
    let headers = [(CLUSTER_ID_HEADER, target.cluster_name.as_str())];
    let signable = SignableRequest::new("GET", &url, headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| fail(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| fail(e.to_string()))?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .body(())
        .map_err(|e| fail(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request.uri().to_string())
}

/// `k8s-aws-v1.` + base64url (no padding) of the presigned URL.
pub fn token(
    target: &TokenTarget,
    credentials: &SessionCredentials,
    now: SystemTime,
) -> Result<SecretString, TokenError> {
    let url = presigned_url(target, credentials, now)?;
    Ok(SecretString::from(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(url)
    )))
}

/// Tokens for one cluster, made on demand and reused until [`TokenSource::REFRESH_AFTER`].
pub struct TokenSource {
    target: TokenTarget,
    credentials: SessionCredentials,
    cached: Mutex<Option<(Instant, SecretString)>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// EKS honours a token ~15 minutes; a new one is made well before.
    pub const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);

    pub fn new(target: TokenTarget, credentials: SessionCredentials) -> Self {
        TokenSource {
            target,
            credentials,
            cached: Mutex::new(None),
        }
    }

    pub fn target(&self) -> &TokenTarget {
        &self.target
    }

    /// The current token: the cached one while younger than [`Self::REFRESH_AFTER`], else a
    /// new one. Signing is local work (no I/O), so this never blocks on the network.
    pub fn current(&self) -> Result<SecretString, TokenError> {
        self.current_at(Instant::now(), SystemTime::now())
    }

    fn current_at(&self, now: Instant, wall: SystemTime) -> Result<SecretString, TokenError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made, token)) = cached.as_ref()
            && now.saturating_duration_since(*made) < Self::REFRESH_AFTER
        {
            return Ok(token.clone());
        }
        let fresh = token(&self.target, &self.credentials, wall)?;
        *cached = Some((now, fresh.clone()));
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn credentials() -> SessionCredentials {
        SessionCredentials {
            access_key_id: "ASIAEXAMPLE000000000".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("session+token/==".into()),
        }
    }

    fn target() -> TokenTarget {
        TokenTarget {
            cluster_name: "beta9-env-x".into(),
            region: "eu-west-1".into(),
            sts_endpoint: None,
        }
    }

    /// 2026-01-02T03:04:05Z
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045)
    }

    fn query(url: &str) -> HashMap<String, String> {
        let (_, query) = url.split_once('?').unwrap();
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_token_is_the_prefix_and_the_presigned_url_in_base64url_without_padding() {
        let token = token(&target(), &credentials(), at()).unwrap();
        let token = token.expose_secret();
        let encoded = token.strip_prefix(TOKEN_PREFIX).expect(token);
        assert!(!encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'));
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap();
        assert_eq!(url, presigned_url(&target(), &credentials(), at()).unwrap());
    }

    /// The vector of pplu/AWSv4Signer's `t/03_eks.t`, taken from a token that
    /// heptio-authenticator-aws (aws-iam-authenticator's former name) made: long-term keys, the
    /// global STS endpoint, us-east-1.
    #[test]
    fn the_signature_matches_a_token_made_by_the_authenticator() {
        let target = TokenTarget {
            cluster_name: "scrumptious-wardrobe-1531912697".into(),
            region: "us-east-1".into(),
            sts_endpoint: Some("https://sts.amazonaws.com".into()),
        };
        let keys = SessionCredentials {
            access_key_id: "AKIAKIAKIAKIAKIAKIAK".into(),
            secret_access_key: "1111111111111111111111111111111111111111".into(),
            session_token: None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_532_357_827);
        let q = query(&presigned_url(&target, &keys, at).unwrap());
        assert_eq!(
            q["X-Amz-Signature"],
            "7a9107b9da0017ba3c84c6331d1aed6afe1de75da6c39ea786c01c31141052a8"
        );
        assert_eq!(
            q["X-Amz-Credential"],
            "AKIAKIAKIAKIAKIAKIAK%2F20180723%2Fus-east-1%2Fsts%2Faws4_request"
        );
        assert!(!q.contains_key("X-Amz-Security-Token"));
    }

    #[test]
    fn the_url_presigns_get_caller_identity_with_the_cluster_header_signed_in() {
        let url = presigned_url(&target(), &credentials(), at()).unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        let q = query(&url);
        assert_eq!(q["Action"], "GetCallerIdentity");
        assert_eq!(q["Version"], "2011-06-15");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(
            q["X-Amz-Credential"],
            "ASIAEXAMPLE000000000%2F20260102%2Feu-west-1%2Fsts%2Faws4_request"
        );
        assert_eq!(q["X-Amz-Date"], "20260102T030405Z");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert_eq!(q["X-Amz-SignedHeaders"], "host%3Bx-k8s-aws-id");
        assert_eq!(q["X-Amz-Security-Token"], "session%2Btoken%2F%3D%3D");
        assert_eq!(q["X-Amz-Signature"].len(), 64);
    }

    #[test]
    fn the_signature_depends_on_the_cluster_the_secret_and_the_time() {
        let signature = |target: &TokenTarget, credentials: &SessionCredentials, at| {
            query(&presigned_url(target, credentials, at).unwrap())["X-Amz-Signature"].clone()
        };
        let base = signature(&target(), &credentials(), at());
        assert_eq!(base, signature(&target(), &credentials(), at()));
        let mut other_cluster = target();
        other_cluster.cluster_name = "beta9-env-y".into();
        assert_ne!(base, signature(&other_cluster, &credentials(), at()));
        let mut other_secret = credentials();
        other_secret.secret_access_key = "another".into();
        assert_ne!(base, signature(&target(), &other_secret, at()));
        assert_ne!(
            base,
            signature(&target(), &credentials(), at() + Duration::from_secs(1))
        );
    }

    #[test]
    fn a_configured_sts_endpoint_is_where_the_url_points() {
        let mut local = target();
        local.sts_endpoint = Some("http://127.0.0.1:5000/".into());
        let url = presigned_url(&local, &credentials(), at()).unwrap();
        assert!(url.starts_with("http://127.0.0.1:5000/?Action="), "{url}");
    }

    #[test]
    fn the_source_reuses_a_token_until_it_is_ten_minutes_old() {
        let source = TokenSource::new(target(), credentials());
        let start = Instant::now();
        let first = source.current_at(start, at()).unwrap();
        let later = source
            .current_at(
                start + Duration::from_secs(9 * 60),
                at() + Duration::from_secs(540),
            )
            .unwrap();
        assert_eq!(first.expose_secret(), later.expose_secret());
        let renewed = source
            .current_at(
                start + Duration::from_secs(10 * 60),
                at() + Duration::from_secs(600),
            )
            .unwrap();
        assert_ne!(first.expose_secret(), renewed.expose_secret());
    }

    #[test]
    fn debug_forms_hide_the_secrets() {
        let shown = format!("{:?}", TokenSource::new(target(), credentials()));
        assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("session+token"));
    }
}
