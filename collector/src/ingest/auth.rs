//! Bearer-token authentication for the OTLP receivers: a token file, one token per
//! line. A bare `TOKEN` is a fleet token (any node may send with it); a line
//! `node=NAME TOKEN` is a per-node token, with which only data whose resource says
//! `host.name = NAME` is accepted, so one stolen node token cannot speak for the fleet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Who a request comes from, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No tokens configured, or a fleet token: data for any node.
    Fleet,
    /// A per-node token: data for this node only.
    Node(Arc<str>),
}

/// One accepted token and the node it is bound to, if any.
type Entry = (Box<[u8]>, Option<Arc<str>>);

/// The accepted bearer tokens.
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        write!(f, "Tokens({} tokens)", self.tokens.len())
    }
}

/// The lines of a token file that carry something, with their 0-based index: trimmed,
/// without blank lines and `#` comment lines. Shared by the OTLP and the API token
/// files.
pub(crate) fn token_file_lines(path: &Path) -> std::io::Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.to_owned()))
        .collect())
}

impl Tokens {
    /// Reads one token per non-empty line; `#` starts a comment line. Surrounding
    /// whitespace is trimmed; a token with whitespace inside is refused (it could not
    /// travel in an `authorization` header intact).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokens, TokensError> {
        let path = path.as_ref();
        let lines = token_file_lines(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut tokens = Vec::new();
        for (i, line) in lines.iter().map(|(i, l)| (*i, l.as_str())) {
            let invalid = |reason| TokensError::Invalid {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let (node, token) = match line.strip_prefix("node=") {
                Some(rest) => match rest.split_once(char::is_whitespace) {
                    Some((node, token)) if !node.is_empty() => (Some(node.into()), token.trim()),
                    _ => return Err(invalid("expected `node=NAME TOKEN`")),
                },
                None => (None, line),
            };
            if token.chars().any(char::is_whitespace) {
                return Err(invalid("a token must not contain whitespace"));
            }
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid("a token must be printable ASCII"));
            }
            tokens.push((token.as_bytes().into(), node));
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
                .map(|t| (t.as_ref().as_bytes().into(), None))
                .collect(),
        }
    }

    /// True when `authorization` is `Bearer <token>` with a known token.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        self.principal(authorization).is_some()
    }

    /// Who `authorization` (`Bearer <token>`) speaks for; `None` for no or an unknown
    /// token. Every known token is compared in full, so timing tells nothing about
    /// which bytes matched.
    pub fn principal(&self, authorization: Option<&[u8]>) -> Option<Principal> {
        let presented = authorization.and_then(bearer)?;
        let mut found = None;
        for (t, node) in &self.tokens {
            if constant_time_eq(t, presented) && found.is_none() {
                found = Some(match node {
                    Some(n) => Principal::Node(Arc::clone(n)),
                    None => Principal::Fleet,
                });
            }
        }
        found
    }
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 7235).
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    fn per_node_tokens_bind_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "fleet-1\nnode=gpu-07 n7-secret\n").unwrap();
        let t = Tokens::from_file(&p).unwrap();
        assert_eq!(t.principal(Some(b"Bearer fleet-1")), Some(Principal::Fleet));
        assert_eq!(
            t.principal(Some(b"Bearer n7-secret")),
            Some(Principal::Node("gpu-07".into()))
        );
        assert_eq!(t.principal(Some(b"Bearer gpu-07")), None);
        std::fs::write(&p, "node=gpu-07\n").unwrap();
        let e = Tokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("node=NAME TOKEN"), "{e}");
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
