//! What a container's `image` names: a file on the server, or an image in
//! an OCI registry.
//!
//! The rule, decided from the string alone (so that every node and every
//! client reads an image the same way):
//!
//! - `file://PATH`, a path starting with `/` or `.`, or one ending in
//!   `.wasm` or `.wat` is a file;
//! - otherwise, a string whose first `/`-separated part names a registry
//!   host (it has a `.` or a `:`, or is `localhost`) is an OCI reference,
//!   `REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]` (no tag and no digest
//!   mean `:latest`, as docker says);
//! - anything else (`app`, `dist/app`) is a relative path.

use std::path::PathBuf;

/// A container's image, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file: relative to the server's working directory, or absolute.
    File(PathBuf),
    /// An image in a registry.
    Oci(oci_client::Reference),
}

/// A string that looks like an OCI reference but is not a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{image:?} is not a valid OCI reference ({why}); write REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST, or ./{image} for a file")]
pub struct ReferenceError {
    /// The image, as written.
    pub image: String,
    /// What is wrong with it.
    pub why: String,
}

impl ImageSource {
    /// Classifies `image`; an error says what is wrong with a string that
    /// looks like a reference but is not a valid one.
    pub fn parse(image: &str) -> Result<ImageSource, ReferenceError> {
        if let Some(path) = image.strip_prefix("file://") {
            return Ok(ImageSource::File(PathBuf::from(path)));
        }
        if !is_reference(image) {
            return Ok(ImageSource::File(PathBuf::from(image)));
        }
        image
            .parse::<oci_client::Reference>()
            .map(ImageSource::Oci)
            .map_err(|e| {
                let repository = image
                    .split_once('/')
                    .map_or("", |(_, r)| r.split(['@', ':']).next().unwrap_or(r));
                let why = if repository.chars().any(|c| c.is_ascii_uppercase()) {
                    "a repository name is lowercase".to_string()
                } else {
                    e.to_string()
                };
                ReferenceError {
                    image: image.to_string(),
                    why,
                }
            })
    }

    /// The reference, when the image is in a registry.
    pub fn reference(&self) -> Option<&oci_client::Reference> {
        match self {
            ImageSource::Oci(r) => Some(r),
            ImageSource::File(_) => None,
        }
    }
}

/// Whether `image` is read as an OCI reference (see the module's rule).
pub fn is_reference(image: &str) -> bool {
    if image.starts_with('/')
        || image.starts_with('.')
        || image.starts_with("file://")
        || image.ends_with(".wasm")
        || image.ends_with(".wat")
    {
        return false;
    }
    match image.split_once('/') {
        Some((host, rest)) => {
            !rest.is_empty() && (host.contains('.') || host.contains(':') || host == "localhost")
        }
        None => false,
    }
}

/// `sha256:` and 64 lowercase hex digits: a digest as registries write it.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(valid_hex)
}

/// 64 lowercase hex digits: a SHA-256 as skiff names blobs by it.
pub fn valid_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where an image path points: a path relative to the server's working
/// directory, an absolute path, or a `file://` URL.
pub fn image_path(image: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(image.strip_prefix("file://").unwrap_or(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_references_are_told_apart() {
        for file in [
            "hello.wasm",
            "guests/dist/hello-http.wasm",
            "/abs/app",
            "./localhost/app",
            "file://registry.io/app:v1",
            "app",
            "dist/app",
            "my.dir/app.wasm",
        ] {
            assert!(
                matches!(ImageSource::parse(file), Ok(ImageSource::File(_))),
                "{file}"
            );
        }
        for (image, registry, repo, tag) in [
            (
                "127.0.0.1:5000/hello:v1",
                "127.0.0.1:5000",
                "hello",
                Some("v1"),
            ),
            ("ghcr.io/acme/app:2.0", "ghcr.io", "acme/app", Some("2.0")),
            ("localhost/app", "localhost", "app", Some("latest")),
            (
                "registry.example/app",
                "registry.example",
                "app",
                Some("latest"),
            ),
        ] {
            let Ok(ImageSource::Oci(r)) = ImageSource::parse(image) else {
                panic!("{image} is a reference");
            };
            assert_eq!(r.registry(), registry, "{image}");
            assert_eq!(r.repository(), repo, "{image}");
            assert_eq!(r.tag(), tag, "{image}");
        }
        let d = format!("sha256:{}", "ab".repeat(32));
        let Ok(ImageSource::Oci(r)) = ImageSource::parse(&format!("ghcr.io/a/b@{d}")) else {
            panic!("a digest reference");
        };
        assert_eq!(r.digest(), Some(d.as_str()));
        let e = ImageSource::parse("ghcr.io/A/B:v1").unwrap_err();
        assert_eq!(e.why, "a repository name is lowercase");
        assert!(e.to_string().contains("not a valid OCI reference"), "{e}");
        assert!(valid_digest(&d));
        assert!(!valid_digest("sha256:AB"));
    }
}
