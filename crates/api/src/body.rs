//! Reading JSON bodies: media type, size, syntax, then field by field so
//! every error names the field it is about.

use crate::problem::ApiError;
use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web;
use downwatch_core::FieldError;
use serde_json::{Map, Value};

/// Largest request body accepted (SPEC: 4 KiB).
pub const MAX_BODY: usize = 4096;

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// 415 unless JSON, 413 over [`MAX_BODY`], 400 unless a JSON object.
pub async fn read_object(req: &HttpRequest, payload: web::Payload) -> Result<Fields, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY });
    }
    let bytes = match payload.to_bytes_limited(MAX_BODY).await {
        Err(_) => return Err(ApiError::PayloadTooLarge { limit: MAX_BODY }),
        Ok(Err(_)) => return Err(ApiError::bad_param("body", "the body could not be read")),
        Ok(Ok(b)) => b,
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Fields::new(map)),
        Ok(_) => Err(ApiError::bad_param("body", "must be a JSON object")),
        Err(e) => Err(ApiError::bad_param(
            "body",
            format!("malformed JSON at line {} column {}", e.line(), e.column()),
        )),
    }
}

/// The fields of a JSON object, taken one by one; what is left at the end
/// is unknown and refused, so a typo ("contry") is not silently ignored.
pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// An optional string: absent and `null` are `None`.
    pub fn string(&mut self, name: &str) -> Option<String> {
        self.nullable_string(name).flatten()
    }

    /// For patches: `None` absent, `Some(None)` explicitly `null`.
    pub fn nullable_string(&mut self, name: &str) -> Option<Option<String>> {
        match self.map.remove(name)? {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s)),
            _ => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    pub fn required_string(&mut self, name: &str) -> Option<String> {
        let present = self.map.contains_key(name);
        let v = self.string(name);
        if v.is_none() && !present {
            self.error(name, "is required");
        } else if v.is_none() && !self.errors.iter().any(|e| e.field == name) {
            self.error(name, "must not be null");
        }
        v
    }

    pub fn string_list(&mut self, name: &str) -> Option<Vec<String>> {
        match self.map.remove(name)? {
            Value::Null => None,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s),
                        _ => {
                            self.error(name, "must be a list of strings");
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.error(name, "must be a list of strings");
                None
            }
        }
    }

    /// Refuses the fields nobody took, then returns every error collected.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut unknown: Vec<String> = self.map.keys().cloned().collect();
        unknown.sort();
        for k in unknown {
            self.error(&k, "is not a known field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}
