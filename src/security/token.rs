//! Bearer tokens: 256 random bits, shown once to the operator; masters keep only their SHA-256
//! (`[[auth.tokens]]` in the master config), so a leaked config grants nothing. A token has a
//! role and a name; an executor token's name is the executor id it may act as.
//!
//! The hash is a plain SHA-256, not a slow password hash: a token is 256 random bits, not a
//! human secret, so there is nothing to brute-force, and it is checked on every request.

use std::collections::HashMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{valid_name, Identity, Role};

/// Every token starts with this, so a token is recognisable in a leak scanner and in a header.
pub const PREFIX: &str = "triad_";

/// A token as a master's config lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (for logs; for an executor token, the executor id it may act as).
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// A new token for `role` and `name`: the secret (to hand to its holder) and its config entry.
pub fn create(role: Role, name: &str) -> Result<(String, TokenEntry), String> {
    if role == Role::Master {
        return Err("masters authenticate with certificates only, not tokens".into());
    }
    if !valid_name(name) {
        return Err(format!("bad token name {name:?}: use a DNS label ([a-z0-9-], 1-63 bytes)"));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    let entry = TokenEntry { name: name.to_string(), role, sha256: hash(&secret) };
    Ok((secret, entry))
}

/// The hex SHA-256 of a token.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The tokens a master accepts, by hash.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Identity>,
}

impl Tokens {
    /// Checks and indexes the configured entries.
    pub fn new(entries: &[TokenEntry]) -> Result<Tokens, String> {
        let mut by_hash = HashMap::new();
        for e in entries {
            if e.role == Role::Master {
                return Err(format!("token {:?}: masters authenticate with certificates", e.name));
            }
            if !valid_name(&e.name) {
                return Err(format!("token name {:?} is not a DNS label", e.name));
            }
            let h: [u8; 32] = hex::decode(&e.sha256)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| format!("token {:?}: sha256 is not 64 hex digits", e.name))?;
            if by_hash.insert(h, Identity::principal(e.role, &e.name)).is_some() {
                return Err(format!("token {:?} is listed twice", e.name));
            }
        }
        Ok(Tokens { by_hash })
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Who holds `secret`, if it is a configured token.
    pub fn identify(&self, secret: &str) -> Option<&Identity> {
        let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.by_hash.get(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_identifies_its_holder_and_nothing_else_does() {
        let (secret, entry) = create(Role::Executor, "exec-1").unwrap();
        assert!(secret.starts_with(PREFIX) && secret.len() == PREFIX.len() + 64);
        let tokens = Tokens::new(std::slice::from_ref(&entry)).unwrap();
        assert_eq!(tokens.identify(&secret), Some(&Identity::principal(Role::Executor, "exec-1")));
        assert_eq!(tokens.identify(&entry.sha256), None, "the hash is not the token");
        assert_eq!(tokens.identify(&secret[..secret.len() - 1]), None);
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(create(Role::Master, "m1").is_err());
        assert!(create(Role::Client, "Not A Label").is_err());
        let (_, mut e) = create(Role::Client, "ci").unwrap();
        assert!(Tokens::new(&[e.clone(), e.clone()]).is_err());
        e.sha256.pop();
        assert!(Tokens::new(&[e]).is_err());
    }
}
