//! Bearer-token authentication for the OTLP receivers: a fleet token file, one token
//! per line.

use std::path::{Path, PathBuf};

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("token file {path} holds no token (only blank lines and comments)")]
    Empty { path: PathBuf },
}

/// The accepted bearer tokens.
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        write!(f, "Tokens({} tokens)", self.tokens.len())
    }
}

impl Tokens {
    /// Reads one token per non-empty line; `#` starts a comment line. Surrounding
    /// whitespace is trimmed; a token with whitespace inside is refused (it could not
    /// travel in an `authorization` header intact).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokens, TokensError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason| TokensError::Invalid {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            if line.chars().any(char::is_whitespace) {
                return Err(invalid("a token must not contain whitespace"));
            }
            if !line.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid("a token must be printable ASCII"));
            }
            tokens.push(line.as_bytes().into());
        }
        if tokens.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Tokens { tokens })
    }

    /// Tokens given directly (tests, embedding).
    pub fn from_list<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Tokens {
        Tokens {
            tokens: tokens
                .into_iter()
                .map(|t| t.as_ref().as_bytes().into())
                .collect(),
        }
    }

    /// True when `authorization` is `Bearer <token>` with a known token. Every known
    /// token is compared in full, so timing tells nothing about which bytes matched.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(bearer) else {
            return false;
        };
        let mut ok = false;
        for t in &self.tokens {
            ok |= constant_time_eq(t, presented);
        }
        ok
    }
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_with_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "# fleet\n\n  s3cret-a  \n#old\ns3cret-b\n").unwrap();
        let t = Tokens::from_file(&p).unwrap();
        assert!(t.check(Some(b"Bearer s3cret-a")));
        assert!(t.check(Some(b"bearer s3cret-b")));
        assert!(!t.check(Some(b"Bearer s3cret-c")));
        assert!(!t.check(Some(b"Bearer s3cret-")));
        assert!(!t.check(Some(b"Basic s3cret-a")));
        assert!(!t.check(Some(b"Bearer")));
        assert!(!t.check(None));
        assert_eq!(format!("{t:?}"), "Tokens(2 tokens)");
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "ok\nbad token\n").unwrap();
        let e = Tokens::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("tokens line 2") && e.contains("whitespace"),
            "{e}"
        );
        std::fs::write(&p, "# nothing\n\n").unwrap();
        assert!(
            Tokens::from_file(&p)
                .unwrap_err()
                .to_string()
                .contains("no token")
        );
        let e = Tokens::from_file(dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("reading token file"), "{e}");
    }
}
