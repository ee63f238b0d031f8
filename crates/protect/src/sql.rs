//! Statement classification the detections need without a parser: whether a statement changes
//! privileges or accounts.

/// The privilege-changing command a statement starts with (after blanks and comments), if any:
/// `GRANT`, `REVOKE`, `ALTER ROLE`, `ALTER USER`, `CREATE ROLE`, `CREATE USER`, `DROP ROLE`,
/// `DROP USER`, `RENAME USER`, `SET PASSWORD`, `ALTER DEFAULT PRIVILEGES`.
pub fn privilege_change(sql: &str) -> Option<&'static str> {
    // Runs on every audited statement: no allocation, one pass over the first words.
    let mut words = Words { rest: sql };
    let first = words.next()?;
    let is = |w: &str, k: &str| w.eq_ignore_ascii_case(k);
    if is(first, "GRANT") {
        return Some("GRANT");
    }
    if is(first, "REVOKE") {
        return Some("REVOKE");
    }
    if !["ALTER", "CREATE", "DROP", "RENAME", "SET"]
        .iter()
        .any(|k| is(first, k))
    {
        return None;
    }
    let second = words.next()?;
    const PAIRS: [(&str, &str, &str); 9] = [
        ("ALTER", "ROLE", "ALTER ROLE"),
        ("ALTER", "USER", "ALTER USER"),
        ("ALTER", "DEFAULT", "ALTER DEFAULT PRIVILEGES"),
        ("CREATE", "ROLE", "CREATE ROLE"),
        ("CREATE", "USER", "CREATE USER"),
        ("DROP", "ROLE", "DROP ROLE"),
        ("DROP", "USER", "DROP USER"),
        ("RENAME", "USER", "RENAME USER"),
        ("SET", "PASSWORD", "SET PASSWORD"),
    ];
    PAIRS
        .iter()
        .find(|(a, b, _)| is(first, a) && is(second, b))
        .map(|(_, _, name)| *name)
}

struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    /// The next word, skipping blanks and `--`, `#` and `/* */` comments.
    fn next(&mut self) -> Option<&'a str> {
        loop {
            self.rest = self.rest.trim_start();
            if let Some(r) = self
                .rest
                .strip_prefix("--")
                .or_else(|| self.rest.strip_prefix('#'))
            {
                self.rest = r.split_once('\n').map_or("", |(_, after)| after);
            } else if let Some(r) = self.rest.strip_prefix("/*") {
                self.rest = r.split_once("*/").map_or("", |(_, after)| after);
            } else {
                break;
            }
        }
        let end = self
            .rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let word = &self.rest[..end];
        self.rest = &self.rest[end..];
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::privilege_change;

    #[test]
    fn recognises_privilege_changes_only() {
        assert_eq!(privilege_change("GRANT ALL ON t TO x"), Some("GRANT"));
        assert_eq!(
            privilege_change("  /* c */ -- x\n alter   role app superuser"),
            Some("ALTER ROLE")
        );
        assert_eq!(privilege_change("create user 'a'@'%'"), Some("CREATE USER"));
        assert_eq!(
            privilege_change("SET PASSWORD FOR x = 'y'"),
            Some("SET PASSWORD")
        );
        assert_eq!(privilege_change("SELECT 'GRANT'"), None);
        assert_eq!(privilege_change("ALTER TABLE t ADD c int"), None);
        assert_eq!(privilege_change("SET search_path = x"), None);
        assert_eq!(privilege_change(""), None);
        assert_eq!(privilege_change("/* unterminated"), None);
    }
}
