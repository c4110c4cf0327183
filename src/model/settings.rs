//! Account settings as stored: a principal's own value of one setting
//! (`settings/PRINCIPAL/NAME`). Which settings exist and what they may be
//! is the API's ([`crate::api`]'s `account_settings`).

use serde::{Deserialize, Serialize};

/// The store key of `principal`'s own value of the setting `name`.
pub fn key(principal: &str, name: &str) -> String {
    format!("settings/{principal}/{name}")
}

/// One principal's value of one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingRecord {
    pub value: String,
}

impl SettingRecord {
    pub fn decode(bytes: &[u8]) -> Result<SettingRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a setting record serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_earlier_builds_wrote() {
        let r = SettingRecord::decode(br#"{"value":"enabled"}"#).unwrap();
        assert_eq!(r.value, "enabled");
        assert_eq!(r.encode(), br#"{"value":"enabled"}"#);
        assert_eq!(
            key("arn:aws:iam::1:root", "awsvpcTrunking"),
            "settings/arn:aws:iam::1:root/awsvpcTrunking"
        );
    }
}
