//! What ACME managers keep in the store: the certificates any node was
//! issued, the answers to HTTP-01 challenges of orders in progress (the
//! CA may ask any node), and which node is ordering which name.

use serde::{Deserialize, Serialize};

/// The store prefix of issued certificates (`acme/certs/NAME`: a
/// [`CertRecord`]).
pub const CERTS: &str = "acme/certs/";

/// The store prefix of the HTTP-01 answers of orders in progress
/// (`acme/challenges/TOKEN`: the key authorization's bytes).
pub const CHALLENGES: &str = "acme/challenges/";

/// The store prefix of names being ordered (`acme/orders/NAME`: an
/// [`OrderClaim`]).
pub const ORDERS: &str = "acme/orders/";

/// The store key of the certificate issued for `name`.
pub fn cert_key(name: &str) -> String {
    format!("{CERTS}{name}")
}

/// The store key of the answer to the challenge `token`.
pub fn challenge_key(token: &str) -> String {
    format!("{CHALLENGES}{token}")
}

/// The store key of the claim on ordering `name`.
pub fn order_key(name: &str) -> String {
    format!("{ORDERS}{name}")
}

/// A certificate as stored: the PEM chain and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub chain: String,
    pub key: String,
}

impl CertRecord {
    pub fn decode(bytes: &[u8]) -> Result<CertRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a certificate record serializes")
    }
}

/// A node's claim on ordering a name: kept under the node's lease, and
/// void after `until` (seconds since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderClaim {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub until: f64,
}

impl OrderClaim {
    /// The claim a record holds; one that cannot be read holds nothing
    /// (it is void, as if it had lapsed).
    pub fn decode(bytes: &[u8]) -> OrderClaim {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an order claim serializes")
    }

    /// Whether the claim still holds at `now`.
    pub fn holds(&self, now: f64) -> bool {
        self.until > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_what_earlier_builds_wrote() {
        let c = CertRecord::decode(br#"{"chain":"C","key":"K"}"#).unwrap();
        assert_eq!((c.chain.as_str(), c.key.as_str()), ("C", "K"));
        assert_eq!(CertRecord::decode(&c.encode()).unwrap(), c);
        let o = OrderClaim::decode(br#"{"node":"n1","until":100.5}"#);
        assert_eq!(o.node, "n1");
        assert!(o.holds(100.0) && !o.holds(100.5));
        assert_eq!(OrderClaim::decode(&o.encode()), o);
        assert!(!OrderClaim::decode(b"garbage").holds(0.0));
        assert_eq!(cert_key("a.example"), "acme/certs/a.example");
    }
}
