//! The node's libp2p identity: an ed25519 key kept in a file as its 32-byte secret seed in
//! hex (64 characters and a newline), readable only by its owner, like `validator.key`.
//! The peer id other nodes dial (`/p2p/<peer id>`) is derived from it, so the file must
//! outlive restarts: a new key is a new peer id, and peers configured with the old one stop
//! recognising the node.

use std::path::Path;

use anyhow::{anyhow, Context};
use libp2p::identity::{ed25519, Keypair};
use libp2p::PeerId;

/// Largest key file read; a valid one is 65 bytes, so anything bigger is not a key.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Reads the key at `path`, or creates a new one there if the file does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::metadata(path) {
        Ok(_) => load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

/// Reads the key at `path`; the error names the file when it is missing or not a key.
pub fn load(path: &Path) -> anyhow::Result<Keypair> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read network key {}", path.display()))?
        .len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(invalid(path, &format!("the file is {size} bytes")));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read network key {}", path.display()))?;
    let mut seed = hex::decode(text.trim()).map_err(|e| invalid(path, &e.to_string()))?;
    if seed.len() != 32 {
        return Err(invalid(
            path,
            &format!("it holds {} bytes, not 32", seed.len()),
        ));
    }
    // `ed25519_from_bytes` zeroes the buffer it is given, so the seed does not linger.
    Keypair::ed25519_from_bytes(&mut seed).map_err(|e| invalid(path, &e.to_string()))
}

/// Creates a new random key and writes it to `path` (mode 0600); refuses to overwrite a
/// file that already exists.
pub fn generate(path: &Path) -> anyhow::Result<Keypair> {
    let secret = ed25519::SecretKey::generate();
    let seed = hex::encode(secret.as_ref());
    crate::cli::write_secret(path, &seed)?;
    Ok(Keypair::from(ed25519::Keypair::from(secret)))
}

/// The peer id of `key`: what follows `/p2p/` in the addresses other nodes dial.
pub fn peer_id(key: &Keypair) -> PeerId {
    key.public().to_peer_id()
}

fn invalid(path: &Path, why: &str) -> anyhow::Error {
    anyhow!(
        "{} is not a network key ({why}); it must hold 64 hex characters (an ed25519 seed). \
         Remove it to get a new identity (peers that list the old peer id must be updated)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn created_once_then_read_back_with_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65, "{text:?}");
        assert!(text.ends_with('\n'));
        assert!(text.trim().chars().all(|c| c.is_ascii_hexdigit()));
        let again = load_or_create(&path).unwrap();
        assert_eq!(peer_id(&first), peer_id(&again));
        assert_eq!(peer_id(&load(&path).unwrap()), peer_id(&first));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_seed_determines_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, format!("{}\n", "07".repeat(32))).unwrap();
        let expected = Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        assert_eq!(peer_id(&load(&path).unwrap()), peer_id(&expected));
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = generate(&path).unwrap();
        let err = generate(&path).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(peer_id(&load(&path).unwrap()), peer_id(&key));
        let other = generate(&dir.path().join("other.key")).unwrap();
        assert_ne!(peer_id(&other), peer_id(&key));
    }

    #[test]
    fn invalid_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("short.key", "abcd\n".to_string()),
            ("nothex.key", format!("{}\n", "zz".repeat(32))),
            ("long.key", "00".repeat(1000)),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = load_or_create(&path).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("not a network key"),
                "{err}"
            );
        }
        let err = load(&dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.key"), "{err}");
    }
}
