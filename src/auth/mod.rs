//! Who may call the API: access keys from `skiff server --auth FILE`, each
//! with an IAM policy; requests signed with AWS Signature Version 4
//! ([`sigv4`]) and allowed by the signer's policy ([`policy`]). Nodes
//! sign their reads of each other with a secret they share ([`peer`]).
//!
//! The keys file:
//!
//! ```json
//! {"keys": [{"access_key_id": "AKIA...", "secret_access_key": "...",
//!            "name": "deployer",
//!            "policy": {"Version": "2012-10-17",
//!                       "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}}]}
//! ```

pub mod peer;
pub mod policy;
pub mod sigv4;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

pub use policy::{Decision, Policy};
pub use sigv4::AuthError;

/// One access key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Shown in AccessDenied messages as `user/NAME`.
    pub name: String,
    secret: String,
    policy: Policy,
}

/// The keys the API accepts.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_id: HashMap<String, Key>,
}

/// What is wrong with a keys or policy document: the field and what
/// would be right, in one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

impl From<&str> for DocumentError {
    fn from(m: &str) -> DocumentError {
        DocumentError(m.to_string())
    }
}

impl From<String> for DocumentError {
    fn from(m: String) -> DocumentError {
        DocumentError(m)
    }
}

/// Why a keys file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read.
    #[error("cannot read the keys file {}: {message}", path.display())]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// It is not JSON.
    #[error("the keys file {} is not valid JSON: {message}; expected {{\"keys\": [{{\"access_key_id\": ..., \"secret_access_key\": ..., \"policy\": {{...}}}}]}}", path.display())]
    NotJson {
        /// The file.
        path: std::path::PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Its document is wrong.
    #[error("the keys file {}: {error}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        error: DocumentError,
    },
}

/// A request a key's policy does not allow, in IAM's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("User: arn:aws:iam::{account}:user/{user} is not authorized to perform: {action} on resource: {resource} {}",
    if *explicit { "with an explicit deny in an identity-based policy".to_string() }
    else { format!("because no identity-based policy allows the {action} action") })]
pub struct Denied {
    /// The account.
    pub account: String,
    /// The key's name.
    pub user: String,
    /// The action.
    pub action: String,
    /// The first resource not allowed.
    pub resource: String,
    /// Whether a statement denies it (not only none allows it).
    pub explicit: bool,
}

/// The shortest secret accepted (AWS's are 40 characters).
pub const MIN_SECRET_LEN: usize = 16;

impl Keys {
    /// Reads a keys file; the error names the file, the key and the field.
    pub fn load(path: &Path) -> Result<Keys, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeysError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| KeysError::NotJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let keys = Keys::parse(&doc).map_err(|error| KeysError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the keys file {} can be read by other users; chmod 600 it",
                    path.display()
                );
            }
        }
        Ok(keys)
    }

    /// Reads the keys document.
    pub fn parse(doc: &Value) -> Result<Keys, DocumentError> {
        let items = doc
            .get("keys")
            .and_then(Value::as_array)
            .filter(|k| !k.is_empty())
            .ok_or(DocumentError::from(
                "\"keys\" must be a non-empty list of access keys",
            ))?;
        let mut by_id = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = |name: &str| -> Result<String, DocumentError> {
                item.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!("keys[{i}].{name} is required and must be a string").into()
                    })
            };
            let id = field("access_key_id")?;
            if !(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "keys[{i}].access_key_id {id:?} must be 16 to 128 letters and digits, such as AKIAIOSFODNN7EXAMPLE"
                ).into());
            }
            let secret = field("secret_access_key")?;
            if secret.len() < MIN_SECRET_LEN || secret.contains(char::is_whitespace) {
                return Err(format!(
                    "keys[{i}].secret_access_key must be at least {MIN_SECRET_LEN} characters without spaces"
                ).into());
            }
            let name = match item.get("name") {
                None => id.clone(),
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                Some(_) => return Err(format!("keys[{i}].name must be a non-empty string").into()),
            };
            let policy = item
                .get("policy")
                .ok_or_else(|| {
                    DocumentError(format!(
                        "keys[{i}].policy is required: an IAM policy document"
                    ))
                })
                .and_then(|p| {
                    Policy::parse(p).map_err(|e| DocumentError(format!("keys[{i}].policy: {e}")))
                })?;
            if let Some(k) = item.as_object().and_then(|o| {
                o.keys().find(|k| {
                    !matches!(
                        k.as_str(),
                        "access_key_id" | "secret_access_key" | "name" | "policy"
                    )
                })
            }) {
                return Err(format!(
                    "keys[{i}] has an unknown field {k:?}; expected access_key_id, secret_access_key, name and policy"
                ).into());
            }
            if by_id
                .insert(
                    id.clone(),
                    Key {
                        name,
                        secret,
                        policy,
                    },
                )
                .is_some()
            {
                return Err(format!("keys[{i}].access_key_id {id:?} is listed twice").into());
            }
        }
        Ok(Keys { by_id })
    }

    /// Verifies a request's signature; returns the key that signed it.
    pub fn authenticate(
        &self,
        req: &sigv4::Request,
        service: &str,
    ) -> Result<(&Key, sigv4::Credential), AuthError> {
        let c = sigv4::verify(
            req,
            |id| self.by_id.get(id).map(|k| k.secret.as_str()),
            sigv4::now_secs(),
            service,
        )?;
        let key = self
            .by_id
            .get(&c.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        Ok((key, c))
    }
}

impl Key {
    /// Whether the key's policy allows `action` on every one of
    /// `resources`; if not, AccessDenied's message for the first that is
    /// not, in IAM's words.
    pub fn authorize(
        &self,
        account: &str,
        action: &str,
        resources: &[String],
    ) -> Result<(), Denied> {
        for r in resources {
            let explicit = match self.policy.decide(action, r) {
                Decision::Allow => continue,
                Decision::ExplicitDeny => true,
                Decision::ImplicitDeny => false,
            };
            return Err(Denied {
                account: account.to_string(),
                user: self.name.clone(),
                action: action.to_string(),
                resource: r.clone(),
                explicit,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(id: &str, secret: &str) -> Value {
        json!({"access_key_id": id, "secret_access_key": secret,
               "policy": {"Statement": {"Effect": "Allow", "Action": "ecs:List*", "Resource": "*"}}})
    }

    #[test]
    fn keys_files_are_checked_field_by_field() {
        let good = key(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let keys = Keys::parse(&json!({"keys": [good.clone()]})).unwrap();
        let k = &keys.by_id["AKIAIOSFODNN7EXAMPLE"];
        assert!(k.authorize("0", "ecs:ListTasks", &["*".into()]).is_ok());
        let e = k
            .authorize(
                "0",
                "ecs:RunTask",
                &["arn:aws:ecs:r:0:cluster/default".into()],
            )
            .unwrap_err();
        assert!(!e.explicit);
        assert_eq!(
            e.to_string(),
            "User: arn:aws:iam::0:user/AKIAIOSFODNN7EXAMPLE is not authorized to perform: \
             ecs:RunTask on resource: arn:aws:ecs:r:0:cluster/default because no \
             identity-based policy allows the ecs:RunTask action"
        );

        for (doc, words) in [
            (json!({}), "\"keys\" must be"),
            (
                json!({"keys": [key("short", "wJalrXUtnFEMI/K7MDENG")]}),
                "keys[0].access_key_id",
            ),
            (
                json!({"keys": [key("AKIAIOSFODNN7EXAMPLE", "tooshort")]}),
                "keys[0].secret_access_key",
            ),
            (
                json!({"keys": [good.clone(), good.clone()]}),
                "keys[1].access_key_id \"AKIAIOSFODNN7EXAMPLE\" is listed twice",
            ),
            (
                json!({"keys": [{"access_key_id": "AKIAIOSFODNN7EXAMPLE",
                              "secret_access_key": "wJalrXUtnFEMI/K7MDENG"}]}),
                "keys[0].policy is required",
            ),
            (
                json!({"keys": [{"access_key_id": "AKIAIOSFODNN7EXAMPLE",
                              "secret_access_key": "wJalrXUtnFEMI/K7MDENG", "policy": {},
                              "secret": 1}]}),
                "keys[0].policy: Statement",
            ),
        ] {
            let e = Keys::parse(&doc).unwrap_err().to_string();
            assert!(e.contains(words), "{doc}: {e}");
        }
    }
}
