//! Bearer tokens on the wire: a client or worker sends its token in every call's
//! `authorization` metadata; a server refuses a call without the token of its role.
//!
//! Invariant: a token is never printed, logged or echoed back; a refusal says only that a
//! valid token is needed.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(…)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// Sends `token`; `None` sends none. A token that cannot be a header value is an error
    /// that does not show it.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None)),
            Some(token) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "the token has characters a header cannot hold".to_owned())?;
                value.set_sensitive(true);
                Ok(Bearer(Some(value)))
            }
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Lets through only calls that carry `token`.
#[derive(Clone)]
pub struct Check {
    token: String,
    role: &'static str,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Check({})", self.role)
    }
}

impl Check {
    /// Calls of `role` (`worker`, `client`) must carry `token`.
    pub fn new(token: &str, role: &'static str) -> Self {
        Check {
            token: token.trim().to_owned(),
            role,
        }
    }
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for Check {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given) if same(given.as_bytes(), self.token.as_bytes()) => Ok(request),
            _ => Err(Status::unauthenticated(format!(
                "this server needs a valid {} token (--token-file, or $BRAID_TOKEN)",
                self.role
            ))),
        }
    }
}

/// A new random token: 32 bytes from the system's random source, as hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_passes_and_no_refusal_shows_a_token() {
        let mut check = Check::new("s3cret-token", "worker");
        let call = |token: Option<&str>| {
            let mut bearer = Bearer::new(token).unwrap();
            bearer.call(Request::new(())).unwrap()
        };
        assert!(check.call(call(Some("s3cret-token"))).is_ok());
        for wrong in [
            None,
            Some("s3cret-tokem"),
            Some("s3cret"),
            Some("s3cret-token-and-more"),
        ] {
            let refused = check.call(call(wrong)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(
                !refused.message().contains("s3cret"),
                "{}",
                refused.message()
            );
        }
        assert!(!format!("{:?}", Bearer::new(Some("s3cret-token")).unwrap()).contains("s3cret"));
        assert_eq!(new_token().unwrap().len(), 64);
    }
}
