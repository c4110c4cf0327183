//! The scheduler's leader claim: one key whose value is the leading
//! node's name, kept under that node's lease (so that it ends with the
//! node), and whose revision fences every write the leader makes.

/// The store key of the claim.
pub const KEY: &str = "leader";

/// The claim's stored value for `node`.
pub fn encode(node: &str) -> Vec<u8> {
    node.as_bytes().to_vec()
}

/// Whether a stored claim is `node`'s.
pub fn held_by(value: &[u8], node: &str) -> bool {
    value == node.as_bytes()
}
