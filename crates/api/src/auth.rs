//! Admin authorisation: `Authorization: Bearer <token>`, compared in constant time.

use crate::problem::ApiError;
use actix_web::HttpRequest;
use actix_web::http::header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured admin token, kept only as its digest. Comparing digests
/// keeps the comparison constant-time whatever the length of the guess.
#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Sha256::digest(t.as_bytes()).into()))
    }

    /// 403 when no token is configured (admin is off, never open), 401
    /// without credentials, 403 with wrong ones.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return Err(ApiError::Forbidden(
                "admin endpoints are disabled: no DOWNWATCH_ADMIN_TOKEN is configured",
            ));
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized);
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("the admin token is not valid"))
        }
    }
}
