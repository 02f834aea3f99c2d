//! Names: `@user` and `~server`.
//!
//! Syntax (the same on every network, so that no two clients can disagree on
//! what a name is): a sigil (`@` for users, `~` for servers), then 1 to
//! [`MAX_NAME_LEN`]` - 1` characters from `a-z 0-9 _ -`, the first of which
//! is a letter or digit. No upper case, no Unicode, no dots: a name is
//! exactly its bytes. Each network may set a lower length limit in its
//! [`crate::Params`].

use core::fmt;

use bincode::{Decode, Encode};

use crate::encoding::{decode_bytes, decode_len, invalid};
use crate::hash::{Hash, hash_tagged, tag};

/// Longest possible name in bytes, sigil included (protocol-wide cap).
pub const MAX_NAME_LEN: usize = 32;

/// What kind of thing a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// `@name`: a user.
    User,
    /// `~name`: a chat server.
    Server,
}

/// A syntactically valid name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// A string that is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty input or only a sigil.
    #[error("name is empty")]
    Empty,
    /// Does not start with `@` or `~`.
    #[error("name must start with '@' (user) or '~' (server)")]
    NoSigil,
    /// Too long.
    #[error("name is {len} bytes; the limit is {max}")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A character outside `a-z 0-9 _ -`.
    #[error("invalid character {0:?} in name (allowed: a-z 0-9 _ -)")]
    BadChar(char),
    /// First character after the sigil is `_` or `-`.
    #[error("name must start with a letter or digit after the sigil")]
    BadStart,
}

impl Name {
    /// Parse and check syntax.
    pub fn new(s: &str) -> Result<Self, NameError> {
        let mut chars = s.chars();
        match chars.next() {
            None => return Err(NameError::Empty),
            Some('@') | Some('~') => {}
            Some(_) => return Err(NameError::NoSigil),
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                len: s.len(),
                max: MAX_NAME_LEN,
            });
        }
        let body = chars.as_str();
        let first = body.chars().next().ok_or(NameError::Empty)?;
        if first == '_' || first == '-' {
            return Err(NameError::BadStart);
        }
        if let Some(c) = body
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        Ok(Name(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// User or server.
    pub fn kind(&self) -> NameKind {
        if self.0.starts_with('@') {
            NameKind::User
        } else {
            NameKind::Server
        }
    }

    /// The key of this name in the state tree: `H(STATE_KEY, name bytes)`.
    pub fn key_hash(&self) -> Hash {
        hash_tagged(tag::STATE_KEY, self.0.as_bytes())
    }
}

impl core::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::new(s)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.0)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Encode for Name {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.as_bytes().encode(e)
    }
}

impl<C> Decode<C> for Name {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let len = decode_len(d, MAX_NAME_LEN, "name")?;
        let bytes = decode_bytes(d, len)?;
        let s = String::from_utf8(bytes).map_err(|_| invalid("name is not UTF-8".into()))?;
        Name::new(&s).map_err(|e| invalid(e.to_string()))
    }
}
bincode::impl_borrow_decode!(Name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in [
            "@alice",
            "~lobby",
            "@a",
            "@0day",
            "@a_b-c9",
            &format!("@{}", "a".repeat(31)),
        ] {
            assert!(Name::new(n).is_ok(), "{n}");
        }
        assert_eq!(Name::new("@bob").map(|n| n.kind()), Ok(NameKind::User));
        assert_eq!(Name::new("~s1").map(|n| n.kind()), Ok(NameKind::Server));
    }

    #[test]
    fn invalid_names() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("@"), Err(NameError::Empty));
        assert_eq!(Name::new("alice"), Err(NameError::NoSigil));
        assert_eq!(Name::new("@Alice"), Err(NameError::BadChar('A')));
        assert_eq!(Name::new("@al.ce"), Err(NameError::BadChar('.')));
        assert_eq!(Name::new("@ålice"), Err(NameError::BadChar('å')));
        assert_eq!(Name::new("@_x"), Err(NameError::BadStart));
        assert!(matches!(
            Name::new(&format!("@{}", "a".repeat(32))),
            Err(NameError::TooLong { len: 33, .. })
        ));
    }

    #[test]
    fn decode_checks_syntax() {
        let good = crate::encoding::encode(&Name::new("@alice").expect("valid"));
        assert!(crate::encoding::decode::<Name>(&good).is_ok());
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = b'E';
        assert!(crate::encoding::decode::<Name>(&bad).is_err());
    }
}
