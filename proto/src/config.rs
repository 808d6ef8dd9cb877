//! The daemons' TOML config files are a contract with their users too: one parser for
//! all of them, so every daemon names the line and column of a bad key the same way.

/// Parses TOML text into `T`; the error names the line, column and what was wrong
/// (for an unknown key, its name).
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let mut message = e.message().to_owned();
        if let Some(span) = e.span() {
            let line = text[..span.start].matches('\n').count() + 1;
            let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
            message = format!("line {line}, column {column}: {message}");
        }
        message
    })
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        a: u32,
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let e = super::from_toml::<C>("a = 1\n  b = 2\n").unwrap_err();
        assert!(e.starts_with("line 2, column 3: unknown field `b`"), "{e}");
    }
}
