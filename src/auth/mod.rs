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

/// The shortest secret accepted (AWS's are 40 characters).
pub const MIN_SECRET_LEN: usize = 16;

impl Keys {
    /// Reads a keys file; the error names the file, the key and the field.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the keys file {}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "the keys file {} is not valid JSON: {e}; expected {{\"keys\": [{{\"access_key_id\": ..., \"secret_access_key\": ..., \"policy\": {{...}}}}]}}",
                path.display()
            )
        })?;
        let keys =
            Keys::parse(&doc).map_err(|e| format!("the keys file {}: {e}", path.display()))?;
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
    pub fn parse(doc: &Value) -> Result<Keys, String> {
        let items = doc
            .get("keys")
            .and_then(Value::as_array)
            .filter(|k| !k.is_empty())
            .ok_or("\"keys\" must be a non-empty list of access keys")?;
        let mut by_id = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = |name: &str| -> Result<String, String> {
                item.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or(format!("keys[{i}].{name} is required and must be a string"))
            };
            let id = field("access_key_id")?;
            if !(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "keys[{i}].access_key_id {id:?} must be 16 to 128 letters and digits, such as AKIAIOSFODNN7EXAMPLE"
                ));
            }
            let secret = field("secret_access_key")?;
            if secret.len() < MIN_SECRET_LEN || secret.contains(char::is_whitespace) {
                return Err(format!(
                    "keys[{i}].secret_access_key must be at least {MIN_SECRET_LEN} characters without spaces"
                ));
            }
            let name = match item.get("name") {
                None => id.clone(),
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                Some(_) => return Err(format!("keys[{i}].name must be a non-empty string")),
            };
            let policy = item
                .get("policy")
                .ok_or(format!(
                    "keys[{i}].policy is required: an IAM policy document"
                ))
                .and_then(|p| Policy::parse(p).map_err(|e| format!("keys[{i}].policy: {e}")))?;
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
                ));
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
                return Err(format!("keys[{i}].access_key_id {id:?} is listed twice"));
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
    ) -> Result<(), String> {
        for r in resources {
            let why = match self.policy.decide(action, r) {
                Decision::Allow => continue,
                Decision::ExplicitDeny => {
                    "with an explicit deny in an identity-based policy".to_string()
                }
                Decision::ImplicitDeny => {
                    format!("because no identity-based policy allows the {action} action")
                }
            };
            return Err(format!(
                "User: arn:aws:iam::{account}:user/{} is not authorized to perform: {action} on resource: {r} {why}",
                self.name
            ));
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
        assert_eq!(
            e,
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
            let e = Keys::parse(&doc).unwrap_err();
            assert!(e.contains(words), "{doc}: {e}");
        }
    }
}
