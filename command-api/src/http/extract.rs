//! axum's extractors with their rejections turned into [`AppError`], so a bad query string or
//! path answers the JSON error body like every other error.

use super::error::AppError;
use axum::extract::FromRequestParts;

/// `axum::extract::Query`, rejecting with 400 and the error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, rejecting with the error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);
