//! Queue names and the segment file names derived from them.
//!
//! A name is 1-200 characters of `[A-Za-z0-9_.-]` and does not start with `.`, so it can never
//! leave the queue folder or hide as a dot file. The file is `sq-<uid>-<name>`: two users never
//! share a file by accident, and `list_queues` finds a user's queues by prefix.

use crate::error::{QueueError, Result};

pub const MAX_NAME_LEN: usize = 200;
const FILE_PREFIX: &str = "sq-";

pub fn validate(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(QueueError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a name needs at least one character");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name has at most 200 characters");
    }
    if name.starts_with('.') {
        return bad("a name may not start with '.'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use letters, digits, '_', '.', '-')"
        ));
    }
    Ok(())
}

/// The segment file name of queue `name` owned by `uid` (the name must be valid).
pub fn file_name(uid: u32, name: &str) -> String {
    format!("{FILE_PREFIX}{uid}-{name}")
}

/// The queue name in a segment file name of `uid`, if the file name has that shape.
pub fn parse_file_name(uid: u32, file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix(FILE_PREFIX)?;
    let rest = rest.strip_prefix(&uid.to_string())?;
    let name = rest.strip_prefix('-')?;
    validate(name).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("a").is_ok());
        assert!(validate("my_queue-1.x").is_ok());
        assert!(validate(&"x".repeat(200)).is_ok());
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(201),
        ] {
            assert!(
                matches!(validate(bad), Err(QueueError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_names_round_trip() {
        let f = file_name(1000, "q.1");
        assert_eq!(f, "sq-1000-q.1");
        assert_eq!(parse_file_name(1000, &f), Some("q.1"));
        assert_eq!(parse_file_name(1001, &f), None);
        assert_eq!(parse_file_name(1000, "sq-1000-.x"), None);
        assert_eq!(parse_file_name(1000, "other"), None);
    }
}
