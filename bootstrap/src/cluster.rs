//! The in-process way into the new cluster: a `kube::Client` built directly from the
//! infrastructure's outputs — the endpoint, the CA bundle as the one root the TLS connection
//! trusts — and, on EKS, a bearer token from a [`TokenSource`], set on every request and
//! renewed as the source renews it. No kubeconfig file, no aws CLI, nothing on disk.
//!
//! TLS is kube's rustls connector with the ring provider (the workspace's one TLS stack).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use secrecy::ExposeSecret;
use tower::util::MapRequestLayer;

use crate::eks_token::{TokenError, TokenSource};

/// The client type, for callers that do not depend on `kube` themselves.
pub use kube::Client;

/// How requests to the cluster authenticate.
#[derive(Clone, Debug)]
pub enum ClusterAuth {
    /// None (the stand-in API in tests).
    Anonymous,
    /// An EKS token, renewed by the source.
    Eks(Arc<TokenSource>),
}

/// Why no client could be built; each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the cluster endpoint {endpoint:?} is not a URL: {detail}")]
    Endpoint { endpoint: String, detail: String },
    #[error("the cluster CA bundle of the outputs is unusable: {0}")]
    CertificateAuthority(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// A client of the cluster at `endpoint` (`https://…`; `http://` for a local stand-in),
/// trusting exactly the certificates of `ca_bundle` (base64 of PEM, as EKS reports it) when
/// given, authenticated as `auth` says. A plain-HTTP endpoint has no TLS to trust anything
/// for, so its bundle is not read.
pub fn client(
    endpoint: &str,
    ca_bundle: Option<&str>,
    auth: ClusterAuth,
) -> Result<kube::Client, AccessError> {
    let url = crate::kubeconfig::server_url(endpoint);
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| AccessError::Endpoint {
            endpoint: domain::text::truncated(endpoint, 200).to_owned(),
            detail: e.to_string(),
        })?;
    let tls = uri.scheme_str() != Some("http");
    let mut config = kube::Config::new(uri);
    if let Some(bundle) = ca_bundle.filter(|_| tls) {
        config.root_cert = Some(certificates(bundle)?);
    }
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| AccessError::Client(e.to_string()))?;
    Ok(match auth {
        ClusterAuth::Anonymous => builder.build(),
        ClusterAuth::Eks(source) => {
            // Made once now, so that a source that cannot sign fails here, by name.
            source.current()?;
            builder
                .with_layer(&MapRequestLayer::new(
                    move |mut request: http::Request<kube::client::Body>| {
                        if let Ok(token) = source.current()
                            && let Ok(mut value) =
                                HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                        {
                            value.set_sensitive(true);
                            request.headers_mut().insert(AUTHORIZATION, value);
                        }
                        request
                    },
                ))
                .build()
        }
    })
}

/// The DER certificates of a base64-encoded PEM bundle.
pub fn certificates(bundle_base64: &str) -> Result<Vec<Vec<u8>>, AccessError> {
    let bad = |what: &str| AccessError::CertificateAuthority(what.to_owned());
    let pem = STANDARD
        .decode(bundle_base64.trim())
        .map_err(|_| bad("not base64"))?;
    let pem = String::from_utf8(pem).map_err(|_| bad("not PEM text"))?;
    let mut certificates = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (line, body.as_mut()) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(text)) => {
                let der = STANDARD
                    .decode(text.as_bytes())
                    .map_err(|_| bad("a certificate block is not base64"))?;
                certificates.push(der);
                body = None;
            }
            (line, Some(text)) => text.push_str(line),
            _ => {}
        }
    }
    if body.is_some() {
        return Err(bad("a certificate block is not closed"));
    }
    if certificates.is_empty() {
        return Err(bad("it holds no PEM certificate"));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_gives_its_certificates_in_der() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAwQ=\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBQY=\n-----END CERTIFICATE-----\n";
        let bundle = STANDARD.encode(pem);
        assert_eq!(
            certificates(&bundle).unwrap(),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6]]
        );
    }

    #[test]
    fn a_bundle_without_a_certificate_is_refused_by_name() {
        for (bundle, says) in [
            ("%%%", "not base64"),
            ("Q0E=", "no PEM certificate"),
            (
                &*STANDARD.encode("-----BEGIN CERTIFICATE-----\nAAEC\n"),
                "not closed",
            ),
        ] {
            let error = certificates(bundle).unwrap_err().to_string();
            assert!(
                error.contains("cluster CA bundle") && error.contains(says),
                "{error}"
            );
        }
    }
}
