//! Secrets and where they come from.
//!
//! A secret (consumer secret, password, security token, private key, webhook key, SASL
//! password) is never written inline in a config file and never passed as a flag. The
//! config names where it lives, an environment variable or a file (a mounted Kubernetes
//! Secret), and [`SecretRef::resolve`] reads it into a [`SecretString`], whose `Debug`
//! prints a placeholder. Code exposes the value only on the line that hands it to an HTTP
//! or Kafka client.

use std::path::PathBuf;

use serde::Deserialize;

pub use secrecy::{ExposeSecret, SecretString};

/// Where a secret lives: `{ env = "NAME" }` or `{ file = "/path" }` in TOML.
///
/// Deserialising never echoes what it was given: a secret written inline by mistake
/// must not come back in the error message that refuses it.
#[derive(Clone, Debug)]
pub enum SecretRef {
    /// The name of an environment variable holding the secret.
    Env(String),
    /// A file holding the secret; one trailing newline is ignored.
    File(PathBuf),
    /// A value already in memory, for programs that build their config in code (the demo,
    /// tests). Config files cannot express it.
    Inline(SecretString),
}

/// What every refusal of a secret's config says.
const SECRET_SHAPE: &str = "a secret is configured as { env = \"VARIABLE\" } or \
    { file = \"/path/to/file\" }, never as a value in the configuration";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

impl<'de> serde::de::Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SECRET_SHAPE)
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<SecretRef, M::Error> {
        use serde::de::Error;

        let Some(key) = map.next_key::<String>()? else {
            return Err(M::Error::custom(SECRET_SHAPE));
        };
        let value: String = map
            .next_value()
            .map_err(|_| M::Error::custom(SECRET_SHAPE))?;
        if map.next_key::<String>()?.is_some() {
            return Err(M::Error::custom(format!(
                "{SECRET_SHAPE} (exactly one of env, file)"
            )));
        }
        match key.as_str() {
            "env" => Ok(SecretRef::Env(value)),
            "file" => Ok(SecretRef::File(value.into())),
            _ => Err(M::Error::custom(SECRET_SHAPE)),
        }
    }

    // Every other shape is refused without repeating it: it may be the secret itself.
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
        Err(E::custom(SECRET_SHAPE))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
        Err(E::custom(SECRET_SHAPE))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
        Err(E::custom(SECRET_SHAPE))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
        Err(E::custom(SECRET_SHAPE))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
        Err(E::custom(SECRET_SHAPE))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
        Err(serde::de::Error::custom(SECRET_SHAPE))
    }
}

/// A secret could not be read. The message names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "environment variable {name} is not set or empty; \
         set it to the secret's value, or point the config at a file instead"
    )]
    MissingEnv { name: String },
    #[error("cannot read secret file {path}: {source}; check that the Secret is mounted there")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {path} is empty; check the Secret's key")]
    EmptyFile { path: PathBuf },
}

impl SecretRef {
    /// Reads the secret from its source.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
                _ => Err(SecretError::MissingEnv { name: name.clone() }),
            },
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let value = text
                    .strip_suffix('\n')
                    .map(|s| s.strip_suffix('\r').unwrap_or(s))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(SecretError::EmptyFile { path: path.clone() });
                }
                Ok(SecretString::from(value.to_owned()))
            }
            SecretRef::Inline(secret) => Ok(secret.clone()),
        }
    }

    /// Where the secret lives, for messages: `env SF_PASSWORD` or `file /run/secrets/x`.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env {name}"),
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Inline(_) => "inline value".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn file_secret_drops_one_trailing_newline_only() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "p@ss word\n\n").unwrap();
        let secret = SecretRef::File(file.path().into()).resolve().unwrap();
        assert_eq!(secret.expose_secret(), "p@ss word\n");
    }

    #[test]
    fn debug_of_a_resolved_secret_hides_the_value() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "hunter2-distinctive").unwrap();
        let secret = SecretRef::File(file.path().into()).resolve().unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn missing_env_names_the_variable_not_a_value() {
        let err = SecretRef::Env("SEATWATCH_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("SEATWATCH_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn a_secret_written_inline_is_refused_without_being_repeated() {
        for text in [
            r#""hunter2-inline""#,
            "12345678",
            r#"{"value": "hunter2-inline"}"#,
        ] {
            let err = serde_json::from_str::<SecretRef>(text)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
            assert!(err.contains("{ env = "), "{err}");
        }
        let both = r#"{"env": "A", "file": "/b"}"#;
        assert!(serde_json::from_str::<SecretRef>(both).is_err());
    }

    #[test]
    fn inline_secrets_cannot_come_from_a_config_file() {
        let err = serde_json::from_str::<SecretRef>(r#"{"inline": "x"}"#);
        assert!(err.is_err());
        let ok: SecretRef = serde_json::from_str(r#"{"env": "X"}"#).unwrap();
        assert_eq!(ok.describe(), "env X");
    }

    #[test]
    fn empty_file_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = SecretRef::File(file.path().into()).resolve().unwrap_err();
        assert!(matches!(err, SecretError::EmptyFile { .. }));
    }
}
