//! Parsed credentials: an [`Email`] is trimmed, lowercased and plausible; a
//! [`NewPassword`] fits bcrypt's 72-byte input (we reject, never truncate).

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_BYTES: usize = 8;
/// bcrypt ignores input past 72 bytes; longer passwords are refused.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// A normalised email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims, lowercases and checks the shape `local@domain.tld`.
    pub fn parse(raw: &str) -> Result<Email, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an email address".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"@<>()[],;:\\\"".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email(email))
        } else {
            Err("must be an email address".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The form login compares against: the same normalisation as [`Email::parse`]
/// without the shape check (an odd address simply matches no account).
pub fn normalize_login_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A password acceptable for a new account.
#[derive(Clone)]
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<NewPassword, String> {
        match raw.len() {
            n if n < MIN_PASSWORD_BYTES => {
                Err(format!("must be at least {MIN_PASSWORD_BYTES} bytes"))
            }
            n if n > MAX_PASSWORD_BYTES => Err(format!(
                "must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)"
            )),
            _ => Ok(NewPassword(raw)),
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
    }

    #[test]
    fn implausible_emails_are_refused() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@exa mple.com",
            "ann@@example.com",
            "ann@-x.com",
            "ann@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn passwords_must_fit_bcrypt() {
        assert!(NewPassword::parse("1234567".into()).is_err());
        assert!(NewPassword::parse("12345678".into()).is_ok());
        assert!(NewPassword::parse("x".repeat(72)).is_ok());
        assert!(NewPassword::parse("x".repeat(73)).is_err());
        // 72 bytes, but fewer characters: bytes are what bcrypt counts.
        assert!(NewPassword::parse("é".repeat(37)).is_err());
    }
}
